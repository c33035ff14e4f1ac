"""Hide what native libraries write straight to file descriptor 2 (TensorFlow's and LiteRT's
start-up lines), which no Python logging setting reaches."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def native_logs_hidden() -> bool:
    """The CLI hides native start-up lines unless --verbose; it says so through TensorFlow's own
    log-level variable, which the library follows for LiteRT too."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"


@contextlib.contextmanager
def native_stderr_silenced(enabled: bool = True) -> Iterator[None]:
    """Point fd 2 at /dev/null for the block; Python exceptions still surface after it."""
    if not enabled:
        yield
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
