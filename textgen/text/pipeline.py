"""Corpus + tokenizer -> tf.data datasets of (inputs, targets) windows; knows nothing of models.

Tokens are streamed chunk by chunk from the corpus and cut into windows of `seq_len + 1` ids
(inputs are the first `seq_len`, targets the same window shifted by one). Corpora up to
CACHE_MAX_TOKENS are then held as one array of windows; larger ones stay streamed, so memory
stays bounded whatever the corpus size. tf.data shuffles, batches and prefetches.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from textgen.errors import TextgenError
from textgen.text.corpus import Corpus
from textgen.text.records import RecordCorpus
from textgen.text.tokenizers import Tokenizer

Stream = Iterator[tuple[np.ndarray, np.ndarray]]  # (ids, character length of each token)
Streams = Callable[[int, int | None], Stream]  # token positions [start, stop) -> their stream
SHUFFLE_WINDOWS = 20_000
CACHE_MAX_TOKENS = 50_000_000  # corpora up to this size keep their windows in memory
PASS_SEED_STRIDE = 1_000_003  # pass n of a run seeded s is shuffled with seed s * stride + n
PASSES_END = 2**62  # passes are numbered without end: training decides when to stop


def token_stream(tokenizer: Tokenizer, corpus: Corpus, start: int = 0, stop: int | None = None) -> Stream:
    """The corpus as (ids, lengths) chunks, restricted to token positions [start, stop); a corpus of
    records as <bos> [<label>] text <eos> per record."""
    position = 0
    if isinstance(corpus, RecordCorpus):
        blocks = corpus.token_blocks(tokenizer)
    else:
        chunks: Iterator[str] = corpus.chunks()
        if tokenizer.level == "char":  # a token per character: whole chunks before `start` need no encoding
            for chunk in chunks:
                if position + len(chunk) > start:
                    chunks = itertools.chain([chunk], chunks)
                    break
                position += len(chunk)
        blocks = tokenizer.encode_stream(chunks)
    for ids, lengths in blocks:
        end = position + len(ids)
        lo, hi = max(start - position, 0), len(ids) if stop is None else min(stop - position, len(ids))
        if lo < hi:
            yield ids[lo:hi], lengths[lo:hi]
        position = end
        if stop is not None and position >= stop:
            return


def count_tokens(stream: Stream) -> tuple[int, int]:
    """Tokens and characters in a stream."""
    tokens = chars = 0
    for ids, lengths in stream:
        tokens += len(ids)
        chars += int(lengths.sum())
    return tokens, chars


def window_blocks(stream: Stream, width: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a stream into consecutive, non-overlapping windows of `width` tokens."""
    carry_ids = np.zeros(0, np.int32)
    carry_lengths = np.zeros(0, np.int32)
    for ids, lengths in stream:
        ids = np.concatenate([carry_ids, ids])
        lengths = np.concatenate([carry_lengths, lengths])
        count = len(ids) // width
        if count:
            yield (ids[: count * width].reshape(count, width),
                   lengths[: count * width].reshape(count, width))
        carry_ids, carry_lengths = ids[count * width:], lengths[count * width:]


@dataclass(frozen=True)
class TokenSource:
    """A re-readable token range: a function making the stream, and its size."""

    make_stream: Callable[[], Stream]
    tokens: int
    chars: int | None  # None where nobody needed it counted
    description: str

    def windows(self, seq_len: int) -> int:
        return self.tokens // (seq_len + 1)

    def batches(self, seq_len: int, batch_size: int) -> int:
        """Batches in one pass over the text (the last one may be short)."""
        return -(-self.windows(seq_len) // batch_size)


def window_dataset(source: TokenSource, seq_len: int, *, with_lengths: bool = False) -> tf.data.Dataset:
    """Single windows of `seq_len + 1` ids (and their character lengths if asked)."""
    width = seq_len + 1
    spec = tf.TensorSpec([None, width], tf.int32)
    dataset = tf.data.Dataset.from_generator(
        lambda: window_blocks(source.make_stream(), width), output_signature=(spec, spec))
    if not with_lengths:
        dataset = dataset.map(lambda ids, lengths: ids)
    return dataset.unbatch()


def _split_window(window: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return window[:, :-1], window[:, 1:]


def _windows_in_memory(source: TokenSource, seq_len: int) -> np.ndarray | None:
    """All windows of a source within CACHE_MAX_TOKENS as one array [windows, seq_len + 1], else None.

    Training reads them through `from_tensor_slices`: a Python generator feeding tf.data during
    training costs about a third of the training speed on a 2-core machine (the generator thread
    and the training loop contend), so only corpora too large to hold are streamed.
    """
    if source.tokens > CACHE_MAX_TOKENS:
        return None
    blocks = [ids for ids, _ in window_blocks(source.make_stream(), seq_len + 1)]
    return np.concatenate(blocks) if blocks else np.zeros((0, seq_len + 1), np.int32)


def training_dataset(source: TokenSource, seq_len: int, batch_size: int, seed: int, *,
                     endless: bool = False, start_epoch: int = 0, skip_batches: int = 0) -> tf.data.Dataset:
    """Shuffled batches of (inputs, targets), pass after pass over the text, without end.

    Pass `n` is shuffled by a seed made of (`seed`, `n`), so any pass can be started cold in
    the order an uninterrupted run would give it: that is what lets `--resume` continue the
    data where the run stopped. By default a pass is an epoch (`steps_per_epoch` =
    `source.batches()`, its last batch may be short) and a resumed run starts at
    `start_epoch`. `endless` batches across passes (epochs are then a number of steps,
    `--steps-per-epoch`), and a resumed run skips the `skip_batches` it already trained on.

    A corpus held in memory is permuted whole in every pass; a streamed one in blocks of
    SHUFFLE_WINDOWS consecutive windows.
    """
    per_pass = max(source.windows(seq_len), 1)
    in_memory = _windows_in_memory(source, seq_len)

    def pass_seed(number: tf.Tensor) -> tf.Tensor:
        return tf.constant(seed, tf.int64) * PASS_SEED_STRIDE + number

    if in_memory is not None:
        windows = tf.constant(in_memory)

        def one_pass(number: tf.Tensor) -> tf.data.Dataset:  # window numbers, in this pass's order
            order = tf.random.experimental.stateless_shuffle(tf.range(len(in_memory)),
                                                             seed=tf.stack([pass_seed(number), 0]))
            return tf.data.Dataset.from_tensor_slices(order)
    else:
        streamed = window_dataset(source, seq_len)

        def one_pass(number: tf.Tensor) -> tf.data.Dataset:  # the windows, in this pass's order
            return streamed.batch(SHUFFLE_WINDOWS).enumerate().map(
                lambda block_number, block: tf.random.experimental.stateless_shuffle(
                    block, seed=tf.stack([pass_seed(number), block_number]))).unbatch()

    def batched(dataset: tf.data.Dataset) -> tf.data.Dataset:
        dataset = dataset.batch(batch_size)
        return dataset if in_memory is None else dataset.map(lambda numbers: tf.gather(windows, numbers))

    if endless:
        first_pass, skip_windows = divmod(skip_batches * batch_size, per_pass)
        dataset = tf.data.Dataset.range(first_pass, PASSES_END).flat_map(one_pass)
        dataset = batched(dataset.skip(skip_windows))
    else:
        dataset = tf.data.Dataset.range(start_epoch, PASSES_END).flat_map(lambda n: batched(one_pass(n)))
    dataset = dataset.map(_split_window, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return _shardable(dataset).prefetch(tf.data.AUTOTUNE)


def carried_batches(source: TokenSource, seq_len: int, batch_size: int) -> int:
    """Batches in one pass of `carried_training_dataset` (0: the text is too short for its columns)."""
    if source.tokens > CACHE_MAX_TOKENS:
        return 0
    return max(source.tokens - seq_len, 0) // (batch_size * seq_len)


def carried_training_dataset(source: TokenSource, seq_len: int, batch_size: int, seed: int, *,
                             first_batch: int = 0) -> tf.data.Dataset:
    """Batches whose rows continue the rows of the batch before, for training that carries the
    recurrent state across batches (truncated BPTT, as char-rnn and PyTorch's word model train).

    Each pass cuts the text into `batch_size` contiguous columns and walks down them `seq_len`
    tokens at a time: row b of batch i is the `seq_len + 1` tokens from (b * column + i * seq_len).
    Pass `n` starts its columns at an offset drawn from (`seed`, `n`), so passes see different
    cuts; batch k of the run is a function of k alone, which lets `--resume` start at
    `first_batch`. Needs the text in memory (`carried_batches` is 0 otherwise).
    """
    steps = carried_batches(source, seq_len, batch_size)
    if steps < 1:
        raise ValueError("the text has too few tokens for carried batches")
    ids = np.concatenate([chunk for chunk, _ in source.make_stream()]).astype(np.int32)
    column = steps * seq_len
    slack = len(ids) - (column * batch_size + 1)  # room left for the pass's offset
    text = tf.constant(ids)
    starts = tf.range(batch_size, dtype=tf.int64)[:, None] * column + tf.range(seq_len + 1, dtype=tf.int64)

    def batch(k: tf.Tensor) -> tf.Tensor:
        pass_number, step = k // steps, k % steps
        offset = tf.random.stateless_uniform([], seed=tf.stack([seed * PASS_SEED_STRIDE + pass_number, 1]),
                                             maxval=slack + 1, dtype=tf.int64)
        return tf.gather(text, offset + step * seq_len + starts)

    dataset = tf.data.Dataset.range(first_batch, PASSES_END).map(batch).map(_split_window)
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return dataset.prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(source: TokenSource, seq_len: int, batch_size: int) -> tf.data.Dataset:
    """Batches of (inputs, targets) in corpus order, for validation and `evaluate`."""
    in_memory = _windows_in_memory(source, seq_len)
    windows = window_dataset(source, seq_len) if in_memory is None else \
        tf.data.Dataset.from_tensor_slices(in_memory)
    dataset = windows.batch(batch_size).map(_split_window)
    return _shardable(_with_batches(dataset, source, seq_len, batch_size)).prefetch(tf.data.AUTOTUNE)


def _shardable(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Let several workers share the batches: each keeps its part of every global batch.

    Our windows come from memory or a Python generator, not from files, so tf.distribute cannot
    give each worker its own files; DATA sharding has every worker read the same (seeded, hence
    identical) stream and keep its share of each batch. With a single worker the option changes
    nothing.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _with_batches(dataset: tf.data.Dataset, source: TokenSource, seq_len: int,
                  batch_size: int) -> tf.data.Dataset:
    """State the number of batches, so Keras shows real progress bars from the first epoch."""
    return dataset.apply(tf.data.experimental.assert_cardinality(source.batches(seq_len, batch_size)))


def corpus_streams(tokenizer: Tokenizer, corpus: Corpus) -> Streams:
    """Token ranges of a corpus, tokenized as they are read."""
    return lambda start, stop: token_stream(tokenizer, corpus, start, stop)


def measured_source(tokenizer: Tokenizer, corpus: Corpus, description: str) -> TokenSource:
    """A whole corpus as a token source; one pass to count its tokens and characters."""
    tokens, chars = count_tokens(token_stream(tokenizer, corpus))
    return TokenSource(lambda: token_stream(tokenizer, corpus), tokens, chars, description)


def split_tail(streams: Streams, level: str, total_tokens: int, val_fraction: float, max_val_tokens: int,
               record_starts: np.ndarray | None = None) -> tuple[TokenSource, TokenSource]:
    """Hold out a contiguous tail of the corpus for validation (capped for huge corpora): for records,
    the last `val_fraction` of the records, whole (at least one)."""
    if record_starts is None:
        val_tokens = min(int(total_tokens * val_fraction), max_val_tokens)
    else:
        records = len(record_starts) - 1
        first = records - max(1, int(records * val_fraction))
        within_cap = int(np.searchsorted(record_starts, total_tokens - max_val_tokens))
        val_tokens = int(total_tokens - record_starts[min(max(first, within_cap), records - 1)])
    cut = total_tokens - val_tokens
    train = TokenSource(lambda: streams(0, cut), cut, None, f"first {cut:,} tokens")
    # a character is a token, except in records, whose control tokens stand for none
    plain_chars = level == "char" and record_starts is None
    val_chars = val_tokens if plain_chars else count_tokens(streams(cut, None))[1]
    val = TokenSource(lambda: streams(cut, None), val_tokens, val_chars, f"last {val_tokens:,} tokens")
    return train, val


def require_windows(source: TokenSource, seq_len: int, what: str) -> None:
    if source.windows(seq_len) < 1:
        raise TextgenError(
            f"{what} has {source.tokens:,} tokens, fewer than one window of seq-len + 1 = "
            f"{seq_len + 1}; use more text or a smaller --seq-len")
