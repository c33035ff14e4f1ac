"""Turn next-token logits into token ids: greedy, temperature, top-k, top-p. No model inside.

Everything is a TensorFlow op with stateless randomness, so it runs inside a compiled
generation loop and the same seed always gives the same tokens.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf

NEG_INF = -1e9


def temperature_list(temperature: float | Sequence[float]) -> list[float]:
    """One temperature or several (cycled token by token), as a list."""
    return [temperature] if isinstance(temperature, (int, float)) else list(temperature)


def filter_top_k(logits: tf.Tensor, top_k: tf.Tensor) -> tf.Tensor:
    """Keep the `top_k` largest logits of each row (0 keeps all).

    The k-th value is read from a full sort rather than `tf.math.top_k`, whose k would have to
    be a compile-time constant under XLA.
    """
    vocab = tf.shape(logits)[-1]
    k = tf.where(top_k > 0, tf.minimum(top_k, vocab), vocab)
    kth = tf.gather(tf.sort(logits, direction="DESCENDING", axis=-1), k - 1, axis=-1)[:, tf.newaxis]
    return tf.where(logits < kth, tf.cast(NEG_INF, logits.dtype), logits)


def filter_top_p(logits: tf.Tensor, top_p: tf.Tensor) -> tf.Tensor:
    """Keep the smallest set of tokens whose probability adds up to at least `top_p` (nucleus)."""
    sorted_logits = tf.sort(logits, direction="DESCENDING", axis=-1)
    probs = tf.nn.softmax(sorted_logits, axis=-1)
    before = tf.cumsum(probs, axis=-1, exclusive=True)
    # The most likely token is always kept; others while the mass before them is below top_p.
    keep = tf.logical_or(before < top_p, tf.range(tf.shape(logits)[-1]) == 0)
    cutoff = tf.reduce_min(tf.where(keep, sorted_logits, tf.reduce_max(sorted_logits)), axis=-1,
                           keepdims=True)
    return tf.where(logits < cutoff, tf.cast(NEG_INF, logits.dtype), logits)


def _mix32(x: tf.Tensor) -> tf.Tensor:
    """MurmurHash3's 32-bit finalizer: every input bit flips about half of the output bits."""
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16)) * tf.constant(0x85EBCA6B, tf.uint32)
    x = tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 13)) * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(x, tf.bitwise.right_shift(x, 16))


def uniform_noise(shape: tf.Tensor, seed: tf.Tensor, first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """Uniform numbers in (0, 1) of a [batch, vocab] shape, a pure function of (seed, position).

    A counter-based hash in 32-bit integer ops rather than TensorFlow's Philox kernels: those
    give different numbers under XLA than without it, and the same seed must give the same
    text from the compiled generator, an exported SavedModel and a TFLite model driven from
    Python. `seed` is [seed, step]; each entry of the matrix gets its own counter. `first_row`
    is the batch row the first of these rows is, so that parts of a batch draw what the whole
    batch would.
    """
    seed = tf.cast(seed, tf.uint32)
    key = _mix32(tf.bitwise.bitwise_xor(_mix32(seed[0] + tf.constant(0x9E3779B9, tf.uint32)), seed[1]))
    counter = tf.cast(tf.reshape(tf.range(shape[0] * shape[1]) + first_row * shape[1], shape), tf.uint32)
    bits = _mix32(tf.bitwise.bitwise_xor(_mix32(counter), key))
    return tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) * 2.0**-24 + 2.0**-25


def gumbel_noise(shape: tf.Tensor, seed: tf.Tensor, first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """Standard Gumbel noise: -log(-log(U))."""
    return -tf.math.log(-tf.math.log(uniform_noise(shape, seed, first_row)))


def apply_repetition_penalty(logits: tf.Tensor, seen: tf.Tensor, penalty: tf.Tensor) -> tf.Tensor:
    """Make tokens already in the text less likely (Keskar et al., 2019): positive logits are
    divided by `penalty`, negative ones multiplied; `seen` is a [batch, vocab] bool mask."""
    penalised = tf.where(logits > 0, logits / penalty, logits * penalty)
    return tf.where(seen, penalised, logits)


def sample_next(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
                seed: tf.Tensor, banned: tf.Tensor | None = None,
                first_row: tf.Tensor | int = 0) -> tf.Tensor:
    """logits [batch, vocab] -> ids [batch]; temperature 0 is greedy (argmax).

    `seed` is a shape-[2] int tensor; `banned` is a [vocab] bool mask of ids never emitted;
    `first_row` the row of a larger batch that these rows start at (see `uniform_noise`).
    """
    logits = tf.cast(logits, tf.float32)
    if banned is not None:
        logits = tf.where(banned[tf.newaxis, :], NEG_INF, logits)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)
    scaled = logits / tf.maximum(temperature, 1e-6)
    # Filters that are off cost nothing: each one sorts the vocabulary.
    scaled = tf.cond(top_k > 0, lambda: filter_top_k(scaled, top_k), lambda: scaled)
    scaled = tf.cond(top_p < 1, lambda: filter_top_p(scaled, top_p), lambda: scaled)
    # Gumbel-max: argmax(logits + Gumbel noise) is an exact draw from softmax(logits).
    noise = gumbel_noise(tf.shape(scaled), seed, first_row)
    sampled = tf.argmax(scaled + noise, axis=-1, output_type=tf.int32)
    return tf.where(temperature > 0, sampled, greedy)
