"""Set-up time and peak memory of `textgen train` on large corpora.

    python bench/corpus_scale.py                    # 100 MB, 500 MB and 2 GB; prints JSON
    python bench/corpus_scale.py --sizes-mb 100 2000 --folder /big/tmp

Each corpus is tiny shakespeare repeated, every copy starting at another line (a seeded
rotation), so the text is realistic and its vocabulary that of real text; it is written to a
temporary folder and deleted afterwards. Each size is trained for 3 steps with the default
char model (GRU 2x256, seq-len 100, batch 64) in a fresh process:

- `first_step_seconds`: from the start of `train` to the end of the first training step
  (reading, vocabulary, counting, model building and tracing), as recorded in config.json;
- `import_seconds`: importing TensorFlow and textgen, measured once in a separate process;
  their sum is the wait from the command to the first step;
- `total_seconds`: the whole process, validation and saving included;
- `peak_rss_mb`: the process's peak resident memory (`wait4`'s ru_maxrss), TensorFlow included.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE  # importing common also quiets TensorFlow's C++ logs in the children

DEFAULT_SIZES_MB = (100, 500, 2000)


def write_corpus(path: Path, size_mb: int, seed: int = 0) -> None:
    """Repeat the seed text, each copy rotated to start at a random line, up to `size_mb` MB."""
    text = SHAKESPEARE.read_bytes()
    starts = [0, *(match.end() for match in re.finditer(b"\n", text[:-1]))]
    rng = random.Random(seed)
    target, written = size_mb * 1_000_000, 0
    with open(path, "wb") as handle:
        while written < target:
            cut = rng.choice(starts)
            copy = (text[cut:] + text[:cut])[: target - written]
            copy = copy[: copy.rfind(b"\n") + 1] or copy  # whole lines only
            handle.write(copy)
            written += len(copy)


def import_seconds() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import tensorflow, keras, textgen.training.run"], check=True)
    return time.perf_counter() - start


def train_once(corpus: Path, out: Path) -> dict:
    """Train 3 steps in a child process; its own wall time, peak RSS and recorded first step."""
    command = [sys.executable, "-m", "textgen", "train", str(corpus), "--max-steps", "3", "--no-samples",
               "--quiet", "--output-dir", str(out), "--name", corpus.stem]
    start = time.perf_counter()
    process = subprocess.Popen(command, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)  # this child's rusage alone, not all children's
    total = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if process.returncode:
        raise SystemExit(f"textgen train failed on {corpus.name}:\n{error}")
    result = json.loads((out / corpus.stem / "config.json").read_text(encoding="utf-8"))["result"]
    return {"first_step_seconds": result["first_step_seconds"], "total_seconds": round(total, 1),
            "peak_rss_mb": round(usage.ru_maxrss / 1024)}  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes-mb", type=int, nargs="+", default=DEFAULT_SIZES_MB)
    parser.add_argument("--folder", default=None, help="where the corpora are written (default: TMPDIR)")
    args = parser.parse_args()
    results: dict = {"model": "default char model: GRU 2x256, embedding 64, seq-len 100, batch 64",
                     "import_seconds": round(import_seconds(), 1), "sizes": {}}
    with tempfile.TemporaryDirectory(dir=args.folder) as folder:
        for size in args.sizes_mb:
            corpus = Path(folder) / f"corpus{size}mb.txt"
            start = time.perf_counter()
            write_corpus(corpus, size)
            built = time.perf_counter() - start
            results["sizes"][f"{size} MB"] = {"corpus_build_seconds": round(built, 1),
                                              **train_once(corpus, Path(folder) / "models")}
            corpus.unlink()
            print(json.dumps({f"{size} MB": results["sizes"][f"{size} MB"]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
