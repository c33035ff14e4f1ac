import json

import numpy as np
import pytest

from textgen.generate import novelty
from textgen.generate.novelty import copied_windows, copy_report, ngram_hashes

from helpers import run_cli


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 32])
def test_equal_windows_and_only_they_share_a_hash(n):
    ids = np.random.default_rng(n).integers(0, 3, 400).astype(np.int32)  # few symbols: many repeats
    hashes = ngram_hashes(ids, n)
    windows = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    assert len(hashes) == len(windows)
    by_window: dict[tuple, set] = {}
    for window, value in zip(windows, hashes.tolist(), strict=True):
        by_window.setdefault(window, set()).add(value)
    assert all(len(values) == 1 for values in by_window.values())
    assert len({next(iter(v)) for v in by_window.values()}) == len(by_window)
    assert len(ngram_hashes(ids[:n - 1], n)) == 0


def brute_force_shares(samples, corpus, n):
    present = {tuple(corpus[i:i + n]) for i in range(len(corpus) - n + 1)}
    windows = [tuple(s[i:i + n]) for s in samples for i in range(len(s) - n + 1)]
    return sum(w in present for w in windows) / len(windows)


def test_the_longest_copied_run_and_shares_match_a_brute_force_count(monkeypatch):
    """A 37-token copy that straddles the edge of two corpus blocks is found whole."""
    monkeypatch.setattr(novelty, "BLOCK_TOKENS", 500)
    rng = np.random.default_rng(0)
    corpus = rng.integers(1, 6, 3_000).astype(np.int32)
    blocks = [corpus[i:i + 100] for i in range(0, len(corpus), 100)]  # re-cut into blocks of 500
    copied = corpus[480:517]  # crosses the first block's edge at 500
    samples = [rng.integers(6, 9, 200).astype(np.int32),
               np.concatenate([rng.integers(6, 9, 50), copied, rng.integers(6, 9, 50)]).astype(np.int32)]
    report = copy_report(samples, lambda: iter(blocks), [2, 4, 8])
    assert report.longest_copy_tokens == 37
    start = report.longest_copy_start
    assert (report.longest_copy_sample, start) == (1, 50)
    assert samples[1][start:start + 37].tolist() == copied.tolist()
    for n in (2, 4, 8):
        assert report.copied_ngrams[n] == pytest.approx(brute_force_shares(samples, corpus, n))


def test_nothing_copied_and_samples_shorter_than_n():
    corpus = [np.arange(10, dtype=np.int32)]
    samples = [np.array([20, 21, 22], np.int32)]
    report = copy_report(samples, lambda: iter(corpus), [2, 5])
    assert report.longest_copy_tokens == 0
    assert report.copied_ngrams == {2: 0.0, 5: 0.0}
    assert copied_windows(samples, lambda: iter(corpus), 4)[0].tolist() == []


def test_evaluate_novelty_against_the_training_corpus(char_model, corpus_file, capsys):
    code, out, _ = run_cli(["evaluate", char_model, "--novelty", corpus_file, "--samples", 3,
                            "--length", 120, "--json"], capsys)
    assert code == 0
    report = json.loads(out)["novelty"]
    text = corpus_file.read_text(encoding="utf-8")
    assert report["corpus_tokens"] == len(text) + 1  # the reader ends a file with a line break
    assert report["longest_copy_tokens"] >= 3  # a char model copies short runs at least
    assert len(report["longest_copy"]) == report["longest_copy_tokens"]
    assert report["longest_copy"] in corpus_file.read_text(encoding="utf-8")
    shares = report["copied_ngrams"]
    assert list(shares) == ["8", "16", "32"]
    assert 1 >= shares["8"] >= shares["16"] >= shares["32"] >= 0

    code, again, _ = run_cli(["evaluate", char_model, "--novelty", corpus_file, "--samples", 3,
                              "--length", 120, "--json"], capsys)
    assert json.loads(again)["novelty"] == report  # seeded: the same samples, the same figures

    code, out, _ = run_cli(["evaluate", char_model, "--novelty", corpus_file, "--length", 60], capsys)
    assert code == 0
    assert "longest copied run" in out and "copied 8-char runs" in out


def test_evaluate_word_model_novelty_counts_words(word_model, corpus_file, held_out_file, capsys):
    code, out, _ = run_cli(["evaluate", word_model, held_out_file, "--novelty", corpus_file,
                            "--samples", 2, "--length", 40, "--json"], capsys)
    assert code == 0
    result = json.loads(out)
    assert result["loss"] > 0  # the held-out measures are still there
    assert list(result["novelty"]["copied_ngrams"]) == ["3", "5", "8"]


def test_evaluate_needs_text_or_a_novelty_corpus(char_model, tmp_path, capsys):
    code, out, err = run_cli(["evaluate", char_model], capsys)
    assert code == 2 and out == ""
    assert err.strip() == "textgen: error: give held-out text files to measure, or --novelty CORPUS"
    code, _, err = run_cli(["evaluate", char_model, "--novelty", tmp_path / "missing.txt"], capsys)
    assert code == 2
    assert "missing.txt" in err and "Traceback" not in err
