"""The `textgen` command line: click commands that call the public API (textgen.api)."""

from textgen.cli.app import main

__all__ = ["main"]
