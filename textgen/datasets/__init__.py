"""Text that ships with textgen: tiny shakespeare (public domain), so that a fresh install trains,
and its tests run, with no download.

`tiny_shakespeare/input.txt` is the very file TensorFlow Datasets' `tiny_shakespeare` downloads
(char-rnn's, 1,115,394 characters; its sha256 is TFDS's recorded checksum), which is what lets
`tfds:tiny_shakespeare` use it as TFDS's manual download when the download host cannot be reached.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

TINY_SHAKESPEARE = "tiny_shakespeare"


def bundled_dir(name: str) -> Path | None:
    """The folder holding a bundled dataset's files, named as TFDS names them, or None."""
    folder = Path(str(resources.files(__name__) / name))
    return folder if folder.is_dir() else None


def tiny_shakespeare_path() -> Path:
    """The bundled tiny shakespeare text file."""
    return Path(str(resources.files(__name__) / TINY_SHAKESPEARE / "input.txt"))
