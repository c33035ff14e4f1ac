"""Loss, perplexity and bits per character of a model on held-out text."""

from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from textgen.text.pipeline import TokenSource, window_dataset
from textgen.text.tokenizers import Specials

LN2 = math.log(2.0)


def perplexity(loss: float) -> float:
    """exp(loss), capped so that a diverged loss does not overflow."""
    return math.exp(min(loss, 50.0))


def evaluate_windows(model: keras.Model, source: TokenSource, seq_len: int, batch_size: int,
                     tally: LossTally) -> dict:
    """Mean cross-entropy over the windows of `source`, computed exactly as the validation loss.

    Character counts come from the text each target token stood for, so a word model's bits per
    character are those of the decoded text.
    """
    dataset = window_dataset(source, seq_len, with_lengths=True).batch(batch_size).prefetch(2)

    @tf.function(reduce_retracing=True)
    def losses(ids):
        logits = model(ids[:, :-1], training=False)
        return keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits, from_logits=True)

    for ids, lengths in dataset:
        tally.add(losses(ids).numpy(), ids[:, 1:].numpy(), lengths[:, 1:].numpy())
    return tally.report()


class LossTally:
    """Sums of cross-entropy over target tokens, and of the characters they stand for. For a model
    of records (`specials`), bits per character count only the text's tokens (<bos>, <eos> and
    labels stand for no characters), and the loss per record is every token's over the records
    ended (<eos> predicted)."""

    def __init__(self, vocab_size: int, specials: Specials | None = None):
        self.specials = specials
        self.control = np.zeros(vocab_size, bool)
        if specials is not None:
            self.control[[specials.bos, specials.eos, *specials.labels.values()]] = True
        self.nats = self.text_nats = 0.0
        self.tokens = self.chars = self.records = 0

    def add(self, losses: np.ndarray, targets: np.ndarray, lengths: np.ndarray) -> None:
        losses = losses.astype(np.float64)
        self.nats += float(losses.sum())
        self.text_nats += float(losses[~self.control[targets]].sum())
        self.tokens += targets.size
        self.chars += int(lengths.sum())
        if self.specials is not None:
            self.records += int((targets == self.specials.eos).sum())

    def report(self) -> dict:
        report = loss_report(self.nats, self.tokens, self.chars)
        if self.specials is not None:
            report["bits_per_char"] = self.text_nats / LN2 / self.chars if self.chars else float("nan")
            report["records"] = self.records
            report["loss_per_record"] = self.nats / self.records if self.records else float("nan")
        return report


def loss_report(nats: float, tokens: int, chars: int) -> dict:
    """The evaluation result from summed cross-entropy (nats), target tokens and their characters."""
    if tokens == 0:
        return {"loss": float("nan"), "perplexity": float("nan"), "bits_per_char": float("nan"),
                "bits_per_token": float("nan"), "tokens": 0, "chars": 0}
    loss = nats / tokens
    return {"loss": loss, "perplexity": perplexity(loss), "bits_per_char": nats / LN2 / chars,
            "bits_per_token": loss / LN2, "tokens": tokens, "chars": chars}
