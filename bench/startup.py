"""Start-up of `textgen sample`: wall time and time to the first character, per engine.

    python bench/startup.py            # prints one JSON object

A char model of 2 x 256 GRU (the shapes of the speed issue's start-up row), trained for one step,
is sampled for 300 characters by `textgen sample` in a fresh process, as a user runs it: with the
default engine (`auto`, which runs such a short job in numpy) and with `--engine compiled`
(TensorFlow's XLA loop), alternately, 3 runs each (median). The import of TensorFlow alone is
measured in the same run, since it is most of the compiled engine's start-up and varies by machine.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_speed import make_model

from common import machine

LENGTH = 300
REPEATS = 3


def run_sample(model: Path, engine: str) -> tuple[float, float]:
    """(seconds to the first character on stdout, seconds to the end) of one `textgen sample`."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "textgen", "sample", str(model), "--length", str(LENGTH), "--seed", "1",
               "--engine", engine]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    process.stdout.read(1)
    first = time.perf_counter() - start
    process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"textgen sample --engine {engine} failed")
    return first, time.perf_counter() - start


def import_seconds(module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = make_model(Path(folder), cell="gru")
        runs: dict[str, list[tuple[float, float]]] = {"auto": [], "compiled": []}
        imports = []
        for _ in range(REPEATS):
            for engine in runs:
                runs[engine].append(run_sample(model, engine))
            imports.append(import_seconds("tensorflow"))
    results = {"machine": machine(), "model": "GRU 2x256, embedding 64, vocabulary 65",
               "command": f"textgen sample MODEL --length {LENGTH} --seed 1 --engine ENGINE",
               "import_tensorflow_s": round(statistics.median(imports), 2)}
    for engine, times in runs.items():
        results[f"{engine}_first_char_s"] = round(statistics.median(t[0] for t in times), 2)
        results[f"{engine}_wall_s"] = round(statistics.median(t[1] for t in times), 2)
    results["wall_ratio_compiled_to_auto"] = round(results["compiled_wall_s"] / results["auto_wall_s"], 1)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
