"""Per-token latency and file size of the exported TFLite step model, float vs quantized.

    python bench/tflite_latency.py            # prints one JSON object

For each cell (LSTM, GRU, SimpleRNN) a char model of 2 x 256 units, embedding 64, vocabulary 65
(the shapes of the speed issue) is trained for one step and exported with `textgen export
--format tflite` three times: float32, `--quantize dynamic` (int8 weights) and `--quantize
float16`. Each file is run by stock LiteRT on one thread, batch 1, feeding each step's states and
argmax id back in as an app would: `step` is a whole call of the Python signature runner (inputs
copied in, outputs out), `invoke` the interpreter's computation alone. The weight-reading bound
(the file's bytes read once per step at the memory bandwidth measured in the same run) puts the
figures in proportion.
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
from common import memory_bandwidth_gbs

UNITS, LAYERS, EMBEDDING = 256, 2, 64
ALPHABET = (string.ascii_letters + string.digits + " .,;:!?'\n-")[:64]  # 64 chars + <unk> = 65
STEPS = 3_000


def textgen(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "textgen", *args], check=True, capture_output=True)


def latency(path: Path) -> dict[str, float]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    runner = interpreter.get_signature_runner("step")
    metadata = json.loads((path.parent / "metadata.json").read_text(encoding="utf-8"))
    states = {s["input"]: np.zeros((1, s["size"]), np.float32) for s in metadata["states"]}
    token = np.array([1], np.int32)
    for _ in range(50):  # warm up (XNNPACK is set up at the first call)
        runner(token_ids=token, **states)

    start = time.perf_counter()
    for _ in range(STEPS):
        outputs = runner(token_ids=token, **states)
        states = {s["input"]: outputs[s["output"]] for s in metadata["states"]}
        token = np.argmax(outputs["logits"], axis=-1).astype(np.int32)
    step = (time.perf_counter() - start) / STEPS

    start = time.perf_counter()
    for _ in range(STEPS):
        runner._interpreter_wrapper.Invoke(runner._subgraph_index)
    invoke = (time.perf_counter() - start) / STEPS
    return {"step_us": round(step * 1e6, 1), "invoke_us": round(invoke * 1e6, 1)}


def main() -> None:
    bandwidth = memory_bandwidth_gbs()
    results: dict = {"model": f"{LAYERS}x{UNITS}, embedding {EMBEDDING}, vocabulary 65, batch 1, 1 thread",
                     "memory_bandwidth_gb_s": round(bandwidth, 1), "cells": {}}
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
                size = path.stat().st_size
                measured = latency(path)
                bound_us = size / (bandwidth * 1e9) * 1e6  # reading the whole file once per step
                figures[quantize] = {"bytes": size, **measured,
                                     "tokens_per_s": round(1e6 / measured["step_us"]),
                                     "weight_read_bound_us": round(bound_us, 1)}
            figures["dynamic_size_ratio"] = round(figures["dynamic"]["bytes"] / figures["none"]["bytes"], 3)
            figures["float16_size_ratio"] = round(figures["float16"]["bytes"] / figures["none"]["bytes"], 3)
            results["cells"][cell] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
