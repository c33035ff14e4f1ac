"""Fine-tuning (`train --init-from MODEL`): a new run that starts from a trained model.

The base model gives the architecture, the vocabulary and the starting weights; the optimizer
starts fresh, and every training setting is the new run's. The base folder is only read. By
default the base vocabulary is kept, so tokens of the new corpus that it lacks become <unk>;
`extend_vocab` appends them instead, growing the embedding and the output layer by freshly
initialised rows while every known token keeps its weights.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from textgen.errors import TextgenError, TextgenWarning
from textgen.model.network import load_network
from textgen.store import artifacts
from textgen.store.catalog import human_share
from textgen.store.config import ModelConfig, RunConfig, TrainConfig
from textgen.text.base import Corpus
from textgen.text.records import RecordCorpus
from textgen.text.tokenizers import BOS, EOS, Tokenizer, label_token, most_frequent
from textgen.training.options import InitOptions

ARCHITECTURE = ("cell", "layers", "units", "embedding_dim", "tie_weights")  # fixed by the base model
INIT_WEIGHTS = "init.weights.h5"  # in the run folder: where --resume starts when no backup is complete
LOGITS = "logits"  # the output layer's name (network.build_model)
EMBEDDING = "embedding"  # with tied weights, the embedding holds the output bias instead
SHOWN_MISSING = 10  # the most frequent missing pieces named in the warning


class UnknownTokensWarning(TextgenWarning):
    """Tokens of the new corpus are not in the vocabulary of the model it fine-tunes: they are <unk>."""


@dataclass(frozen=True)
class Start:
    """What a new fine-tuning run starts from, read from the base model before anything is written."""

    base_dir: Path
    base: RunConfig
    tokenizer: Tokenizer  # the base's vocabulary, possibly with tokens appended
    weights: dict[str, list[np.ndarray]]  # the base's, by layer name
    added_biases: np.ndarray  # output biases of the appended tokens
    record: dict[str, Any]  # config.json's "init_from"

    @property
    def architecture(self) -> dict[str, Any]:
        return {name: getattr(self.base.model, name) for name in ARCHITECTURE}


def settings(start: Start, dropout: float | None, config: TrainConfig, vocab_size: int,
             embedding_dropout: float | None = None) -> tuple[ModelConfig, TrainConfig]:
    """The new run's network (the base's, with the user's dropouts if given; they have no
    weights) and its optimizer: the user's, or the base's with its peak rate, clipping and weight
    decay where the user gave none."""
    model = ModelConfig(vocab_size=vocab_size, **start.architecture,
                        dropout=start.base.model.dropout if dropout is None else dropout,
                        embedding_dropout=start.base.model.embedding_dropout if embedding_dropout is None
                        else embedding_dropout)
    return model, _training(start.base.train, config)


def _training(base: TrainConfig, config: TrainConfig) -> TrainConfig:
    optimizer = config.optimizer or base.optimizer
    if optimizer != base.optimizer:  # only the optimizer's own defaults carry over
        if config.lr is None:
            raise TextgenError(f"--optimizer {optimizer} needs --lr: the base model's rate is for "
                               f"{base.optimizer}")
        return config.optimized(optimizer, config.lr)
    if config.clipnorm is None:
        config = dataclasses.replace(config, clipnorm=base.clipnorm or 0.0)  # a saved None: no clipping
    if optimizer == "adamw" and config.weight_decay is None:
        config = dataclasses.replace(config, weight_decay=base.weight_decay)
    return config.optimized(optimizer, config.lr or base.lr)


def resolve_base(model: str, output_dir: str) -> Path:
    """The base model's folder, as an absolute path (an export cannot be trained further)."""
    path = Path(model).expanduser()
    for candidate in (path, Path(output_dir) / path):
        if candidate.exists() and (artifacts.is_export(candidate) or artifacts.is_export_folder(candidate)):
            raise TextgenError(f"{candidate} is an export, which cannot be trained further; --init-from "
                               "takes the model folder it was exported from")
    return artifacts.resolve_model_dir(model, output_dir).resolve()


def check_target(base_dir: Path, model_dir: Path) -> None:
    if model_dir.resolve() == base_dir:
        raise TextgenError(f"the fine-tuned model would replace its base model {base_dir}; the base is never "
                           "modified: choose another --name")


def check_resume(options: InitOptions, saved: RunConfig, name: str) -> None:
    """--resume continues a run from its own files: --init-from may only repeat the run's own base."""
    if saved.init_from is None:
        raise TextgenError(f"run {name!r} was not started from a base model; drop --init-from to resume it")
    if Path(saved.init_from["path"]) != Path(options.model):
        raise TextgenError(f"run {name!r} was fine-tuned from {saved.init_from['path']}, not "
                           f"{options.model}; drop --init-from to resume it from its own backup")


def plan(options: InitOptions, corpus: Corpus, max_vocab: int, config: TrainConfig) -> Start:
    """Check the settings against the base, load its weights, and choose the vocabulary.

    `options.model` is the base's folder (`resolve_base`). Reads the new corpus once, to count what
    the base vocabulary lacks. Records need <bos>, <eos> and their labels' tokens: a base without
    them (trained on one text, or on other labels) gets them with `extend_vocab`.
    """
    base_dir = Path(options.model)
    base = RunConfig.load(base_dir / artifacts.CONFIG_FILE)
    _check_given(options, base, base_dir)
    _training(base.train, config)  # its mistakes, before the corpus is read
    tokenizer, _, _ = artifacts.read_model_folder(base_dir)
    keras_model = load_network(artifacts.checkpoint_path(base_dir, options.checkpoint))
    weights = {layer.name: layer.get_weights() for layer in keras_model.layers if layer.weights}
    del keras_model

    records = isinstance(corpus, RecordCorpus)
    counts = dict(type(tokenizer).count(corpus.chunks(), separate=records))
    total = sum(counts.values())
    known = set(tokenizer.tokens)
    controls = {token: n for token, n in _control_counts(corpus).items() if token not in known}
    if controls and not options.extend_vocab:
        raise TextgenError(f"the base model's vocabulary lacks {', '.join(list(controls)[:10])}, which these "
                           "records need; --extend-vocab adds them")
    missing = {token: n for token, n in counts.items() if token not in known}
    room = max_vocab - tokenizer.vocab_size - len(controls)
    if room < 0:
        raise TextgenError(f"--max-vocab {max_vocab:,} leaves no room for the {len(controls):,} record and "
                           "label tokens the base model lacks")
    added = most_frequent(missing, room) if options.extend_vocab else []
    for token in added:
        del missing[token]
    unknown = sum(missing.values())
    # line breaks (which files are joined with) and spaces alone give a model nothing to learn from
    if any(not token.isspace() for token in missing) and all(token.isspace() for token in counts
                                                             if token not in missing):
        raise TextgenError(f"the base model's vocabulary has none of the new corpus's {tokenizer.level}s but "
                           f"spaces and line breaks (it lacks {_examples(missing)}); "
                           + ("--max-vocab leaves no room to add them" if options.extend_vocab
                              else "--extend-vocab adds them"))
    if unknown:
        hint = (f"the vocabulary is full at --max-vocab {max_vocab:,}" if options.extend_vocab
                else "--extend-vocab adds them to the vocabulary")
        warnings.warn(f"{unknown:,} of the new corpus's {total:,} tokens ({human_share(unknown, total)}) "
                      f"are not in the base model's vocabulary and become <unk>, most often "
                      f"{_examples(missing)}; {hint}", UnknownTokensWarning, stacklevel=2)
    added += list(controls)
    biases = _added_biases(weights[_scoring_layer(weights)][1], tokenizer, {**counts, **controls}, added,
                           total)
    record = {"path": str(base_dir), "checkpoint": options.checkpoint, "result": base.result,
              "base_vocab_size": tokenizer.vocab_size, "added_tokens": len(added),
              "corpus_tokens": total, "unknown_tokens": unknown}
    return Start(base_dir, base, tokenizer.extended(added), weights, biases, record)


def _control_counts(corpus: Corpus) -> dict[str, int]:
    """How often records put each control token in the stream: <bos> and <eos> once per record, a
    label's token once per record of that label (one text: none)."""
    if not isinstance(corpus, RecordCorpus):
        return {}
    per_label = Counter(record.label for record in corpus.records())  # one pass; None: no label
    records = sum(per_label.values())
    return {BOS: records, EOS: records, **{label_token(label): n for label, n in per_label.most_common()
                                           if label is not None}}


def _check_given(options: InitOptions, base: RunConfig, base_dir: Path) -> None:
    """An explicit setting that the base model fixes otherwise is a mistake, not a wish to ignore."""
    given, m = options.given, base.model
    wanted = {**{name: getattr(m, name) for name in ARCHITECTURE}, "level": base.level}
    conflicts = [f"--{name.replace('_', '-')} {given[name]}" for name in wanted
                 if name in given and given[name] != wanted[name]]
    if conflicts:
        verb, them = ("contradicts", "it") if len(conflicts) == 1 else ("contradict", "them")
        raise TextgenError(f"{', '.join(conflicts)} {verb} the base model {base_dir} ({m.cell.upper()} "
                           f"{m.layers}x{m.units}, embedding {m.embedding_dim}, {base.level} level): "
                           f"fine-tuning keeps its architecture and level; drop {them}")
    if "max_vocab" in given and not options.extend_vocab:
        raise TextgenError(f"--max-vocab applies to fine-tuning only with --extend-vocab: the base model's "
                           f"vocabulary ({m.vocab_size:,} tokens) is reused as it is")
    if given.get("max_vocab", m.vocab_size) < m.vocab_size:
        raise TextgenError(f"--max-vocab {given['max_vocab']:,} is smaller than the base model's vocabulary "
                           f"({m.vocab_size:,} tokens), which --extend-vocab keeps whole")


def _examples(counts: dict[str, int]) -> str:
    return ", ".join(f"{token!r} ({n:,})" for token, n in
                     ((token, counts[token]) for token in most_frequent(counts, SHOWN_MISSING)))


def _added_biases(bias: np.ndarray, tokenizer: Tokenizer, counts: dict[str, int], added: list[str],
                  total: int) -> np.ndarray:
    """Output biases for appended tokens: the log of their share of the new corpus, shifted as the base's
    biases sit above the log shares of the tokens it knows, so a new token starts about as likely as
    it is frequent instead of at a random logit."""
    shifts = [bias[token_id] - math.log(counts[token] / total)
              for token_id, token in enumerate(tokenizer.tokens, start=1) if counts.get(token)]
    shift = float(np.median(shifts)) if shifts else 0.0
    return np.array([shift + math.log(counts[token] / total) for token in added], dtype=bias.dtype)


def begin(start: Start, model: keras.Model, val_ds: Any, run_dir: Path, log: Callable[[str], None]) -> dict:
    """Load the base's weights into this run's model, measure them on its validation text, and keep a
    copy in the run folder; returns config.json's "init_from"."""
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([_grown(fresh, base) for fresh, base in
                               zip(layer.get_weights(), start.weights[layer.name], strict=True)])
    if len(start.added_biases):
        scoring = model.get_layer(_scoring_layer([layer.name for layer in model.layers]))
        kernel, bias = scoring.get_weights()
        bias[len(bias) - len(start.added_biases):] = start.added_biases
        scoring.set_weights([kernel, bias])
    loss = float(model.evaluate(val_ds, verbose=0, return_dict=True)["loss"])
    saving = run_dir / f"saving.{INIT_WEIGHTS}"
    model.save_weights(saving)
    saving.replace(run_dir / INIT_WEIGHTS)
    record = start.record
    added = record["added_tokens"]
    vocabulary = (f"vocabulary {start.tokenizer.vocab_size:,} = the base's {record['base_vocab_size']:,} + "
                  f"{added:,} new token{'s' * (added != 1)}" if added
                  else f"its vocabulary of {record['base_vocab_size']:,} tokens")
    log(f"Fine-tuning {start.base_dir} ({record['checkpoint']} checkpoint, {vocabulary}, a fresh optimizer): "
        f"val_loss {loss:.4f} on this run's validation text before the first step.")
    return {**record, "base_val_loss": loss}


def _scoring_layer(names: Iterable[str]) -> str:
    """The layer whose second weight is the output bias: the output layer, or a tied embedding
    (network.TiedEmbedding: [embeddings, bias])."""
    return LOGITS if LOGITS in names else EMBEDDING


def _grown(fresh: np.ndarray, base: np.ndarray) -> np.ndarray:
    """The base's weights; where the vocabulary grew, the fresh rows of the new tokens after them."""
    if fresh.shape == base.shape:
        return base
    grown = fresh.copy()
    grown[tuple(slice(0, n) for n in base.shape)] = base
    return grown


def restore(model: keras.Model, run_dir: Path) -> None:
    """A resumed fine-tuning run starts again from its own copy of the base's weights (a backup, if
    there is one, replaces them when training begins), never from the base folder, which may have
    changed since."""
    path = run_dir / INIT_WEIGHTS
    if not path.is_file():
        raise TextgenError(f"{path}: missing, so this fine-tuning run cannot be resumed; start it again with "
                           "--force")
    model.load_weights(path)
