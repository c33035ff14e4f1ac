from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from textgen.errors import TextgenError
from textgen.text.tokenizers import UNK_ID, CharTokenizer, WordTokenizer, load_tokenizer

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=300)
SAMPLE = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n  All:\tSpeak, speak.\n"


@settings(max_examples=200, deadline=None)
@given(texts)
def test_char_round_trip(text):
    tokenizer, total = CharTokenizer.fit([text])
    assert total == len(text)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(texts)
def test_word_round_trip_and_pieces_cover_text(text):
    pieces = WordTokenizer.split(WordTokenizer([]), text)
    assert "".join(pieces) == text
    tokenizer, total = WordTokenizer.fit([text])
    assert total == len(pieces)
    assert tokenizer.decode(tokenizer.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(texts, st.lists(st.integers(0, 300), max_size=5))
def test_streamed_word_pieces_equal_whole_text(text, cuts):
    """Cutting the stream anywhere (as file chunks do) never changes the tokens."""
    edges = sorted({min(c, len(text)) for c in cuts})
    chunks = [text[a:b] for a, b in zip([0, *edges], [*edges, len(text)], strict=True)]
    tokenizer = WordTokenizer([])
    streamed = [p for pieces in tokenizer.iter_pieces(chunks) for p in pieces]
    assert streamed == tokenizer.split(text)


@settings(max_examples=200, deadline=None)
@given(st.lists(texts, max_size=4), st.integers(2, 12))
def test_char_fit_counts_like_a_counter(chunks, max_vocab):
    """The numpy count (dense below U+10000, a Counter above) keeps the same characters."""
    counts = Counter("".join(chunks))
    kept = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[: max_vocab - 1]
    tokenizer, total = CharTokenizer.fit(chunks, max_vocab)
    assert tokenizer.tokens == sorted(tok for tok, _ in kept)
    assert total == sum(counts.values())


def test_unicode_characters_not_bytes():
    text = "naïve café — 中文 😀\n"
    tokenizer, _ = CharTokenizer.fit([text])
    assert "😀" in tokenizer.tokens and "中" in tokenizer.tokens
    assert len(tokenizer.encode(text)) == len(text)


def test_word_tokens_keep_punctuation_line_breaks_and_split_cjk():
    tokenizer = WordTokenizer([])
    assert tokenizer.split("Speak, speak.\nYou are 中文的 o'er!") == [
        "Speak", ",", " speak", ".", "\n", "You", " are", " 中", "文", "的", " o'er", "!"]


def test_unknown_tokens_map_to_unk_and_decode_readably():
    tokenizer, _ = WordTokenizer.fit([SAMPLE], max_vocab=5)
    assert len(tokenizer.tokens) == 4 and tokenizer.vocab_size == 5
    ids = tokenizer.encode("zebra")
    assert ids.tolist() == [UNK_ID]
    assert tokenizer.decode(ids) == "<unk>"
    chars, _ = CharTokenizer.fit(["abc"])
    assert chars.encode("abz").tolist()[-1] == UNK_ID
    assert chars.unknown_pieces("abzzy") == ["z", "y"]


def test_vocabulary_keeps_most_frequent_words():
    tokenizer, total = WordTokenizer.fit(["a a a b b c\n"], max_vocab=3)
    assert total == 7
    assert tokenizer.tokens == [" a", " b"]  # most frequent first; ties broken by text


def test_save_and_load(tmp_path):
    for cls in (CharTokenizer, WordTokenizer):
        tokenizer, _ = cls.fit([SAMPLE])
        tokenizer.save(tmp_path / "tok.json")
        loaded = load_tokenizer(tmp_path / "tok.json")
        assert type(loaded) is cls and loaded.tokens == tokenizer.tokens
        assert np.array_equal(loaded.encode(SAMPLE), tokenizer.encode(SAMPLE))


def test_corrupt_tokenizer_file_is_a_clear_error(tmp_path):
    path = tmp_path / "tok.json"
    path.write_text("{not json", encoding="utf-8")
    with pytest.raises(TextgenError, match="not a valid tokenizer"):
        load_tokenizer(path)


@pytest.mark.parametrize("cls", [CharTokenizer, WordTokenizer])
def test_extended_vocabulary_keeps_every_id(cls):
    """Fine-tuning appends tokens: ids the model has weights for must not move."""
    tokenizer, _ = cls.fit([SAMPLE[:40]])
    counts = cls.count([SAMPLE])
    assert sum(counts.values()) == cls.fit([SAMPLE])[1]
    new = [token for token in counts if token not in tokenizer.tokens]
    grown = tokenizer.extended(new)
    assert grown.tokens[:len(tokenizer.tokens)] == tokenizer.tokens
    assert grown.vocab_size == tokenizer.vocab_size + len(new) > tokenizer.vocab_size
    assert list(grown.encode(SAMPLE[:40])) == list(tokenizer.encode(SAMPLE[:40]))
    assert UNK_ID not in grown.encode(SAMPLE) and grown.decode(grown.encode(SAMPLE)) == SAMPLE
