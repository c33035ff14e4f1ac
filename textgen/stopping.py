"""End each generated stream at the first occurrence of any stop sequence, while streaming.

Text is held back by up to (longest stop sequence - 1) characters per stream, so that a stop
sequence split across two chunks is never shown half. The stop sequence itself is not emitted.
"""

from __future__ import annotations

from collections.abc import Sequence


class StopFilter:
    """Feed it each chunk's decoded pieces (one per stream); it returns what may be shown."""

    def __init__(self, stops: Sequence[str], streams: int):
        self.stops = [stop for stop in stops if stop]
        self.hold = max((len(stop) for stop in self.stops), default=1) - 1
        self.texts = [""] * streams
        self.shown = [0] * streams
        self.done = [False] * streams

    @property
    def all_done(self) -> bool:
        return all(self.done)

    def feed(self, pieces: Sequence[str]) -> list[str]:
        out = []
        for i, piece in enumerate(pieces):
            if self.done[i]:
                out.append("")
                continue
            start = max(len(self.texts[i]) - self.hold, 0)  # earlier text held no whole stop
            self.texts[i] += piece
            hits = [pos for stop in self.stops if (pos := self.texts[i].find(stop, start)) >= 0]
            if hits:
                end = min(hits)
                self.done[i] = True
            else:
                end = max(len(self.texts[i]) - self.hold, self.shown[i])
            out.append(self.texts[i][self.shown[i]:end])
            self.shown[i] = end
        return out

    def flush(self) -> list[str]:
        """What was held back, once generation has ended."""
        out = []
        for i, text in enumerate(self.texts):
            out.append("" if self.done[i] else text[self.shown[i]:])
            self.shown[i] = len(text)
        return out
