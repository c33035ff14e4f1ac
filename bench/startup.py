"""Start-up of `textgen sample` and `textgen serve`, each run in a fresh process as a user runs it.

    python bench/startup.py            # prints one JSON object

A char model of 2 x 256 GRU (the shapes of the speed issue's start-up row), trained for one step,
is sampled for 300 characters (wall time and time to the first character) with the default
engine (`auto`, which runs such a short job in numpy) and with `--engine compiled` (TensorFlow's
XLA loop), the latter with XLA's compiled code kept from the previous run (textgen.compile_cache)
and without (TEXTGEN_XLA_CACHE=off); `textgen serve` is timed until /v1/models answers, with and
without. Settings alternate, 3 runs each (median; the cache is warmed first). The import of
TensorFlow alone is measured in the same run: it is most of the compiled engine's start-up.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_speed import make_model

from common import machine

LENGTH = 300
REPEATS = 3


def environment(cache: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}
    return {**env, "TEXTGEN_XLA_CACHE": str(cache) if cache else "off"}


def run_sample(model: Path, engine: str, cache: Path | None) -> tuple[float, float]:
    """(seconds to the first character on stdout, seconds to the end) of one `textgen sample`."""
    start = time.perf_counter()
    command = [sys.executable, "-m", "textgen", "sample", str(model), "--length", str(LENGTH), "--seed", "1",
               "--engine", engine]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=environment(cache))
    assert process.stdout is not None
    process.stdout.read(1)
    first = time.perf_counter() - start
    process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"textgen sample --engine {engine} failed")
    return first, time.perf_counter() - start


def run_serve(model: Path, cache: Path | None) -> float:
    """Seconds from `textgen serve` to its first answer on /v1/models."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "textgen", "serve", str(model), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment(cache))
    try:
        while time.perf_counter() - start < 300:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=1):
                    return time.perf_counter() - start
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("textgen serve did not answer within 300 s")
    finally:
        process.terminate()
        process.wait()


def import_seconds(module: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        model = make_model(Path(folder), cell="gru")
        cache = Path(folder) / "xla-cache"
        run_sample(model, "compiled", cache)  # warm the cache
        run_serve(model, cache)
        settings = {"auto": ("auto", None), "compiled": ("compiled", cache),
                    "compiled_without_cache": ("compiled", None)}
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in settings}
        serves: dict[str, list[float]] = {"serve": [], "serve_without_cache": []}
        imports = []
        for _ in range(REPEATS):
            for name, (engine, cache_folder) in settings.items():
                samples[name].append(run_sample(model, engine, cache_folder))
            serves["serve"].append(run_serve(model, cache))
            serves["serve_without_cache"].append(run_serve(model, None))
            imports.append(import_seconds("tensorflow"))
    results = {"machine": machine(), "model": "GRU 2x256, embedding 64, vocabulary 65",
               "command": f"textgen sample MODEL --length {LENGTH} --seed 1 --engine ENGINE",
               "import_tensorflow_s": round(statistics.median(imports), 2)}
    for name, times in samples.items():
        results[f"{name}_first_char_s"] = round(statistics.median(t[0] for t in times), 2)
        results[f"{name}_wall_s"] = round(statistics.median(t[1] for t in times), 2)
    for name, times in serves.items():
        results[f"{name}_ready_s"] = round(statistics.median(times), 2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
