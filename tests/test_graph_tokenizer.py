"""The tokenizer inside an exported SavedModel cuts text exactly as the Python tokenizers do."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.export.graph_tokenizer import GraphTokenizer
from textgen.text.tokenizers import CharTokenizer, WordTokenizer

# Letters, digits, marks, CJK, every kind of space and line break, apostrophes, and the
# characters the graph reserves for itself.
TRICKY = "ab Z9_'’\n\r\t\x0b\x0c\x1c\x1f\x85\u00a0\u2003\u2028\u3000中文日本é\u0301ß٣Ⅻ½!?,.-\x00\uffff😀ǅ"
texts = st.lists(st.one_of(st.text(alphabet=TRICKY, max_size=40),
                           st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)),
                 min_size=1, max_size=8)
WORDS, _ = WordTokenizer.fit([" the cat's tail; 中文 ’tis\n  a\tb", "ROMEO: hello, world!"])
CHARS, _ = CharTokenizer.fit(["abc ROMEO:\n中"])


@settings(max_examples=60, deadline=None)
@given(texts)
def test_word_pieces_match_the_python_pattern(batch):
    import tensorflow as tf

    pieces = GraphTokenizer(WORDS).pieces(tf.constant(batch)).to_list()
    # The graph stands in a reserved character for NUL, which the Python tokenizer keeps: both
    # are unknown to the vocabulary, so the ids agree (the next test checks ids).
    expected = [WordTokenizer([]).split(text.replace("\x00", "\uffff")) for text in batch]
    assert [[p.decode("utf-8") for p in row] for row in pieces] == expected


@settings(max_examples=60, deadline=None)
@given(texts)
def test_ids_match_the_python_tokenizers(batch):
    import tensorflow as tf

    for tokenizer in (WORDS, CHARS):
        ids = GraphTokenizer(tokenizer).encode(tf.constant(batch)).to_list()
        assert ids == [tokenizer.encode(text).tolist() for text in batch]


def test_decode_joins_token_texts():
    import tensorflow as tf

    ids = WORDS.encode(" the cat's tail; 中文")
    decoded = GraphTokenizer(WORDS).decode(tf.constant(ids[np.newaxis, :]))
    assert decoded.numpy()[0].decode("utf-8") == " the cat's tail; 中文"
