"""Generation speed of `textgen sample`: marginal characters per second, 1 and 64 streams.

    python bench/generation_speed.py            # prints one JSON object

A char model of 2 x 256 LSTM, embedding 64, vocabulary 65 (the shapes of the speed issue) is
trained for one step on a 65-character corpus, then `textgen sample` is run twice per setting
with different lengths: the difference of the wall times is the marginal rate (start-up, model
loading and tracing excluded). `--engine compiled`: the compiled loop at every length (`auto` would
run short jobs in numpy; bench/startup.py measures that). The arithmetic bound divides the matmul
peak measured in the same run by the FLOPs one generated character costs.

The same model's `.tflite` exports run the same way through LiteRT: float32 (the same numbers as the
compiled loop, to 1e-4 in the logits) and int8 (`--quantize dynamic`: a quarter of the weights'
bytes, other logits, so other text). One stream of float32 reads 3.2 MB of weights per character,
more than one core's L2 on the machines measured so far; int8's 0.8 MB need not leave it.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, matmul_peak_gflops

UNITS, LAYERS, EMBEDDING = 256, 2, 64
ALPHABET = (string.ascii_letters + string.digits + " .,;:!?'\n-")[:64]  # 64 chars + <unk> = 65


def flops_per_char(vocab: int) -> float:
    gates = 4 * UNITS
    first = 2 * EMBEDDING * gates + 2 * UNITS * gates
    rest = (LAYERS - 1) * 2 * (2 * UNITS * gates)
    return first + rest + 2 * UNITS * vocab


def run_sample(model: Path, length: int, streams: int) -> float:
    start = time.perf_counter()
    engine = [] if model.suffix == ".tflite" else ["--engine", "compiled"]
    subprocess.run([sys.executable, "-m", "textgen", "sample", str(model), "--length", str(length),
                    "--num-samples", str(streams), "--seed", "1", *engine,
                    "--output", str(model.parent / "out.txt")],
                   check=True, capture_output=True)
    return time.perf_counter() - start


def marginal_rate(model: Path, streams: int, short: int, long: int) -> int:
    """Characters per second between a short and a long job, the faster of three of each."""
    base = min(run_sample(model, short, streams) for _ in range(3))
    full = min(run_sample(model, long, streams) for _ in range(3))
    return round(streams * (long - short) / (full - base))


def export_tflite(model: Path, quantize: str) -> Path:
    folder = model.parent / f"tflite-{quantize}"
    subprocess.run([sys.executable, "-m", "textgen", "export", str(model), "--format", "tflite",
                    "--quantize", quantize, "--output", str(folder)], check=True, capture_output=True)
    return folder / "model.tflite"


def make_model(folder: Path, cell: str = "lstm") -> Path:
    """The benchmark's model, `folder/m`: its shapes trained for one step (speed needs no quality)."""
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(ALPHABET[(i * 7) % 64] for i in range(40_000)))
    subprocess.run([sys.executable, "-m", "textgen", "train", str(corpus), "--cell", cell,
                    "--layers", str(LAYERS), "--units", str(UNITS), "--embedding-dim",
                    str(EMBEDDING), "--max-steps", "1", "--no-samples", "--quiet", "--output-dir",
                    str(folder), "--name", "m"], check=True, capture_output=True)
    return folder / "m"


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = make_model(Path(folder))
        peak = matmul_peak_gflops()
        bound = peak * 1e9 / flops_per_char(65)
        results = {"machine": machine(),
                   "model": f"LSTM {LAYERS}x{UNITS}, embedding {EMBEDDING}, vocabulary 65",
                   "matmul_peak_gflops": round(peak, 1),
                   "arithmetic_bound_chars_per_s": round(bound)}
        # the long runs generate for about ten seconds: start-up varies by a second or two
        for streams, short, long in ((1, 2_000, 152_000), (64, 200, 10_200)):
            rate = marginal_rate(model, streams, short, long)
            results[f"chars_per_s_{streams}_streams"] = rate
            results[f"fraction_of_bound_{streams}_streams"] = round(rate / bound, 3)
        for quantize in ("none", "dynamic"):
            exported = export_tflite(model, quantize)
            name = "litert_float32" if quantize == "none" else "litert_int8"
            results[f"{name}_file_mb"] = round(exported.stat().st_size / 1e6, 2)
            results[f"{name}_chars_per_s_1_stream"] = marginal_rate(exported, 1, 2_000, 62_000)
            results[f"{name}_chars_per_s_64_streams"] = marginal_rate(exported, 64, 200, 3_200)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
