"""What `textgen tune` searches: the space of models (cells, layers, units, dropout, learning rate),
how each trial is budgeted, and Hyperband's rounds, as KerasTuner's oracles draw them."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import keras_tuner as kt

from textgen.errors import TextgenError
from textgen.store.config import CELLS, ModelConfig

TUNERS = ("random", "hyperband")
FACTOR = 3  # Hyperband keeps the best third of each round for a budget three times as long

# Ranges a search covers unless told otherwise; word models have a large output layer and
# overfit sooner, so they get fewer and smaller layers and more dropout. The rates are those of
# the level's optimizer (its presets'): AdamW's for char, SGD's for word, around the 20 its
# presets train at.
DEFAULT_RANGES: dict[str, dict[str, tuple]] = {
    "char": {"layers": (1, 3), "units": (64, 512), "dropout": (0.0, 0.3), "lr": (5e-4, 1e-2)},
    "word": {"layers": (1, 2), "units": (128, 512), "dropout": (0.0, 0.5), "lr": (5.0, 40.0)},
}


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """The models a search draws: cells, and inclusive (min, max) ranges (min == max fixes one).

    Units are drawn as min, 2·min, 4·min, ... up to max; the learning rate on a log scale,
    dropout uniformly. The embedding size is not searched: every trial has `embedding_dim`.
    """

    cells: tuple[str, ...] = CELLS
    layers: tuple[int, int] = DEFAULT_RANGES["char"]["layers"]
    units: tuple[int, int] = DEFAULT_RANGES["char"]["units"]
    dropout: tuple[float, float] = DEFAULT_RANGES["char"]["dropout"]
    lr: tuple[float, float] = DEFAULT_RANGES["char"]["lr"]
    embedding_dim: int = ModelConfig.embedding_dim

    @classmethod
    def for_level(cls, level: str, *, cells: Any = None, layers: Any = None, units: Any = None,
                  dropout: Any = None, lr: Any = None, embedding_dim: int = ModelConfig.embedding_dim
                  ) -> SearchSpace:
        """The level's default ranges, narrowed by any given: a number fixes one, (min, max) a range."""
        if level not in DEFAULT_RANGES:
            raise TextgenError(f"unknown level {level!r}")
        given = {"layers": layers, "units": units, "dropout": dropout, "lr": lr}
        spans = {name: _span(name, DEFAULT_RANGES[level][name] if value is None else value,
                             int if name in ("layers", "units") else float)
                 for name, value in given.items()}
        return cls(cells=CELLS if cells is None else tuple(dict.fromkeys(cells)),
                   embedding_dim=embedding_dim, **spans)

    def __post_init__(self) -> None:
        if not self.cells:
            raise TextgenError("--cells needs at least one cell")
        for cell in self.cells:
            if cell not in CELLS:
                raise TextgenError(f"unknown cell {cell!r} in --cells; choose from {', '.join(CELLS)}")
        for name in ("layers", "units", "dropout", "lr"):
            low, high = getattr(self, name)
            if low > high:
                raise TextgenError(f"--{name} {low:g}:{high:g}: the minimum is above the maximum")
        if self.layers[0] < 1 or self.units[0] < 1 or self.embedding_dim < 1:
            raise TextgenError("--layers, --units and --embedding-dim must be at least 1")
        if not 0 <= self.dropout[0] <= self.dropout[1] < 1:
            raise TextgenError("--dropout must be in [0, 1)")
        if self.lr[0] <= 0:
            raise TextgenError("--lr must be positive")

    def size(self) -> float:
        """How many different models the space holds (infinite if dropout or lr is a range)."""
        continuous = any(low != high for low, high in (self.dropout, self.lr))
        return math.inf if continuous else (
            len(self.cells) * (self.layers[1] - self.layers[0] + 1)
            * (int(math.log2(self.units[1] / self.units[0]) + 1e-9) + 1))

    def hyperparameters(self) -> kt.HyperParameters:
        hp = kt.HyperParameters()
        hp.Choice("cell", list(self.cells))
        _declare(hp, "layers", self.layers)
        _declare(hp, "units", self.units, step=2, sampling="log")
        _declare(hp, "dropout", self.dropout)
        _declare(hp, "lr", self.lr, sampling="log")
        return hp

    def describe(self) -> str:
        def span(low: float, high: float) -> str:
            return f"{low:g}" if low == high else f"{low:g}-{high:g}"

        return (f"cell {'|'.join(self.cells)}, layers {span(*self.layers)}, units {span(*self.units)}, "
                f"dropout {span(*self.dropout)}, lr {span(*self.lr)}")


def _span(name: str, value: Any, kind: type) -> tuple:
    low, high = (value, value) if isinstance(value, int | float) else tuple(value)
    if kind is int and (low != int(low) or high != int(high)):
        raise TextgenError(f"--{name} takes whole numbers")
    return kind(low), kind(high)


def _declare(hp: kt.HyperParameters, name: str, span: tuple, **options: Any) -> None:
    low, high = span
    if low == high:
        hp.Fixed(name, low)
    elif isinstance(low, int):
        hp.Int(name, low, high, **options)
    else:
        hp.Float(name, low, high, **options)


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """How many trials, chosen how, and each trial's budget.

    `max_steps` is a trial's steps and `time_limit` the search's training time, shared among
    its trials by their budgets (random search: time_limit / trials each); with Hyperband
    both are the budget of its longest trials, the others get a third, a ninth, ... of it.
    Validation, building and saving each trial come on top of the time limit.
    """

    trials: int = 10
    tuner: str = "random"
    max_steps: int | None = None
    time_limit: float | None = None  # this session's: --resume may give another

    def __post_init__(self) -> None:
        if self.trials < 1:
            raise TextgenError("--trials must be at least 1")
        if self.tuner not in TUNERS:
            raise TextgenError(f"unknown tuner {self.tuner!r}; choose {' or '.join(TUNERS)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TextgenError("--max-steps must be at least 1")
        if self.time_limit is not None and self.time_limit <= 0:
            raise TextgenError("--time-limit must be positive")


def hyperband_budgets(trials: int) -> tuple[int, list[int]]:
    """Hyperband's longest budget in units (a power of FACTOR) and each trial's budget, in the
    order KerasTuner's oracle runs them one at a time: the longest whose first iteration (all
    its brackets) fits in `trials`; further iterations fill the rest."""
    chosen = None
    max_epochs = FACTOR
    while len(iteration := _hyperband_iteration(max_epochs)) <= trials:
        chosen = max_epochs, iteration
        max_epochs *= FACTOR
    if chosen is None:
        raise TextgenError(f"--tuner hyperband needs --trials {len(_hyperband_iteration(FACTOR))} or more "
                           "(short trials, the best of them again in full, and trials in full)")
    max_epochs, iteration = chosen
    return max_epochs, (iteration * math.ceil(trials / len(iteration)))[:trials]


def _hyperband_iteration(max_epochs: int) -> list[int]:
    """The budgets of one Hyperband iteration, by the oracle's own bracket and round sizes (its
    private methods: keras-tuner is pinned to 1.4 in pyproject.toml)."""
    oracle = kt.oracles.HyperbandOracle(max_epochs=max_epochs, factor=FACTOR)
    return [oracle._get_epochs(bracket, round_) for bracket in range(oracle._get_num_brackets() - 1, -1, -1)
            for round_ in range(bracket + 1) for _ in range(oracle._get_size(bracket, round_))]
