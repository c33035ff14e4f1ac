"""Turn next-token logits into token ids: greedy, temperature, top-k, top-p, repetition penalty.
No model inside.

Every setting may differ from row to row (a server batches requests with their own settings and
seeds), and a single value applies to every row. Everything is a TensorFlow op with stateless
randomness, so it runs inside a compiled generation loop and the same seed always gives the same
tokens, whatever else shares the batch.
"""

from __future__ import annotations

import tensorflow as tf

NEG_INF = -1e9
BELOW_ONE = 1.0 - 2.0**-24  # the largest float32 below 1


def per_row(value: tf.Tensor | float | int, logits: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
    """A setting as one value per row of `logits` (a single value is every row's)."""
    return tf.broadcast_to(tf.cast(value, dtype), tf.shape(logits)[:1])


def filter_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keep the `top_k` largest logits of each row (0 keeps all; one k, or a k per row).

    The k-th value is read from a full sort rather than `tf.math.top_k`, whose k would have to
    be a compile-time constant under XLA.
    """
    vocab = tf.shape(logits)[-1]
    k = per_row(top_k, logits, tf.int32)
    k = tf.where(k > 0, tf.minimum(k, vocab), vocab)
    ordered = tf.sort(logits, direction="DESCENDING", axis=-1)
    kth = tf.gather(ordered, k - 1, axis=-1, batch_dims=1)[:, tf.newaxis]
    return tf.where(logits < kth, tf.cast(NEG_INF, logits.dtype), logits)


def filter_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep the smallest set of tokens whose probability adds up to at least `top_p` (nucleus);
    rows whose `top_p` is 1 are left whole."""
    p = per_row(top_p, logits, logits.dtype)[:, tf.newaxis]
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    probs = tf.nn.softmax(sorted_logits, axis=-1)
    before = tf.cumsum(probs, axis=-1, exclusive=True)
    # The most likely token is always kept; others while the mass before them is below top_p.
    keep = tf.logical_or(before < p, tf.range(tf.shape(logits)[-1]) == 0)
    cutoff = tf.reduce_min(tf.where(keep, sorted_logits, tf.reduce_max(sorted_logits)), axis=-1,
                           keepdims=True)
    filtered = tf.where(logits < cutoff, tf.cast(NEG_INF, logits.dtype), logits)
    return tf.where(p < 1, filtered, logits)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit flips about half of the output bits."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def row_noise(vocab: tf.Tensor | int, seeds: tf.Tensor, steps: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Uniform numbers in (0, 1) of shape [batch, vocab]: row r is a pure function of
    (seeds[r], steps[r], rows[r]) — its seed, its token's step, and its row in its request.

    A counter-based hash in 32-bit integer ops rather than TensorFlow's Philox kernels: those
    give different numbers under XLA than without it, and the same seed must give the same
    text from the compiled generator, a server's batch, an exported SavedModel and a TFLite
    model driven from Python. Each entry gets its own counter (row * vocab + column).
    """
    golden = tf.constant(0x9E3779B9, tf.uint32)
    mixed_seeds = _mix32(tf.cast(seeds, tf.uint32) + golden)
    key = _mix32(tf.bitwise.bitwise_xor(mixed_seeds, tf.cast(steps, tf.uint32)))
    counter = tf.cast(rows[:, tf.newaxis] * vocab + tf.range(vocab)[tf.newaxis, :], tf.uint32)
    bits = _mix32(tf.bitwise.bitwise_xor(_mix32(counter), key[:, tf.newaxis]))
    uniform = tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * 2.0**-24 + 2.0**-25
    # the largest value, 1 - 2**-25, rounds to 1 in float32, whose noise would be infinite: that
    # entry would be drawn whatever its probability (even outside top-k); keep it below 1
    return tf.minimum(uniform, BELOW_ONE)


def gumbel_noise(vocab: tf.Tensor | int, seeds: tf.Tensor, steps: tf.Tensor, rows: tf.Tensor) -> tf.Tensor:
    """Gumbel noise [batch, vocab] of each row's (seed, step, row): -log(-log(`row_noise`))."""
    return -tf.math.log(-tf.math.log(row_noise(vocab, seeds, steps, rows)))


def apply_repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """Make tokens already in the text less likely (Keskar et al., 2019): positive logits are
    divided by `penalty`, negative ones multiplied; `seen` is a [batch, vocab] bool mask, `penalty`
    one value or one per row (1: off)."""
    penalty = per_row(penalty, logits, logits.dtype)[:, tf.newaxis]
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def sample_rows(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                seeds: tf.Tensor, steps: tf.Tensor, rows: tf.Tensor,
                banned: tf.Tensor | None = None, noise: tf.Tensor | None = None) -> tf.Tensor:
    """logits [batch, vocab] -> ids [batch]; each setting one value or one per row. Temperature 0 is
    greedy (argmax); `banned` is a [vocab] bool mask of ids never emitted; `seeds`, `steps`, `rows`
    [batch] choose each row's noise (`row_noise`), unless `noise` gives their `gumbel_noise`
    already: a compiled loop computes it a token ahead, because XLA would otherwise fuse it into
    the argmax, whose loop over the vocabulary it does not vectorize."""
    logits = tf.cast(logits, tf.float32)
    if banned is not None:
        logits = tf.where(banned[tf.newaxis, :], NEG_INF, logits)
    temperature = per_row(temperature, logits, tf.float32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = logits / tf.maximum(temperature, 1e-6)[:, tf.newaxis]
    # Filters that no row uses cost nothing: each one sorts the vocabulary.
    top_k, top_p = per_row(top_k, logits, tf.int32), per_row(top_p, logits, tf.float32)
    scaled = tf.cond(tf.reduce_any(top_k > 0), lambda: filter_top_k(scaled, top_k), lambda: scaled)
    scaled = tf.cond(tf.reduce_any(top_p < 1), lambda: filter_top_p(scaled, top_p), lambda: scaled)
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact draw from softmax(logits).
    if noise is None:
        noise = gumbel_noise(tf.shape(scaled)[1], seeds, steps, rows)
    sampled = tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, sampled, greedy)


def sample_next(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                seed: tf.Tensor, banned: tf.Tensor | None = None,
                first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """`sample_rows` with one setting for every row and `seed` = [seed, step]; the rows are rows
    `first_row`, `first_row + 1`, ... of their request."""
    batch = tf.shape(logits)[0]
    seeds, steps = (tf.fill([batch], tf.cast(s, tf.int32)) for s in (seed[0], seed[1]))
    rows = tf.range(batch) + tf.cast(first_row, tf.int32)
    return sample_rows(logits, temperature, top_k, top_p, seeds, steps, rows, banned)
