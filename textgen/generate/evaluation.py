"""Loss, perplexity and bits per character of a model on held-out text, from a function giving the
cross-entropy of every target token of a batch of windows: Keras' network (textgen.text_model), or a
step model run token by token (the numpy network, LiteRT, a SavedModel's step), which needs no
TensorFlow."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from textgen.generate.step_generator import StepRunner, logits_after_each
from textgen.text.tokenizers import Specials
from textgen.text.tokens import TokenSource, window_batches

LN2 = math.log(2.0)
WindowLosses = Callable[[np.ndarray], np.ndarray]  # ids [batch, seq_len + 1] -> nats [batch, seq_len]


def perplexity(loss: float) -> float:
    """exp(loss), capped so that a diverged loss does not overflow."""
    return math.exp(min(loss, 50.0))


def evaluate_windows(window_losses: WindowLosses, source: TokenSource, seq_len: int, batch_size: int,
                     tally: LossTally) -> dict:
    """Mean cross-entropy over the windows of `source`, computed exactly as the validation loss:
    consecutive windows of `seq_len + 1` tokens, each read from a zero state.

    Character counts come from the text each target token stood for, so a word model's bits per
    character are those of the decoded text.
    """
    for ids, lengths in window_batches(source, seq_len, batch_size):
        tally.add(window_losses(ids), ids[:, 1:], lengths[:, 1:])
    return tally.report()


def step_window_losses(runner: StepRunner, state_sizes: dict[str, int]) -> WindowLosses:
    """A step model's cross-entropy of each window's targets: fed one token at a time from zero
    states, the log-softmax in float64."""

    def losses(ids: np.ndarray) -> np.ndarray:
        nats = np.empty((ids.shape[0], ids.shape[1] - 1))
        rows = np.arange(ids.shape[0])
        for t, logits in enumerate(logits_after_each(runner, state_sizes, ids[:, :-1])):
            logits = logits.astype(np.float64)
            top = logits.max(axis=-1)
            log_sum = top + np.log(np.exp(logits - top[:, np.newaxis]).sum(axis=-1))
            nats[:, t] = log_sum - logits[rows, ids[:, t + 1]]
        return nats

    return losses


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
