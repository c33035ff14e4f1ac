"""Vendor LiteRT.js into textgen/export/web_runtime/, from npm, at a pinned version.

    python scripts/refresh_web_runtime.py [VERSION]     # default: the version VENDOR.json pins

`@litertjs/core` (Google's WebAssembly build of LiteRT, Apache-2.0) and its `@litertjs/wasm-utils`
are bundled by esbuild into one ES module, `litert.js`, so that a page needs no import map and no
CDN; beside it the WebAssembly build for browsers with relaxed SIMD and the compat build for the
others (LiteRT.js picks one at load time). VENDOR.json records the version and each file's
sha256; LICENSE is the Apache-2.0 text (from the LiteRT Python package, the same project).
Needs Node.js and npm (the npm registry), run from the repository's root.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "textgen" / "export" / "web_runtime"
WASM_BUILDS = ("litert_wasm_internal", "litert_wasm_compat_internal")
ESBUILD = "esbuild@0.28.2"


def main() -> None:
    vendor = TARGET / "VENDOR.json"
    pinned = json.loads(vendor.read_text())["version"] if vendor.exists() else None
    version = sys.argv[1] if len(sys.argv) > 1 else pinned
    if version is None:
        sys.exit("give the @litertjs/core version to vendor")
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        subprocess.run(["npm", "init", "-y"], cwd=work, check=True, capture_output=True)
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", f"@litertjs/core@{version}", ESBUILD],
                       cwd=work, check=True)
        package = work / "node_modules" / "@litertjs" / "core"
        TARGET.mkdir(parents=True, exist_ok=True)
        for old in TARGET.iterdir():
            if old.name != "LICENSE":
                old.unlink()
        subprocess.run(["npx", "esbuild", str(package / "dist" / "index.js"), "--bundle", "--format=esm",
                        "--platform=browser", "--legal-comments=inline", f"--outfile={TARGET / 'litert.js'}"],
                       cwd=work, check=True)
        for build in WASM_BUILDS:
            for suffix in (".js", ".wasm"):
                shutil.copyfile(package / "wasm" / f"{build}{suffix}", TARGET / f"{build}{suffix}")
        wasm_utils = json.loads((work / "node_modules/@litertjs/wasm-utils/package.json").read_text())
    licences = Path(sys.prefix).glob("lib/python*/site-packages/ai_edge_litert-*.dist-info/licenses/LICENSE")
    licence = next(licences, None)
    if licence is not None:
        shutil.copyfile(licence, TARGET / "LICENSE")
    files = {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(TARGET.iterdir())
             if path.name not in ("VENDOR.json", "LICENSE")}
    (TARGET / "VENDOR.json").write_text(json.dumps({
        "package": "@litertjs/core", "version": version, "wasm_utils_version": wasm_utils["version"],
        "license": "Apache-2.0", "source": "https://www.npmjs.com/package/@litertjs/core",
        "bundled_by": ESBUILD, "files": files}, indent=2) + "\n")
    print(f"Vendored @litertjs/core {version} into {TARGET.relative_to(ROOT)}:")
    for name in files:
        print(f"  {name:36s} {(TARGET / name).stat().st_size / 1e6:7.3f} MB")


if __name__ == "__main__":
    main()
