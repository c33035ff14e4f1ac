"""Per-token latency and file size of the exported TFLite step model, float vs quantized.

    python bench/tflite_latency.py            # prints one JSON object

For each cell (LSTM, GRU, SimpleRNN) a char model of 2 x 256 units, embedding 64, vocabulary 65
(the shapes of the speed issue) is trained for one step and exported with `textgen export
--format tflite` three times: float32, `--quantize dynamic` (int8 weights) and `--quantize
float16`. Each file is run by stock LiteRT on one thread, batch 1, feeding each step's states and
argmax id back in as an app would: `step` is a whole call from Python as `textgen sample` makes it
(inputs copied in, outputs out), `invoke` the interpreter's computation alone. Sizes and speeds
are also given relative to the float file of the same run, which survives a noisy machine.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

UNITS, LAYERS, EMBEDDING = 256, 2, 64
ALPHABET = (string.ascii_letters + string.digits + " .,;:!?'\n-")[:64]  # 64 chars + <unk> = 65
STEPS = 3_000


def textgen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "textgen", *args], check=True, capture_output=True)


def latency(path: Path) -> dict[str, float]:
    from textgen.export.litert import LiteRTStep

    metadata = json.loads((path.parent / "metadata.json").read_text(encoding="utf-8"))
    step = LiteRTStep(path, num_threads=1)
    states = {s["input"]: np.zeros((1, s["size"]), np.float32) for s in metadata["states"]}
    token = np.array([1], np.int32)
    for _ in range(50):  # warm up (XNNPACK is set up at the first call)
        step(token, states)

    start = time.perf_counter()
    for _ in range(STEPS):
        logits, states = step(token, states)
        token = np.argmax(logits, axis=-1).astype(np.int32)
    per_step = (time.perf_counter() - start) / STEPS

    start = time.perf_counter()
    for _ in range(STEPS):
        step.interpreter.invoke()
    invoke = (time.perf_counter() - start) / STEPS
    return {"step_us": round(per_step * 1e6, 1), "invoke_us": round(invoke * 1e6, 1)}


def main() -> None:
    results: dict = {"model": f"{LAYERS}x{UNITS}, embedding {EMBEDDING}, vocabulary 65, batch 1, 1 thread",
                     "cells": {}}
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "corpus.txt"
        corpus.write_text("".join(ALPHABET[(i * 7) % 64] for i in range(40_000)))
        for cell in ("lstm", "gru", "rnn"):
            textgen("train", str(corpus), "--cell", cell, "--layers", str(LAYERS), "--units", str(UNITS),
                    "--embedding-dim", str(EMBEDDING), "--max-steps", "1", "--no-samples", "--quiet",
                    "--output-dir", folder, "--name", cell)
            figures = {}
            for quantize in ("none", "dynamic", "float16"):
                out = Path(folder) / f"{cell}-{quantize}"
                textgen("export", str(Path(folder) / cell), "--format", "tflite", "--quantize", quantize,
                        "--output", str(out))
                path = out / "model.tflite"
                measured = latency(path)
                figures[quantize] = {"bytes": path.stat().st_size, **measured,
                                     "tokens_per_s": round(1e6 / measured["step_us"])}
            base = figures["none"]
            for quantize in ("dynamic", "float16"):
                small = figures[quantize]
                small["size_vs_float"] = round(small["bytes"] / base["bytes"], 3)
                small["invoke_speedup_vs_float"] = round(base["invoke_us"] / small["invoke_us"], 2)
            results["cells"][cell] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
