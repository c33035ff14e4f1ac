"""The tokenizer as TensorFlow ops, so an exported SavedModel takes and returns plain strings.

Character models split prompts into Unicode code points. Word models split with the same
pattern as `WordTokenizer`, rewritten for RE2, TensorFlow's regex engine (text.word_pattern); the
pieces are the same (a property test checks it).
"""

from __future__ import annotations

import tensorflow as tf

from textgen.text.tokenizers import UNK_ID, Tokenizer, is_control
from textgen.text.word_pattern import explicit_word_pattern

_SEPARATOR = "\x00"  # marks piece starts inside the graph; occurrences in prompts are replaced
_SUBSTITUTES = ("\uffff", "\ufffe", "\U0010ffff")  # non-word, non-space characters for those


class GraphTokenizer(tf.Module):
    """encode: strings [batch] -> ragged ids; decode: ids [batch, n] -> strings [batch]."""

    def __init__(self, tokenizer: Tokenizer):
        super().__init__(name="tokenizer")
        self.level = tokenizer.level
        text = [(token, i + 1) for i, token in enumerate(tokenizer.tokens) if not is_control(token)]
        self.table = tf.lookup.StaticHashTable(  # text is never cut into <bos>, <eos> or labels
            tf.lookup.KeyValueTensorInitializer(tf.constant([token for token, _ in text], tf.string),
                                                tf.constant([i for _, i in text], tf.int32)),
            default_value=UNK_ID)
        self.texts = tf.constant([tokenizer.token_text(i) for i in range(tokenizer.vocab_size)], tf.string)
        if self.level == "word":
            self.pattern = explicit_word_pattern("re2")
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
