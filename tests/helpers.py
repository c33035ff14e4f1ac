"""What the tests share besides fixtures: the bundled corpus, tiny-model options, running the CLI."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from textgen.datasets import tiny_shakespeare_path

SHAKESPEARE: Path = tiny_shakespeare_path()  # the copy the package ships: the suite needs nothing else
TINY = ["--layers", "1", "--units", "8", "--embedding-dim", "8", "--seq-len", "32",
        "--batch-size", "16", "--no-samples", "--quiet"]


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
