"""Quality at a wall-clock budget: `textgen train` with default settings next to the stock Keras
baseline, same budgets, same run, on tiny shakespeare.

    python bench/quality.py [--budgets 154 600 1800] [--baseline-budgets 154 600] [-- TRAIN OPTIONS]

Both train on the first 90% of the text; the loss (nats per character) is measured on the last
10% with `textgen evaluate` (windows of 100 from a zero state), and for the baseline the same way
(bench/stock_keras.py). Runs alternate, textgen then baseline, budget by budget, so that a noisy
stretch of a shared machine hits both. The matmul peak measured at the start says how fast the
machine is: the quality issue's budgets were set on a machine of about 171 GFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, matmul_peak_gflops


def textgen_run(folder: Path, tail: Path, seconds: float, extra: list[str]) -> dict:
    name = f"q{seconds:g}"
    subprocess.run([sys.executable, "-m", "textgen", "train", str(SHAKESPEARE), "--time-limit", str(seconds),
                    "--no-samples", "--quiet", "--output-dir", str(folder), "--name", name, "--force",
                    *extra],
                   check=True, capture_output=True)
    config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
    history = json.loads((folder / name / "history.json").read_text(encoding="utf-8"))
    evaluated = subprocess.run([sys.executable, "-m", "textgen", "evaluate", str(folder / name), str(tail),
                                "--json"], check=True, capture_output=True, text=True)
    model = config["model"]
    return {"model": f"{model['cell'].upper()} {model['layers']}x{model['units']}, embedding "
                     f"{model['embedding_dim']}, dropout {model['dropout']}",
            "lr": config["train"]["lr"], "batch": config["train"]["batch_size"],
            "precision": config["precision_used"],
            "parameters": config["result"]["parameters"], "epochs": config["result"]["epochs"],
            "steps": config["result"]["steps"],
            "val_loss_curve": [round(v, 4) for v in history["val_loss"] if v is not None],
            "val_loss": round(json.loads(evaluated.stdout)["loss"], 4)}


def baseline_run(seconds: float) -> dict:
    result = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "stock_keras.py"),
                             str(seconds)], check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", type=float, nargs="+", default=[154, 600, 1800])
    parser.add_argument("--baseline-budgets", type=float, nargs="*", default=[154, 600],
                        help="the budgets the stock baseline also runs for (the issue's: 154 and 600 s)")
    parser.add_argument("extra", nargs="*", help="textgen train options after --, e.g. -- --preset small")
    args = parser.parse_args()
    results: dict = {"matmul_peak_gflops": round(matmul_peak_gflops(), 1), "runs": []}
    text = SHAKESPEARE.read_text(encoding="utf-8")
    with tempfile.TemporaryDirectory() as folder:
        tail = Path(folder) / "tail10.txt"
        tail.write_text(text[len(text) - len(text) // 10:], encoding="utf-8")
        for seconds in args.budgets:
            run = {"budget_seconds": seconds, "textgen": textgen_run(Path(folder), tail, seconds, args.extra)}
            if seconds in args.baseline_budgets:
                run["stock_keras"] = baseline_run(seconds)
            results["runs"].append(run)
            print(json.dumps(run), file=sys.stderr, flush=True)  # progress: the runs are long
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
