"""The word tokenizer's pattern spelled out for other regex engines.

`tokenizers.WORD_PATTERN` uses Python's Unicode classes (`\\w`, `\\s`). RE2 (TensorFlow's string ops)
reads `\\w` and `\\s` as ASCII only, and JavaScript's `\\w` is ASCII too, so for them every class is
written as explicit code point ranges, computed from Python's own `re`: the same characters, hence
the same pieces (both engines, like Python's, take the leftmost alternative first).
"""

from __future__ import annotations

import functools
import re

from textgen.text.tokenizers import CJK_RANGES

Ranges = tuple[tuple[int, int], ...]
# how each engine writes a code point inside a character class
ESCAPES = {"re2": "\\x{{{:x}}}", "javascript": "\\u{{{:x}}}"}


def _ranges(test: re.Pattern[str], exclude: Ranges = ()) -> Ranges:
    """Code point ranges whose characters match `test` (surrogates and `exclude` left out)."""
    found: list[tuple[int, int]] = []
    start = None
    for code in range(0x110001):
        inside = (code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
                  and not any(lo <= code <= hi for lo, hi in exclude) and test.match(chr(code)))
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            found.append((start, code - 1))
            start = None
    return tuple(found)


@functools.cache
def _classes() -> dict[str, Ranges]:
    return {"word": _ranges(re.compile(r"\w"), exclude=CJK_RANGES), "cjk": CJK_RANGES,
            "spaces": _ranges(re.compile(r"\s")), "spaces_but_newline": _ranges(re.compile(r"[^\S\n]"))}


@functools.cache
def explicit_word_pattern(engine: str) -> str:
    """`tokenizers.WORD_PATTERN` with every class as explicit ranges, for "re2" or "javascript"
    (the latter for a RegExp with the `u` flag)."""
    escape = ESCAPES[engine].format

    def cls(name: str, negate: bool = False) -> str:
        ranges = _classes()[name]
        body = "".join(escape(lo) if lo == hi else f"{escape(lo)}-{escape(hi)}" for lo, hi in ranges)
        return f"[{'^' if negate else ''}{body}]"

    word, cjk, spaces = cls("word"), cls("cjk"), cls("spaces_but_newline")
    not_space = cls("spaces", negate=True)
    return rf"\n| ?{cjk}| ?{word}+(?:['’]{word}+)*| ?{not_space}|{spaces}+"
