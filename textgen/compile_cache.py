"""Keep XLA's compiled code between runs: TensorFlow's persistent compilation cache, switched on
for the command line before TensorFlow is imported.

Compiling the generation loop for each batch size is most of `textgen serve`'s start-up after the
import (12.3 s to ready without the cache, 7.6 s with it: bench/RESULTS.md, "Start-up").
TensorFlow writes an entry (a few hundred KB) atomically and loads it only if the computation is
exactly the one compiled, but keys it by neither its own version nor the CPU, so the folder is
named by both (and by XLA_FLAGS, which may limit the instruction set, and LD_PRELOAD): a home
folder shared by machines never runs one machine's code on another. The oldest entries go when the
folder outgrows MAX_BYTES.

TEXTGEN_XLA_CACHE=off switches it off; TEXTGEN_XLA_CACHE=FOLDER puts it elsewhere (default:
$XDG_CACHE_HOME/textgen/xla, or ~/.cache/textgen/xla); a cache directory already in TF_XLA_FLAGS
is left as it is.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

FLAG = "--tf_xla_persistent_cache_directory"
MAX_BYTES = 512 * 1024 * 1024


def enable(environ: dict[str, str] | os._Environ = os.environ) -> Path | None:
    """Point TF_XLA_FLAGS at this machine's cache folder (created if need be); the folder, or None
    when off, already set, or not writable."""
    setting = environ.get("TEXTGEN_XLA_CACHE", "")
    flags = environ.get("TF_XLA_FLAGS", "")
    if setting.lower() == "off" or FLAG in flags:
        return None
    root = Path(setting).expanduser() if setting else _default_root(environ)
    folder = root / _machine_key(environ)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not os.access(folder, os.W_OK):
            return None
        trim(folder)
    except OSError:  # a read-only home, a file in the way: compile as without the cache
        return None
    environ["TF_XLA_FLAGS"] = f"{flags} {FLAG}={folder}".strip()
    return folder


def trim(folder: Path, max_bytes: int = MAX_BYTES) -> None:
    """Delete the least recently written entries until the folder holds at most `max_bytes`."""
    entries = []
    for path in folder.iterdir():
        try:
            stat = path.stat()
        except OSError:
            continue
        if path.is_file():
            entries.append((stat.st_mtime, stat.st_size, path))
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size


def _default_root(environ: dict[str, str] | os._Environ) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "textgen" / "xla"


def _machine_key(environ: dict[str, str] | os._Environ) -> str:
    """TensorFlow's version and a digest of the CPU (model and instruction-set flags), XLA_FLAGS
    and LD_PRELOAD (a preloaded library may change what the CPU reports, as
    bench/avx2_cpuid.c does): compiled code is valid for exactly these."""
    try:
        version = metadata.version("tensorflow")
    except metadata.PackageNotFoundError:
        version = "unknown"
    cpu = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = "".join(line for line in handle if line.startswith(("model name", "flags")))
    except OSError:
        import platform

        cpu = platform.processor() + platform.machine()
    settings = f"{cpu}\n{environ.get('XLA_FLAGS', '')}\n{environ.get('LD_PRELOAD', '')}"
    digest = hashlib.sha256(settings.encode()).hexdigest()[:16]
    return f"tf-{version}-{digest}"
