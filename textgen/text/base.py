"""What every corpus is: a stream of text that can be read more than once, and its description."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Corpus:
    """A stream of text that can be read more than once."""

    def chunks(self) -> Iterator[str]:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError
