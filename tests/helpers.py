"""What the tests share besides fixtures: the bundled corpus, tiny-model options, running the CLI."""

from __future__ import annotations

import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from textgen.datasets import tiny_shakespeare_path

SHAKESPEARE: Path = tiny_shakespeare_path()  # the copy the package ships: the suite needs nothing else
TINY = ["--layers", "1", "--units", "8", "--embedding-dim", "8", "--seq-len", "32",
        "--batch-size", "16", "--no-samples", "--quiet"]
SMALL = ["--layers", "2", "--units", "32", "--embedding-dim", "16", "--seq-len", "32", "--batch-size", "16",
         "--no-samples", "--quiet"]  # exports are compared with Keras: a model big enough to mean something
CELLS = ["lstm", "gru", "rnn"]


@cache
def shakespeare() -> str:
    return SHAKESPEARE.read_text(encoding="utf-8")


def run_cli(args: list, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process as a user would; returns (exit code, stdout, stderr)."""
    from textgen.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def folder_snapshot(path: Path) -> dict:
    """Every file under `path` with its bytes: equal snapshots mean nothing was written."""
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


@contextlib.contextmanager
def static_site(folders: dict[str, Path]) -> Iterator[str]:
    """Each folder under /NAME/ on a static file server (the standard library's) on 127.0.0.1."""
    with tempfile.TemporaryDirectory() as root:
        for name, folder in folders.items():
            (Path(root) / name).symlink_to(folder, target_is_directory=True)

        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=root))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()


def chromium_path() -> str:
    """The system's Chromium (Playwright's own browser download is not needed): skip without it,
    or fail where TEXTGEN_REQUIRE_BROWSER says it must be there (CI)."""
    path = os.environ.get("TEXTGEN_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TEXTGEN_REQUIRE_BROWSER"):
            pytest.fail("TEXTGEN_REQUIRE_BROWSER is set but no Chromium was found")
        pytest.skip("no Chromium to drive: apt-get install chromium (or set TEXTGEN_CHROMIUM)")
    return path


def train(out: Path, corpus: Path, name: str, *extra: str) -> Path:
    """A SMALL model trained by the CLI in `out`."""
    from textgen.cli import main

    assert main(["train", str(corpus), *SMALL, "--output-dir", str(out), "--name", name, *extra]) == 0
    return out / name
