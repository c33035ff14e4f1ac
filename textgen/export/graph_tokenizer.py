"""The tokenizer as TensorFlow ops, so an exported SavedModel takes and returns plain strings.

Character models split prompts into Unicode code points. Word models split with the same
pattern as `WordTokenizer`, rewritten for RE2 (TensorFlow's regex engine): RE2's `\\w` and `\\s`
are ASCII-only, so Python's Unicode classes are spelled out as explicit code point ranges,
computed from Python's own `re` when the model is exported. Both engines choose the leftmost
alternative first, so the pieces are the same (a property test checks it).
"""

from __future__ import annotations

import functools
import re

import tensorflow as tf

from textgen.text.tokenizers import CJK_RANGES, UNK_ID, Tokenizer

_SEPARATOR = "\x00"  # marks piece starts inside the graph; occurrences in prompts are replaced
_SUBSTITUTES = ("\uffff", "\ufffe", "\U0010ffff")  # non-word, non-space characters for those


def _ranges(test: re.Pattern[str], exclude: tuple[tuple[int, int], ...] = ()) -> list[tuple[int, int]]:
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
    return found


def _re2_class(ranges: list[tuple[int, int]] | tuple[tuple[int, int], ...], negate: bool = False) -> str:
    body = "".join(f"\\x{{{lo:x}}}" if lo == hi else f"\\x{{{lo:x}}}-\\x{{{hi:x}}}" for lo, hi in ranges)
    return f"[{'^' if negate else ''}{body}]"


@functools.cache
def re2_word_pattern() -> str:
    """`tokenizers.WORD_PATTERN` with every class as explicit ranges, for RE2."""
    word = _re2_class(_ranges(re.compile(r"\w"), exclude=CJK_RANGES))
    cjk = _re2_class(CJK_RANGES)
    spaces = _ranges(re.compile(r"\s"))
    not_space = _re2_class(spaces, negate=True)
    spaces_but_newline = _re2_class(_ranges(re.compile(r"[^\S\n]")))
    return rf"\n| ?{cjk}| ?{word}+(?:['’]{word}+)*| ?{not_space}|{spaces_but_newline}+"


class GraphTokenizer(tf.Module):
    """encode: strings [batch] -> ragged ids; decode: ids [batch, n] -> strings [batch]."""

    def __init__(self, tokenizer: Tokenizer):
        super().__init__(name="tokenizer")
        self.level = tokenizer.level
        ids = tf.range(1, tokenizer.vocab_size, dtype=tf.int32)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(tf.constant(tokenizer.tokens, tf.string), ids),
            default_value=UNK_ID)
        self.texts = tf.constant([tokenizer.unk_text, *tokenizer.tokens], tf.string)
        if self.level == "word":
            self.pattern = re2_word_pattern()
            used = "".join(tokenizer.tokens)
            self.substitute = next((ch for ch in _SUBSTITUTES if ch not in used), None)
            if _SEPARATOR in used or self.substitute is None:
                raise ValueError("the vocabulary holds the characters the graph tokenizer reserves")

    def pieces(self, texts: tf.Tensor) -> tf.RaggedTensor:
        if self.level == "char":
            return tf.strings.unicode_split(texts, "UTF-8")
        texts = tf.strings.regex_replace(texts, _SEPARATOR, self.substitute)
        marked = tf.strings.regex_replace(texts, f"({self.pattern})", _SEPARATOR + r"\1")
        return tf.strings.split(marked, _SEPARATOR)[:, 1:]  # the text before the first mark is empty

    def encode(self, texts: tf.Tensor) -> tf.RaggedTensor:
        return tf.ragged.map_flat_values(self.table.lookup, self.pieces(texts))

    def decode(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.strings.reduce_join(tf.gather(self.texts, ids), axis=-1)
