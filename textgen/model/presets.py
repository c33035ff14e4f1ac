"""Named model sizes (`--preset`), and `auto`: the size a run's budget and corpus call for.

A preset sets the network (cell, layers, units, embedding, dropout, tied weights), the optimizer
and its peak learning rate, and may set the batch size; options given explicitly override it. With
a `--time-limit`, `auto` picks the largest preset that the time lets learn enough: one that reads
the training text at least its `min_passes` times, or (for corpora too large to be read that
often) trains on at least TOKENS_PER_PARAMETER tokens per parameter. A bigger network learns more
per token, but one that sees a small text too few times in its minutes ends worse than a smaller
one that sees it many times (the measurements behind each preset's passes, rate, dropout and
batch: bench/RESULTS.md, "Presets"). Each preset's training speed is estimated from the
machine's matrix-multiply rate (measured once, in a fifth of a second), the arithmetic a trained
token costs, and the share of that rate the preset's training reached when measured (`efficiency`:
small networks keep the cores less busy); `--max-steps` and the epochs, when they end the run
sooner, shorten the plan too. Without a time limit the run's length is no compute budget to size
the network by, and `auto` is DEFAULT_WITHOUT_TIME_LIMIT.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

from textgen.errors import TextgenError

GATES = {"lstm": 4, "gru": 3, "rnn": 1}
TOKENS_PER_PARAMETER = 20.0  # auto, on a corpus too large for a preset's passes: tokens per weight
TIMED_SHARE = 0.85  # share of a --time-limit spent in training steps (validation, tracing: the rest)
# auto, with time for more passes than this: the run stops after this many, decayed, instead of
# overfitting until the time is up (word models with SGD peak near 6-7 passes over tiny shakespeare)
MAX_USEFUL_PASSES = {"char": None, "word": 7.0}


@dataclass(frozen=True)
class Preset:
    name: str
    cell: str
    layers: int
    units: int
    embedding_dim: int
    dropout: float
    # peak learning rate by optimizer, the preset's own first (measured on tiny shakespeare)
    rates: tuple[tuple[str, float], ...]
    tie_weights: bool = False
    # windows per batch when --batch-size is not given; None: the level's (config.WINDOW_DEFAULTS)
    batch_size: int | None = field(default=None, compare=False)
    # AdamW's decoupled weight decay when --weight-decay is not given; None: config.WEIGHT_DECAY
    weight_decay: float | None = field(default=None, compare=False)
    # auto takes this preset when the time lets it read the training text this often
    min_passes: float = field(default=0.0, compare=False)
    # training FLOP/s as a share of the 1024-matmul rate measured_matmul_flops gives, measured on
    # a 2-core CPU (bench/training_speed.py's shapes, tiny shakespeare); not a setting
    efficiency: float = field(default=0.5, compare=False)

    @property
    def optimizer(self) -> str:
        return self.rates[0][0]

    def rate(self, optimizer: str) -> float:
        rates = dict(self.rates)
        if optimizer not in rates:
            raise TextgenError(f"--optimizer {optimizer} needs --lr: the presets have no {optimizer} rate "
                               f"at this level (theirs are {self.optimizer}'s)")
        return rates[optimizer]

    def network(self) -> dict:
        """ModelConfig's settings."""
        ignored = ("name", "rates", "batch_size", "weight_decay", "min_passes", "efficiency")
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    def settings(self) -> dict:
        """The network, the optimizer and its peak rate."""
        return {**self.network(), "optimizer": self.optimizer, "lr": self.rate(self.optimizer)}


def _adamw(lr: float) -> tuple[tuple[str, float], ...]:
    return (("adamw", lr),)


# Word models train with SGD at 20, the global gradient norm clipped at 0.25 (PyTorch's
# word_language_model recipe; config.CLIPNORMS), which learned far more than AdamW at its rate
# (kept as the second choice)
WORD_SGD = 20.0


def _sgd_then_adamw(lr: float) -> tuple[tuple[str, float], ...]:
    return (("sgd", WORD_SGD), ("adamw", lr))


# Smallest first. Word models tie their embedding to the output layer: most of their parameters
# are those two matrices, and one shared matrix learns better from a small corpus.
PRESETS: dict[str, tuple[Preset, ...]] = {
    "char": (Preset("tiny", "gru", 1, 128, 32, 0.0, _adamw(1e-2), efficiency=0.27),
             Preset("small", "gru", 2, 256, 64, 0.0, _adamw(6e-3), min_passes=2, efficiency=0.55),
             Preset("medium", "gru", 2, 512, 128, 0.2, _adamw(4e-3), min_passes=4, efficiency=0.9),
             # large: batches of 32 (twice the updates per token), dropout 0.35, weight decay 0.3
             Preset("large", "gru", 2, 768, 128, 0.35, _adamw(2e-3), batch_size=32, weight_decay=0.3,
                    min_passes=6, efficiency=0.95),
             # xlarge: for GPUs; not measured against large on a CPU (too slow there)
             Preset("xlarge", "gru", 3, 1024, 256, 0.5, _adamw(2e-3), min_passes=6, efficiency=1.0)),
    # word: efficiency measured at the word windows (20 x 35), which keep the cores less busy
    # than char's 64 x 100; min_passes with SGD at 20 (see WORD_SGD)
    "word": (Preset("tiny", "gru", 1, 128, 128, 0.2, _sgd_then_adamw(1e-2), True, efficiency=0.34),
             Preset("small", "gru", 2, 256, 256, 0.3, _sgd_then_adamw(4e-3), True, min_passes=2,
                    efficiency=0.48),
             Preset("medium", "gru", 2, 512, 512, 0.4, _sgd_then_adamw(3e-3), True, min_passes=4,
                    efficiency=0.62),
             Preset("large", "gru", 2, 768, 768, 0.5, _sgd_then_adamw(2e-3), True, min_passes=6,
                    efficiency=0.74),
             # xlarge: for GPUs
             Preset("xlarge", "gru", 3, 1024, 1024, 0.5, _sgd_then_adamw(2e-3), True, min_passes=6,
                    efficiency=0.74)),
}


def optimizer(level: str) -> str:
    """What the level's presets train with (what `tune` draws rates for)."""
    return PRESETS[level][0].optimizer


NAMES = ("tiny", "small", "medium", "large", "xlarge")
CHOICES = ("auto", *NAMES)
DEFAULT_WITHOUT_TIME_LIMIT = "small"


def preset(level: str, name: str) -> Preset:
    for candidate in PRESETS[level]:
        if candidate.name == name:
            return candidate
    raise TextgenError(f"unknown preset {name!r}; choose one of {', '.join(CHOICES)}")


def train_flops_per_token(cell: str, layers: int, units: int, embedding_dim: int, vocab_size: int,
                          **_) -> float:
    """Arithmetic of one trained token: forward multiply-adds x 2 FLOPs x 3 (forward + backward)."""
    gates = GATES[cell] * units
    macs = (embedding_dim + units) * gates + (layers - 1) * 2 * units * gates + units * vocab_size
    return 6.0 * macs


def parameters(cell: str, layers: int, units: int, embedding_dim: int, vocab_size: int,
               tie_weights: bool = False, **_) -> int:
    """Weights of the network build_model makes (GRU's reset_after keeps two bias rows)."""
    gates = GATES[cell] * units
    bias_rows = 2 if cell == "gru" else 1
    recurrent = sum((inputs + units) * gates + bias_rows * gates
                    for inputs in [embedding_dim] + [units] * (layers - 1))
    output = vocab_size if tie_weights else units * vocab_size + vocab_size
    return vocab_size * embedding_dim + recurrent + output


@dataclass(frozen=True)
class RunLimits:
    """What bounds a run, in the terms presets are chosen by."""

    train_tokens: int  # tokens in one pass over the training text
    seq_len: int
    batch_size: int  # the run's: --batch-size, or the level's default
    epochs: int
    steps_per_epoch: int | None = None
    max_steps: int | None = None
    time_limit: float | None = None
    batch_given: bool = True  # False: a preset with a batch size of its own trains on it

    def batch_for(self, chosen: Preset) -> int:
        """Windows per batch of a run on `chosen`."""
        return chosen.batch_size if chosen.batch_size and not self.batch_given else self.batch_size

    def tokens(self, chosen: Preset, tokens_per_second: Callable[[], float]) -> float:
        """Tokens a time-limited run on `chosen` may train on (the other limits may end it sooner)."""
        tokens_per_step = self.seq_len * self.batch_for(chosen)
        limits = [self.epochs * self.train_tokens]
        if self.steps_per_epoch is not None:
            limits.append(self.epochs * self.steps_per_epoch * tokens_per_step)
        if self.max_steps is not None:
            limits.append(self.max_steps * tokens_per_step)
        if self.time_limit is not None:
            limits.append(self.time_limit * TIMED_SHARE * tokens_per_second())
        return min(limits)


@dataclass(frozen=True)
class Choice:
    """A run's preset, its settings with the user's own on top, and what auto planned."""

    requested: str
    preset: Preset
    settings: dict
    batch_size: int  # windows per batch: the user's, the preset's, or the level's
    planned_passes: float | None  # passes over the training text the budget allows (auto only)
    stop_after_passes: float | None = None  # auto, given time for too many (MAX_USEFUL_PASSES)
    stop_at_step: int | None = None  # the steps those passes take

    def describe(self) -> str:
        shape = f"{self.settings['cell'].upper()} {self.settings['layers']}x{self.settings['units']}"
        if self.requested != "auto":
            return f"preset {self.preset.name} ({shape})"
        if self.planned_passes is None:
            return f"preset {self.preset.name} ({shape}; auto, without --time-limit)"
        stop = (f"; it trains {self.stop_after_passes:g} of them ({self.stop_at_step:,} steps): more would "
                "overfit") if self.stop_at_step else ""
        return (f"preset {self.preset.name} ({shape}; auto: the budget allows about "
                f"{self.planned_passes:,.1f} passes over the training text{stop})")


def resolve(requested: str, level: str, vocab_size: int, budget: RunLimits, given: dict,
            matmul_flops: Callable[[], float]) -> Choice:
    """Settings of a run: the preset's (`requested`, or the one auto picks) under the user's
    explicit ones (`given`, None where not given). `matmul_flops` is called only when a time
    limit needs a speed estimate."""
    if requested != "auto":
        chosen = preset(level, requested)
        return Choice(requested, chosen, _overlay(chosen, given), budget.batch_for(chosen), None)
    chosen, passes = _auto(level, vocab_size, budget, given, matmul_flops)
    choice = Choice(requested, chosen, _overlay(chosen, given), budget.batch_for(chosen), passes)
    useful = MAX_USEFUL_PASSES[level]
    if passes is None or useful is None or passes <= useful:
        return choice
    steps = math.ceil(useful * budget.train_tokens / (budget.seq_len * choice.batch_size))
    return replace(choice, stop_after_passes=useful, stop_at_step=steps)


def _overlay(chosen: Preset, given: dict) -> dict:
    given = {k: v for k, v in given.items() if v is not None}
    optimizer, lr = optimizer_and_rate(chosen, given.get("optimizer"), given.get("lr"))
    settings = {**chosen.settings(), **given, "optimizer": optimizer, "lr": lr}
    if chosen.tie_weights and given.get("tie_weights") is None:
        # the preset's tying follows the user's sizes: the embedding is the units, unless both
        # were given and differ, which unties them
        if given.get("embedding_dim") is None:
            settings["embedding_dim"] = settings["units"]
        settings["tie_weights"] = settings["embedding_dim"] == settings["units"]
    return settings


def optimizer_and_rate(chosen: Preset, optimizer: str | None, lr: float | None) -> tuple[str, float]:
    """The user's optimizer or the preset's, at the user's rate or the preset's for it."""
    optimizer = optimizer or chosen.optimizer
    return optimizer, lr or chosen.rate(optimizer)


def _auto(level: str, vocab_size: int, budget: RunLimits, given: dict,
          matmul_flops: Callable[[], float]) -> tuple[Preset, float | None]:
    """The largest preset the time limit lets learn enough (see the module's docstring)."""
    if budget.time_limit is None:
        return preset(level, DEFAULT_WITHOUT_TIME_LIMIT), None
    table = PRESETS[level]
    for candidate in reversed(table):
        settings = _overlay(candidate, given)
        tokens_per_flop = candidate.efficiency / train_flops_per_token(**settings, vocab_size=vocab_size)
        tokens = budget.tokens(candidate, lambda rate=tokens_per_flop: matmul_flops() * rate)
        passes = tokens / max(budget.train_tokens, 1)
        enough = TOKENS_PER_PARAMETER * parameters(**settings, vocab_size=vocab_size)
        if passes >= candidate.min_passes or tokens >= enough:
            return candidate, passes
    raise AssertionError("unreachable: the smallest preset is always accepted")
