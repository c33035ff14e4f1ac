"""Generation speed in the browser: a web export (`textgen export --format web`) in headless Chromium.

    python bench/web_speed.py       # prints one JSON object; needs Chromium (apt-get install chromium)

For the default char model's shape (GRU 2 x 256, embedding 64) and the 2 x 256 LSTM, vocabulary 65,
float32 and int8 (`--quantize dynamic`): the time `load()` takes in a fresh page (the LiteRT.js
runtime, metadata.json and the model, compiled), and the characters per second of
`model.generate()` over 2,000 tokens (best of 3, temperature 0.8), the page's own loop. The models
are their shapes trained for one step: speed needs no quality.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_speed import ALPHABET

from common import machine

TOKENS = 2_000
SHAPES = {"gru": "GRU 2x256, embedding 64", "lstm": "LSTM 2x256, embedding 64"}


def make_models(folder: Path) -> dict[str, Path]:
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(ALPHABET[(i * 7) % 64] for i in range(40_000)))
    exports = {}
    for cell in SHAPES:
        shape = ["--cell", cell, "--layers", "2", "--units", "256", "--embedding-dim", "64"]
        subprocess.run([sys.executable, "-m", "textgen", "train", str(corpus), *shape, "--max-steps", "1",
                        "--no-samples", "--quiet", "--output-dir", str(folder), "--name", cell],
                       check=True, capture_output=True)
        for quantize in ("none", "dynamic"):
            target = folder / f"{cell}-{quantize}"
            subprocess.run([sys.executable, "-m", "textgen", "export", str(folder / cell), "--format", "web",
                            "--quantize", quantize, "--output", str(target)], check=True, capture_output=True)
            exports[f"{cell}-{quantize}"] = target / "web"
    return exports


def serve(root: Path) -> str:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


MEASURE = """async ({tokens}) => {
  const started = performance.now();
  const { load } = await import("./textgen.js");
  const model = await load(".");
  const loaded = performance.now() - started;
  const rates = [];
  for (let run = 0; run < 3; run++) {
    const t = performance.now();
    const text = await model.generate({ prompt: "The", length: tokens, temperature: 0.8, seed: run });
    rates.push([...text].length / ((performance.now() - t) / 1000));
  }
  return { loaded, rates };
}"""


def main() -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or sys.exit("needs Chromium: apt-get install chromium")
    version = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout.strip()
    results: dict = {"machine": machine(), "browser": version, "tokens": TOKENS, "models": {}}
    with tempfile.TemporaryDirectory() as folder:
        exports = make_models(Path(folder))
        site = serve(Path(folder))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium,
                                                 args=["--no-sandbox", "--disable-gpu"])
            for name, web in exports.items():
                page = browser.new_context().new_page()  # a fresh context: nothing cached
                page.goto(f"{site}/{web.relative_to(folder).as_posix()}/metadata.json")  # the folder, no page
                measured = page.evaluate(MEASURE, {"tokens": TOKENS})
                cell, quantize = name.split("-")
                results["models"][name] = {
                    "model": SHAPES[cell], "quantize": quantize,
                    "model_mb": round((web / "model.tflite").stat().st_size / 1e6, 3),
                    "load_ms": round(measured["loaded"]), "chars_per_s": round(max(measured["rates"])),
                    "runs": [round(r) for r in measured["rates"]]}
                page.context.close()
            browser.close()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
