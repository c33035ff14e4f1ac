"""End each generated stream at the first occurrence of any stop sequence, while streaming, and a
record model's rows at their end-of-document token.

Text is shown as soon as no stop sequence can start in it: only a tail that is the beginning
of some stop sequence is held back until the next chunk decides it. The stop sequence itself is
not emitted.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class StopFilter:
    """Feed it each chunk's decoded pieces (one per stream); it returns what may be shown."""

    def __init__(self, stops: Sequence[str], streams: int):
        self.stops = [stop for stop in stops if stop]
        self.longest = max((len(stop) for stop in self.stops), default=0)
        self.texts = [""] * streams
        self.shown = [0] * streams
        self.done = [False] * streams

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def feed(self, pieces: Sequence[str]) -> list[str]:
        out = []
        for i, piece in enumerate(pieces):
            if not self.done[i]:
                self.texts[i] += piece
            out.append(self._release(i, final=False))
        return out

    def flush(self) -> list[str]:
        """What was held back, once generation has ended (partial matches never complete now)."""
        return [self._release(i, final=True) for i in range(len(self.texts))]

    def finish(self, i: int) -> str:
        """Stream `i` has ended otherwise: what was held back of it (and nothing after)."""
        text = self._release(i, final=True)
        self.done[i] = True
        return text

    def _release(self, i: int, final: bool) -> str:
        if self.done[i]:
            return ""
        text, shown = self.texts[i], self.shown[i]
        # No stop starts before `shown` (it would have been found or held back), so search from it.
        hit = min((p for stop in self.stops if (p := text.find(stop, shown)) >= 0), default=None)
        pending = None if final else next(
            (q for q in range(max(len(text) - self.longest + 1, shown), len(text))
             if any(len(stop) > len(text) - q and stop.startswith(text[q:]) for stop in self.stops)),
            None)
        if hit is not None and (pending is None or hit <= pending):
            self.done[i], end = True, hit
        else:
            end = len(text) if pending is None else pending
        self.shown[i] = end
        return text[shown:end]


class DocumentEnd:
    """End each row of a record model's generation at its end-of-document token (which is not
    shown): feed it each chunk's new ids; it returns the ids each row may still show."""

    def __init__(self, eos: int, streams: int):
        self.eos = eos
        self.done = [False] * streams

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def cut(self, block: np.ndarray) -> list[np.ndarray]:
        rows = []
        for i, row in enumerate(block):
            if self.done[i]:
                rows.append(row[:0])
                continue
            ends = np.flatnonzero(row == self.eos)
            if len(ends):
                self.done[i], row = True, row[:ends[0]]
            rows.append(row)
        return rows
