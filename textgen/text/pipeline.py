"""Token windows (textgen.text.tokens) -> tf.data datasets of (inputs, targets); knows nothing of
models.

Corpora up to CACHE_MAX_TOKENS are held as one array of windows; larger ones stay streamed, so
memory stays bounded whatever the corpus size. tf.data shuffles, batches and prefetches.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from textgen.text.tokens import CACHE_MAX_TOKENS, TokenSource, window_blocks

SHUFFLE_WINDOWS = 20_000
PASS_SEED_STRIDE = 1_000_003  # pass n of a run seeded s is shuffled with seed s * stride + n
PASSES_END = 2**62  # passes are numbered without end: training decides when to stop


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
