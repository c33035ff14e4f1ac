"""What a user asks of a run: where the text comes from, the network, where the model goes, and
a base model to fine-tune. Plain frozen settings; `plan` turns them into a run."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from textgen.text.records import RecordFormat
from textgen.text.tokenizers import DEFAULT_MAX_VOCAB

Log = Callable[[str], None]


def silent(message: str) -> None:
    """A log that says nothing (`verbose=0`)."""


@dataclass(frozen=True, kw_only=True)
class DataOptions:
    """Where the text comes from and how it is cut into tokens (shared by train and tune)."""

    sources: Sequence[str]
    level: str = "char"
    max_vocab: int = DEFAULT_MAX_VOCAB
    encoding: str = "utf-8"
    val_file: str | None = None
    tfds_data_dir: str | None = None
    tfds_manual_dir: str | None = None
    cache_dir: str | None = None  # keep tokenized text files here (store.ids_cache); None: no cache
    records: RecordFormat | None = None  # how records are read (text.records); None: text as one stream


@dataclass(frozen=True, kw_only=True)
class ModelOptions:
    """Network shape: a preset (textgen.model.presets), and the settings the user gave on top of it
    (None: the preset's). The vocabulary size comes from the tokenizer."""

    cell: str | None = None
    layers: int | None = None
    units: int | None = None
    embedding_dim: int | None = None
    dropout: float | None = None
    embedding_dropout: float | None = None
    tie_weights: bool | None = None
    preset: str = "auto"

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "preset"}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """Where the model goes and how the run behaves (shared by train and tune)."""

    name: str | None = None
    output_dir: str = "saved_models"
    force: bool = False
    resume: bool = False
    verbose: int = 1
    epoch_samples: bool = True
    log: Log = field(default=print)

    @property
    def logger(self) -> Log:
        """Where progress lines go: `log`, or nowhere when not verbose."""
        return self.log if self.verbose else silent


@dataclass(frozen=True, kw_only=True)
class InitOptions:
    """Start a run from a trained model (fine-tuning), and how."""

    model: str  # a model folder, or a name in the output folder
    checkpoint: str = "best"  # or "last"
    extend_vocab: bool = False
    # settings the user gave explicitly (not defaults): each must agree with the base model
    given: Mapping[str, Any] = field(default_factory=dict)
