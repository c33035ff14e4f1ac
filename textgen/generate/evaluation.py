"""Loss, perplexity and bits per character of a model on held-out text."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from textgen.text.pipeline import TokenSource, window_dataset

LN2 = math.log(2.0)


def perplexity(loss: float) -> float:
    """exp(loss), capped so that a diverged loss does not overflow."""
    return math.exp(min(loss, 50.0))


def evaluate_windows(model: keras.Model, source: TokenSource, seq_len: int, batch_size: int) -> dict:
    """Mean cross-entropy over the windows of `source`, computed exactly as the validation loss.

    Character counts come from the text each target token stood for, so a word model's bits per
    character are those of the decoded text.
    """
    dataset = window_dataset(source, seq_len, with_lengths=True).batch(batch_size).prefetch(2)

    @tf.function(reduce_retracing=True)
    def batch_sums(ids, lengths):
        logits = model(ids[:, :-1], training=False)
        losses = keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits, from_logits=True)
        return (tf.reduce_sum(tf.cast(losses, tf.float64)), tf.size(losses, tf.int64),
                tf.reduce_sum(tf.cast(lengths[:, 1:], tf.int64)))

    nats = 0.0
    tokens = chars = 0
    for ids, lengths in dataset:
        batch_nats, batch_tokens, batch_chars = batch_sums(ids, lengths)
        nats += float(batch_nats)
        tokens += int(batch_tokens)
        chars += int(batch_chars)
    return loss_report(nats, tokens, chars)


def loss_report(nats: float, tokens: int, chars: int) -> dict:
    """The evaluation result from summed cross-entropy (nats), target tokens and their characters."""
    if tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "bits_per_char": float("nan"),
                "bits_per_token": float("nan"), "tokens": 0, "chars": 0}
    loss = nats / tokens
    return {"loss": loss, "perplexity": perplexity(loss), "bits_per_char": nats / LN2 / chars,
            "bits_per_token": loss / LN2, "tokens": tokens, "chars": chars}
