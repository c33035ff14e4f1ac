"""Training throughput of `textgen train` next to PyTorch, same shapes, same run.

    pip install torch==2.13.0        # the reference (a CPU build)
    python bench/training_speed.py   # prints one JSON object; --cells lstm,gru --steps 50 --bf16

Shapes of the speed issue: char model, 2 recurrent layers of 256 units, embedding 64,
vocabulary 65, batch 64, sequence 100, Adam with gradient clipping. textgen's figure is the
rate of the real command in steady state: `textgen train --steps-per-epoch STEPS --epochs 2
--precision float32`,
and the tokens per second of its second epoch as its history.json records them (training time
only; the first epoch holds the tracing).
PyTorch's `nn.LSTM` / `nn.GRU` / `nn.RNN` run the same loop in a separate process with its
default threads (bench/torch_reference.py). Each rate is also given as a fraction of the float32
matmul peak measured in the same run (FLOPs per trained token = 3 x forward).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, machine, matmul_peak_gflops

UNITS, LAYERS, EMBEDDING, VOCAB, BATCH, SEQ = 256, 2, 64, 65, 64, 100
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def flops_per_trained_token(cell: str) -> float:
    gates = GATES[cell] * UNITS
    macs = (EMBEDDING + UNITS) * gates + (LAYERS - 1) * (2 * UNITS) * gates + UNITS * VOCAB
    return 3 * 2 * macs  # forward, then backward at twice its cost


def textgen_rate(cell: str, corpus: Path, folder: str, steps: int, extra: list[str]) -> float:
    """Steady tokens/s of the real command: the second of two `--steps-per-epoch` epochs, as
    textgen's own history.json reports it (training time only: no tracing, no validation)."""
    subprocess.run([sys.executable, "-m", "textgen", "train", str(corpus), "--cell", cell, "--layers",
                    str(LAYERS), "--units", str(UNITS), "--embedding-dim", str(EMBEDDING), "--batch-size",
                    str(BATCH), "--seq-len", str(SEQ), "--steps-per-epoch", str(steps), "--epochs", "2",
                    "--no-samples", "--quiet", "--output-dir", folder, "--name", cell, "--force", *extra],
                   check=True, capture_output=True)
    history = json.loads((Path(folder) / cell / "history.json").read_text(encoding="utf-8"))
    return history["tokens_per_second"][1]


def torch_rate(cell: str, steps: int) -> float | None:
    script = Path(__file__).resolve().parent / "torch_reference.py"
    shapes = [steps, UNITS, LAYERS, EMBEDDING, VOCAB, BATCH, SEQ]
    result = subprocess.run([sys.executable, str(script), cell, *map(str, shapes)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        if "No module named 'torch'" in result.stderr:
            return None
        raise RuntimeError(result.stderr)
    return float(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru,rnn")
    parser.add_argument("--steps", type=int, default=50,
                        help="steps per epoch (and PyTorch's measured steps)")
    parser.add_argument("--xla", action="store_true", help="also measure textgen train --xla")
    parser.add_argument("--bf16", action="store_true",
                        help="also measure --precision float32_bf16_matmul "
                             "(auto's choice on CPUs with fast bfloat16: AMX, AVX512_BF16)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternate textgen and PyTorch runs this often; medians are reported")
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    shapes = f"{LAYERS}x{UNITS}, embedding {EMBEDDING}, vocabulary {VOCAB}, batch {BATCH}, seq {SEQ}"
    results: dict = {"machine": machine(), "shapes": shapes, "matmul_peak_gflops": round(peak, 1),
                     "repeats": args.repeats, "cells": {}}
    with tempfile.TemporaryDirectory() as folder:
        for cell in args.cells.split(","):
            flops = flops_per_trained_token(cell)
            figures: dict = {"arithmetic_bound_tokens_per_s": round(peak * 1e9 / flops)}
            rates: dict[str, list[float]] = {}
            for _ in range(args.repeats):  # alternated, so that a noisy minute hits both
                float32 = ["--precision", "float32"]  # PyTorch's arithmetic, whatever auto would pick
                rates.setdefault("textgen", []).append(textgen_rate(cell, SHAKESPEARE, folder, args.steps,
                                                                    float32))
                if args.xla:
                    rates.setdefault("textgen_xla", []).append(
                        textgen_rate(cell, SHAKESPEARE, folder, args.steps, [*float32, "--xla"]))
                if args.bf16:
                    rates.setdefault("textgen_bf16_matmul", []).append(
                        textgen_rate(cell, SHAKESPEARE, folder, args.steps,
                                     ["--precision", "float32_bf16_matmul"]))
                torch = torch_rate(cell, args.steps)
                if torch is not None:
                    rates.setdefault("pytorch", []).append(torch)
            if "pytorch" not in rates:
                figures["pytorch"] = "torch is not installed (pip install torch==2.13.0)"
            for name, values in rates.items():
                rate = statistics.median(values)
                figures[name] = {"tokens_per_s": round(rate), "runs": [round(v) for v in values],
                                 "fraction_of_peak": round(rate * flops / (peak * 1e9), 3)}
            if "pytorch" in rates:  # the median of the ratios of runs made side by side
                pairs = zip(rates["textgen"], rates["pytorch"], strict=True)
                figures["textgen_vs_pytorch"] = round(statistics.median(a / b for a, b in pairs), 2)
            results["cells"][cell] = figures
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
