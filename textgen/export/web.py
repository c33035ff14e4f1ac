"""The web export: a folder any static file server can serve, in which the model runs client-side.

    export/web/
        index.html      a playground: prompt, settings, Generate and Stop, text as it is generated
        textgen.js      the ES module: load(url), then generate / stream, as `textgen sample` does
        model.tflite    the step model for a batch of one (LiteRT.js takes static shapes only)
        metadata.json   the export's metadata, with the word pattern written for JavaScript
        litert/         LiteRT.js, vendored from npm (web_runtime/VENDOR.json): one ES module and
                        the WebAssembly builds with and without relaxed SIMD

Nothing comes from a CDN: the folder works offline once loaded.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from textgen.export.litert import STEP_SIGNATURE
from textgen.store.artifacts import EXPORT_METADATA_FILE, TFLITE_FILE
from textgen.text.word_pattern import explicit_word_pattern

WEB_DIR = "web"
RUNTIME_DIR = "litert"
PAGES = ("index.html", "textgen.js")


def runtime_version() -> dict[str, Any]:
    """What LiteRT.js the package vendors (VENDOR.json)."""
    return json.loads(resources.files("textgen.export").joinpath("web_runtime/VENDOR.json").read_text())


def write_web(folder: Path, metadata: dict[str, Any], quantize: str) -> None:
    """The web folder around its batch-1 `.tflite` file (already in `folder`), with its own metadata.json."""
    package = resources.files("textgen.export")
    for name in PAGES:
        (folder / name).write_bytes(package.joinpath(f"web_files/{name}").read_bytes())
    runtime = folder / RUNTIME_DIR
    runtime.mkdir()
    for entry in package.joinpath("web_runtime").iterdir():  # with its LICENSE and VENDOR.json
        if entry.is_file():
            (runtime / entry.name).write_bytes(entry.read_bytes())
    vendor = runtime_version()
    web = {"word_pattern": explicit_word_pattern("javascript") if metadata["level"] == "word" else None,
           "runtime": {"package": vendor["package"], "version": vendor["version"]}, "batch": 1}
    described = {**batch_one(metadata), "web": web,  # what is in this folder, not beside it
                 "tflite": {"file": TFLITE_FILE, "signature": STEP_SIGNATURE, "quantization": quantize}}
    described.pop("saved_model", None)
    (folder / EXPORT_METADATA_FILE).write_text(json.dumps(described, ensure_ascii=False, indent=2),
                                               encoding="utf-8")


def batch_one(metadata: dict[str, Any]) -> dict[str, Any]:
    """The metadata's input and output shapes with the batch pinned to one."""
    def pinned(shapes: dict[str, Any]) -> dict[str, Any]:
        return {name: {**spec, "shape": [1, *spec["shape"][1:]]} for name, spec in shapes.items()}

    return {**metadata, "inputs": pinned(metadata["inputs"]), "outputs": pinned(metadata["outputs"])}
