"""Settings as frozen dataclasses with a JSON round trip; no TensorFlow import here."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError

FORMAT_VERSION = 1
CELLS = ("lstm", "gru", "rnn")
LEVELS = ("char", "word")
PRECISIONS = ("auto", "float32", "float32_bf16_matmul", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape of the network; everything needed to rebuild it."""

    vocab_size: int
    cell: str = "gru"
    layers: int = 2
    units: int = 256
    embedding_dim: int = 64
    dropout: float = 0.0
    tie_weights: bool = False  # the embedding matrix also scores the next token (needs embedding = units)
    embedding_dropout: float = 0.0  # dropout on the embedded tokens, before the first recurrent layer

    def __post_init__(self) -> None:
        if self.cell not in CELLS:
            raise TextgenError(f"unknown cell {self.cell!r}; choose one of {', '.join(CELLS)}")
        for name in ("vocab_size", "layers", "units", "embedding_dim"):
            if getattr(self, name) < 1:
                raise TextgenError(f"{name.replace('_', '-')} must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise TextgenError("dropout must be in [0, 1)")
        if not 0.0 <= self.embedding_dropout < 1.0:
            raise TextgenError("embedding-dropout must be in [0, 1)")
        if self.tie_weights and self.embedding_dim != self.units:
            raise TextgenError(f"tied weights need --embedding-dim equal to --units (the last layer's "
                               f"output scores tokens through the embedding): {self.embedding_dim} != "
                               f"{self.units}")


LR_SCHEDULES = ("wsd", "cosine", "constant")
OPTIMIZERS = ("adamw", "sgd")
# What an optimizer clips when no --clipnorm is given: AdamW each weight's gradient at 1; SGD, as
# PyTorch's word_language_model trains, the global norm of all the gradients at 0.25
CLIPNORMS = {"adamw": 1.0, "sgd": 0.25}
WEIGHT_DECAY = 0.1  # AdamW's decoupled weight decay when none is given
# (seq_len, batch_size) of a run that gives none. Word models learn from many small batches of
# short windows, as PyTorch's word_language_model trains them (bench/RESULTS.md, word windows)
WINDOW_DEFAULTS = {"char": (100, 64), "word": (35, 20)}


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """How the model is fitted; saved so `--resume` continues with the same settings."""

    seq_len: int | None = None  # None: the level's WINDOW_DEFAULTS (for_level), set before training
    batch_size: int | None = None
    epochs: int = 20
    lr: float | None = None  # None: the preset's (textgen.model.presets); a saved run always has its rate
    carry_state: bool = False  # batches continue each other's text and recurrent state (truncated BPTT)
    lr_schedule: str = "wsd"  # shaped by the budget (see textgen.training.schedule), or "constant"
    # None, here and in the two below: the preset's (fine-tuning: the base's), set by `optimized`
    # before training; a saved run always has them
    optimizer: str | None = None  # "adamw", or "sgd": plain SGD, clipnorm bounding the gradients' global norm
    clipnorm: float | None = None  # 0 (or None in a saved run): no clipping
    weight_decay: float | None = None  # AdamW's decoupled weight decay; 0: Adam
    seed: int = 0
    precision: str = "auto"
    xla: bool = False  # jit_compile the training step (Keras turns it off again for cuDNN layers)
    val_fraction: float = 0.1
    max_val_tokens: int = 1_000_000
    early_stopping_patience: int = 3
    max_steps: int | None = None
    time_limit: float | None = None
    steps_per_epoch: int | None = None  # None: an epoch is one pass over the text
    backup_every: int | None = None  # steps; None: each epoch, and every 10 minutes within one
    strategy: str = "auto"  # tf.distribute strategy; batch_size is the global batch
    cpu_devices: int | None = None  # logical devices the CPU is split into (for mirrored)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise TextgenError("epochs must be at least 1")
        for name in ("seq_len", "batch_size", "max_steps", "steps_per_epoch", "backup_every", "cpu_devices"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise TextgenError(f"{name.replace('_', '-')} must be at least 1")
        if self.lr is not None and self.lr <= 0:
            raise TextgenError("lr must be positive")
        if self.lr_schedule not in LR_SCHEDULES:
            raise TextgenError(f"unknown lr-schedule {self.lr_schedule!r}; choose {', '.join(LR_SCHEDULES)}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise TextgenError(f"unknown optimizer {self.optimizer!r}; choose {', '.join(OPTIMIZERS)}")
        if self.weight_decay is not None and self.weight_decay < 0:
            raise TextgenError("weight-decay must be 0 (off) or more")
        if self.clipnorm is not None and self.clipnorm < 0:
            raise TextgenError("clipnorm must be 0 (off) or more")
        if self.precision not in PRECISIONS:
            raise TextgenError(f"unknown precision {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise TextgenError(f"unknown strategy {self.strategy!r}; choose one of {', '.join(STRATEGIES)}")
        if not 0.0 < self.val_fraction < 1.0:
            raise TextgenError("val-fraction must be between 0 and 1")

    def for_level(self, level: str) -> TrainConfig:
        """These settings with the level's window defaults where none was given."""
        seq_len, batch_size = WINDOW_DEFAULTS[level]
        return dataclasses.replace(self, seq_len=self.seq_len or seq_len,
                                   batch_size=self.batch_size or batch_size)

    def optimized(self, optimizer: str, lr: float, weight_decay: float | None = None) -> TrainConfig:
        """These settings training with `optimizer` at peak rate `lr`, with its clipping and weight
        decay (AdamW's: `weight_decay`, a preset's, or WEIGHT_DECAY) where none was given."""
        if optimizer == "sgd" and self.weight_decay:
            raise TextgenError("--weight-decay is AdamW's; SGD trains without it")
        decay = next(d for d in (self.weight_decay, weight_decay, WEIGHT_DECAY) if d is not None)
        if optimizer == "sgd":
            decay = 0.0
        return dataclasses.replace(self, optimizer=optimizer, lr=lr, weight_decay=decay,
                                   clipnorm=CLIPNORMS[optimizer] if self.clipnorm is None else self.clipnorm)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything written to `config.json` beside a trained model."""

    model: ModelConfig
    train: TrainConfig
    level: str = "char"
    corpus: dict[str, Any] = field(default_factory=dict)
    precision_used: str = "float32"
    strategy_used: str = "one-device"
    replicas: int = 1  # model copies trained in sync, over all workers
    workers: int = 1
    preset: dict[str, Any] = field(default_factory=dict)  # requested, used, planned_passes (auto)
    result: dict[str, Any] = field(default_factory=dict)
    init_from: dict[str, Any] | None = None  # fine-tuning: the base model and where it started (finetune.py)
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise TextgenError(
                f"model format version {version!r} is not supported "
                f"(this textgen reads version {FORMAT_VERSION})"
            )
        return cls(
            model=ModelConfig(**data["model"]),
            # runs saved before weight decay or a choice of optimizer existed trained (and resume)
            # with plain Adam
            train=TrainConfig(**{"weight_decay": 0.0, "optimizer": "adamw", **data["train"]}),
            level=data["level"],
            corpus=data.get("corpus", {}),
            precision_used=data.get("precision_used", "float32"),
            strategy_used=data.get("strategy_used", "one-device"),
            replicas=data.get("replicas", 1),
            workers=data.get("workers", 1),
            preset=data.get("preset", {}),
            result=data.get("result", {}),
            init_from=data.get("init_from"),
            format_version=version,
        )

    @classmethod
    def load(cls, path: Path) -> RunConfig:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
            return cls.from_dict(data)
        except TextgenError:
            raise
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TextgenError(f"{path}: not a valid textgen config ({exc.__class__.__name__})") from exc
