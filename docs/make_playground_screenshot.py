"""Make docs/playground.png: the playground of `textgen serve MODEL`, drawn by Chromium.

    python docs/make_playground_screenshot.py saved_models/tiny_shakespeare-char

Chromium from the system (apt-get install chromium), driven by Playwright.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from playwright.sync_api import sync_playwright

from serving import Server

OUT = Path(__file__).resolve().parent / "playground.png"


def main(model: str) -> None:
    server = Server([f"shakespeare={model}"], Path("/tmp/textgen-screenshot-server.log"))
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1180, "height": 760}, device_scale_factor=1)
            page.goto(server.url)
            page.wait_for_function("document.querySelector('#model').options.length > 0")
            page.fill("#prompt", "ROMEO:")
            page.fill("#max_tokens", "600")
            page.fill("#seed", "1")
            page.fill("#stop", "\\n\\n\\n")
            page.press("#prompt", "Control+Enter")
            page.wait_for_function("document.querySelector('#status').textContent.includes('finished')")
            page.screenshot(path=str(OUT))
            browser.close()
    finally:
        server.stop()
    print(f"Wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
