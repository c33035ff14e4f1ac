"""The tokenized-text cache: same tokens as reading the text, reused, and invalidated by changes."""

import json

import numpy as np
import pytest

from textgen.store.ids_cache import IdCache
from textgen.text.corpus import FileCorpus
from textgen.text.tokens import token_stream

from helpers import TINY, run_cli

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 40


def no_reading(self):
    raise AssertionError("the corpus was read although it is cached")


@pytest.mark.parametrize("level", ["char", "word"])
def test_cached_stream_equals_the_tokenized_text(tmp_path, level):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    corpus = FileCorpus([path])
    cache = IdCache.open(tmp_path / "cache", corpus)
    tokenizer = cache.tokenizer(level, 20)
    cached = cache.ids(tokenizer)
    for start, stop in ((0, None), (7, 300), (250, None)):
        expected = list(token_stream(tokenizer, corpus, start, stop))
        got = list(cached.stream(start, stop))
        for index in (0, 1):  # ids, then characters per token
            assert (np.concatenate([g[index] for g in got]).tolist()
                    == np.concatenate([e[index] for e in expected]).tolist())
    assert cached.chars == len(TEXT)


def test_a_second_open_reads_neither_the_text_nor_refits(tmp_path, monkeypatch):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    first = IdCache.open(tmp_path / "cache", FileCorpus([path]))
    tokenizer = first.tokenizer("word", 30)
    tokens = first.ids(tokenizer).tokens
    monkeypatch.setattr(FileCorpus, "chunks", no_reading)
    again = IdCache.open(tmp_path / "cache", FileCorpus([path]))
    assert again.tokenizer("word", 30).tokens == tokenizer.tokens
    assert again.ids(tokenizer).tokens == tokens


def test_a_changed_corpus_or_tokenizer_makes_a_new_entry(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    cache = IdCache.open(tmp_path / "cache", FileCorpus([path]))
    tokenizer = cache.tokenizer("char", 100)
    before = next(iter(cache.ids(tokenizer).stream(0, 5)))[0].tolist()

    smaller = cache.tokenizer("char", 5)  # another vocabulary: its own ids
    assert smaller.tokens != tokenizer.tokens
    assert next(iter(cache.ids(smaller).stream(0, 5)))[0].tolist() != before

    path.write_text("Second" + TEXT[6:], encoding="utf-8")  # same size, new text
    edited = IdCache.open(tmp_path / "cache", FileCorpus([path]))
    after = next(iter(edited.ids(tokenizer).stream(0, 5)))[0].tolist()
    assert after == tokenizer.encode("Secon").tolist() != before
    edited.tokenizer("char", 100)  # fitted again on the new text
    assert len(list((tmp_path / "cache").glob("vocab-*.json"))) == 3
    assert len(list((tmp_path / "cache").glob("ids-*.json"))) == 3


def test_train_with_cache_ids_trains_as_without_and_reuses_it(corpus_file, tmp_path, capsys, monkeypatch):
    base = ["train", corpus_file, *TINY, "--max-steps", "4", "--output-dir", tmp_path]
    assert run_cli([*base, "--name", "plain"], capsys)[0] == 0
    assert run_cli([*base, "--name", "cached", "--cache-ids"], capsys)[0] == 0
    assert list((tmp_path / ".ids-cache").glob("ids-*.i32"))
    monkeypatch.setattr(FileCorpus, "chunks", no_reading)
    code, _, err = run_cli([*base, "--name", "again", "--cache-ids"], capsys)
    assert code == 0, err
    losses = [json.loads((tmp_path / name / "history.json").read_text())["loss"]
              for name in ("plain", "cached", "again")]
    assert losses[0] == losses[1] == losses[2]
    assert run_cli(["list", tmp_path], capsys)[1].count("\n") == 4  # header and three models


def test_cache_ids_is_for_text_files(tmp_path, capsys):
    code, _, err = run_cli(["train", "tfds:tiny_shakespeare", "--cache-ids", "--output-dir", tmp_path],
                           capsys)
    assert code == 2 and "textgen: error: --cache-ids caches text files" in err
