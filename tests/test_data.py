import numpy as np
import pytest

from textgen.errors import TextgenError
from textgen.text.corpus import Corpus, TextCorpus
from textgen.text.pipeline import carried_batches, carried_training_dataset, training_dataset
from textgen.text.tokenizers import CharTokenizer, WordTokenizer
from textgen.text.tokens import (
    TokenSource,
    corpus_streams,
    require_windows,
    split_tail,
    token_stream,
    window_blocks,
)

TEXT = "".join(chr(ord("a") + i % 26) for i in range(1000))


def tail(tokenizer, text, total, val_fraction, max_val_tokens):
    return split_tail(corpus_streams(tokenizer, TextCorpus(text)), tokenizer.level, total, val_fraction,
                      max_val_tokens)


def test_stream_slices_by_token_position():
    tokenizer, _ = CharTokenizer.fit([TEXT])
    corpus = TextCorpus(TEXT)
    ids = np.concatenate([chunk for chunk, _ in token_stream(tokenizer, corpus, 10, 20)])
    assert tokenizer.decode(ids) == TEXT[10:20]


class ChunkedCorpus(Corpus):
    def __init__(self, chunks):
        self.parts = chunks

    def chunks(self):
        yield from self.parts


@pytest.mark.parametrize(("start", "stop"), [(0, None), (3, 9), (4, 5), (7, None), (12, 20), (30, None)])
def test_char_stream_skips_whole_chunks_before_start(start, stop):
    """Char level skips the chunks before `start` unencoded; the slice must not move."""
    text = "abcd" + "efghijk" + "" + "lmnopqrstuvwxyz"
    corpus = ChunkedCorpus(["abcd", "efghijk", "", "lmnopqrstuvwxyz"])
    tokenizer, _ = CharTokenizer.fit([text])
    pieces = [tokenizer.decode(ids) for ids, _ in token_stream(tokenizer, corpus, start, stop)]
    assert "".join(pieces) == text[start:stop]


def test_windows_are_consecutive_and_non_overlapping():
    stream = iter([(np.arange(7, dtype=np.int32), np.ones(7, np.int32)),
                   (np.arange(7, 12, dtype=np.int32), np.ones(5, np.int32))])
    blocks = [ids for ids, _ in window_blocks(stream, 5)]
    assert np.concatenate(blocks).tolist() == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]


def test_targets_are_inputs_shifted_by_one_and_every_window_is_seen():
    tokenizer, total = CharTokenizer.fit([TEXT])
    train, val = tail(tokenizer, TEXT, total, 0.1, 10**6)
    assert (train.tokens, val.tokens) == (900, 100)
    dataset = training_dataset(train, seq_len=9, batch_size=8, seed=1)
    assert dataset.cardinality().numpy() == -1  # infinite: training counts the steps of an epoch
    assert train.batches(9, 8) == 12  # 90 windows in batches of 8: an epoch
    seen = []
    for inputs, targets in dataset.take(12):
        assert inputs.shape[1] == 9
        np.testing.assert_array_equal(inputs.numpy()[:, 1:], targets.numpy()[:, :-1])
        seen.extend(tokenizer.decode(np.append(i, t[-1])) for i, t in zip(inputs.numpy(), targets.numpy(),
                                                                          strict=True))
    assert sorted(seen) == sorted(TEXT[i:i + 10] for i in range(0, 900, 10))


def test_validation_tail_is_capped_and_counts_characters_of_words():
    text = "the cat sat on the mat\n" * 50
    tokenizer, total = WordTokenizer.fit([text])
    train, val = tail(tokenizer, text, total, 0.5, max_val_tokens=35)
    assert val.tokens == 35 and train.tokens == total - 35
    assert val.chars == len("".join(tokenizer.split(text)[-35:]))


def test_too_short_corpus_is_a_clear_error():
    tokenizer, total = CharTokenizer.fit(["short text"])
    train, _ = tail(tokenizer, "short text", total, 0.1, 100)
    with pytest.raises(TextgenError, match="fewer than one window"):
        require_windows(train, 100, "the training text")


@pytest.mark.parametrize("tokenizer_class", [CharTokenizer, WordTokenizer])
def test_streaming_memory_does_not_grow_with_the_corpus(tokenizer_class, tmp_path, monkeypatch):
    """Tokenizing and windowing 1x and 4x the text peaks at the same memory: nothing is held whole."""
    import tracemalloc

    import textgen.text.corpus

    from helpers import shakespeare

    monkeypatch.setattr(textgen.text.corpus, "CHUNK_CHARS", 1 << 16)
    text = shakespeare()
    peaks = []
    for copies in (1, 4):
        path = tmp_path / f"corpus{copies}.txt"
        path.write_text(text * copies, encoding="utf-8")
        corpus = textgen.text.corpus.open_corpus([str(path)])
        tokenizer, total = tokenizer_class.fit(corpus.chunks())
        tracemalloc.start()
        windows = sum(len(block) for block, _ in window_blocks(token_stream(tokenizer, corpus), 101))
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert windows == total // 101
    # 4x the text as int32 ids alone would be 17 MB; streaming stays at a few MB, whatever the size
    assert peaks[1] < 1.3 * peaks[0] + 2**20 and peaks[1] < 8 * 2**20, peaks


def test_endless_data_runs_across_passes_and_a_resume_skips_what_was_trained():
    tokenizer, total = CharTokenizer.fit([TEXT])
    train, _ = tail(tokenizer, TEXT, total, 0.1, 10**6)  # 90 windows of 10
    endless = training_dataset(train, seq_len=9, batch_size=8, seed=1, endless=True)
    batches = [inputs.numpy() for inputs, _ in endless.take(25)]  # 200 windows: over two passes
    assert all(b.shape == (8, 9) for b in batches)  # no short batch at the end of a pass
    one_pass = np.concatenate([i.numpy() for i, _ in training_dataset(train, 9, 8, seed=1).take(12)])
    for start in (0, 90):  # each pass holds every window once
        assert sorted(map(tuple, np.concatenate(batches)[start:start + 90])) == sorted(map(tuple, one_pass))
    resumed = training_dataset(train, seq_len=9, batch_size=8, seed=1, endless=True, skip_batches=20)
    for expected, (inputs, _) in zip(batches[20:], resumed.take(5), strict=True):
        np.testing.assert_array_equal(inputs.numpy(), expected)


def test_every_epoch_is_a_pass_in_its_own_order_that_a_resume_can_start_cold():
    tokenizer, total = CharTokenizer.fit([TEXT])
    train, _ = tail(tokenizer, TEXT, total, 0.1, 10**6)  # 90 windows: epochs of 11 full batches + 2

    def epochs(dataset, count):
        batches = [inputs.numpy() for inputs, _ in dataset.take(12 * count)]
        return [np.concatenate(batches[12 * n:12 * (n + 1)]) for n in range(count)]

    first, second, third = epochs(training_dataset(train, 9, 8, seed=1), 3)
    assert len(first) == 90 and sorted(map(tuple, first)) == sorted(map(tuple, second))
    assert not np.array_equal(first, second) and not np.array_equal(second, third)
    resumed_second, resumed_third = epochs(training_dataset(train, 9, 8, seed=1, start_epoch=1), 2)
    np.testing.assert_array_equal(resumed_second, second)
    np.testing.assert_array_equal(resumed_third, third)
    other_seed = epochs(training_dataset(train, 9, 8, seed=2), 1)[0]
    assert not np.array_equal(other_seed, first)


def test_carried_batches_walk_down_contiguous_columns_from_a_new_offset_each_pass():
    ids = np.arange(900, dtype=np.int32)  # token k is k: positions can be read off the batches
    train = TokenSource(lambda: iter([(ids, np.ones_like(ids))]), 900, 900, "900 tokens")
    assert carried_batches(train, seq_len=9, batch_size=8) == 12  # (900 - 9) // 72
    batches = [(i.numpy(), t.numpy()) for i, t in carried_training_dataset(train, 9, 8, seed=1).take(36)]
    offsets = []
    for start in (0, 12, 24):  # three passes
        inputs = np.concatenate([i for i, _ in batches[start:start + 12]], 1)  # [8, 108]: the columns
        targets = np.concatenate([t for _, t in batches[start:start + 12]], 1)
        offset = inputs[0, 0]
        np.testing.assert_array_equal(inputs, offset + 108 * np.arange(8)[:, None] + np.arange(108))
        np.testing.assert_array_equal(targets, inputs + 1)
        offsets.append(offset)
    assert len(set(offsets)) == 3 and max(offsets) <= 900 - 8 * 108 - 1
    resumed = [i.numpy() for i, _ in carried_training_dataset(train, 9, 8, seed=1, first_batch=20).take(4)]
    for expected, inputs in zip(batches[20:24], resumed, strict=True):
        np.testing.assert_array_equal(inputs, expected[0])
    assert carried_batches(train, seq_len=9, batch_size=100) == 0  # columns shorter than a window
