"""The Python API: `train`, `tune`, `load` and the `TextModel` they return, and `serve`. The command
line calls these too."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError
from textgen.loading import load, open_model_folder
from textgen.store.config import TrainConfig
from textgen.store.ids_cache import CACHE_DIR
from textgen.text.records import RecordFormat
from textgen.text.tokenizers import DEFAULT_MAX_VOCAB
from textgen.text_model import TextModel
from textgen.training.options import DataOptions, InitOptions, ModelOptions, RunOptions
from textgen.training.run import train as run_training
from textgen.training.search_space import SearchOptions, SearchSpace
from textgen.training.tuning import tune as run_search

__all__ = ["TextModel", "load", "serve", "train", "tune"]
Sources = str | os.PathLike | Sequence[str | os.PathLike]


def train(sources: Sources, *, level: str | None = None, preset: str = "auto", cell: str | None = None,
          layers: int | None = None, units: int | None = None, embedding_dim: int | None = None,
          dropout: float | None = None, embedding_dropout: float | None = None,
          tie_weights: bool | None = None, max_vocab: int | None = None, encoding: str = "utf-8",
          val_file: str | None = None, tfds_data_dir: str | None = None, tfds_manual_dir: str | None = None,
          cache_ids: bool = False, name: str | None = None, output_dir: str = "saved_models",
          force: bool = False, resume: bool = False, verbose: int = 1, epoch_samples: bool = True,
          log: Callable[[str], None] = print, init_from: str | os.PathLike | None = None,
          init_checkpoint: str = "best", extend_vocab: bool = False, documents: str = "none",
          text_column: str | None = None, label_column: str | None = None, text_key: str | None = None,
          label_key: str | None = None, skip_bad_records: bool = False,
          **train_settings: Any) -> TextModel | None:
    """Train a model and return it; `train_settings` are TrainConfig fields (epochs, lr,
    steps_per_epoch, strategy, ...). The network, optimizer and learning rate come from `preset`
    (textgen.model.presets; "auto" sizes it by the budget), under the ones given here. With
    `strategy="multi-worker"`, only the chief saves and returns the model; the other workers
    return None.

    `level` and `max_vocab` left at None are char and 20000; the network settings left at None
    (`cell`, `layers`, `units`, `embedding_dim`, `dropout`, `embedding_dropout`, `tie_weights`, and
    `optimizer` and `lr` among `train_settings`) are the preset's; `clipnorm` and `weight_decay`
    left at None, the optimizer's (adamw: 1 and 0.1, or the preset's weight decay: 0.3 for char
    `large`; sgd: 0.25, and weight decay is an error). `cache_ids` keeps the tokenized text files in
    `output_dir/.ids-cache`; `log` receives the progress lines (when `verbose`).
    `init_from` fine-tunes a trained model (a folder or a name in `output_dir`): the network is
    then the base model's, and giving a setting that differs is an error; `extend_vocab` adds the
    new corpus's missing tokens to its vocabulary (and, for a model of one text moving onto
    records, the record tokens).
    Records (textgen.text.records): `.csv`, `.tsv` and `.jsonl` files always, text files with
    `documents` "lines", "blank-lines" or "separator:TEXT"; `text_column` / `text_key` name the
    text's field, `label_column` / `label_key` the label's; `skip_bad_records` skips (and counts)
    rows that cannot be read instead of stopping at the first.

    >>> model = textgen.train(corpus, level="word", cell="lstm", layers=1, units=16, seq_len=16,
    ...                       epochs=1, output_dir=models, name="words", verbose=0)
    >>> model.config.level, model.config.model.cell, model.config.result["epochs"]
    ('word', 'lstm', 1)
    >>> textgen.train(corpus, output_dir=models, name="words", verbose=0)
    Traceback (most recent call last):
    textgen.errors.TextgenError: model 'words' already exists in ...; pass --force to overwrite it ...
    """
    if init_from is None and (extend_vocab or init_checkpoint != "best"):
        raise TextgenError("extend_vocab and init_checkpoint go with init_from")
    vocabulary = {k: v for k, v in {"level": level, "max_vocab": max_vocab}.items() if v is not None}
    shape = {k: v for k, v in {"cell": cell, "layers": layers, "units": units, "embedding_dim": embedding_dim,
                               "tie_weights": tie_weights}.items() if v is not None}
    path = run_training(
        _data_options(sources, encoding, val_file, tfds_data_dir, tfds_manual_dir, cache_ids, output_dir,
                      _records(documents, text_column, label_column, text_key, label_key, skip_bad_records),
                      **vocabulary),
        ModelOptions(dropout=dropout, embedding_dropout=embedding_dropout, preset=preset, **shape),
        TrainConfig(**train_settings),
        RunOptions(name=name, output_dir=output_dir, force=force, resume=resume, verbose=verbose,
                   epoch_samples=epoch_samples, log=log),
        None if init_from is None else InitOptions(model=str(init_from), checkpoint=init_checkpoint,
                                                   extend_vocab=extend_vocab, given={**vocabulary, **shape}),
    )
    return None if path is None else open_model_folder(path, eager=False)


def tune(sources: Sources, *, trials: int = 10, tuner: str = "random", cells: Sequence[str] | None = None,
         layers: Any = None, units: Any = None, dropout: Any = None, lr: Any = None,
         max_steps: int | None = None, time_limit: float | None = None, level: str = "char",
         embedding_dim: int = 64, max_vocab: int | None = None, encoding: str = "utf-8",
         val_file: str | None = None, tfds_data_dir: str | None = None, tfds_manual_dir: str | None = None,
         cache_ids: bool = False, name: str | None = None, output_dir: str = "saved_models",
         force: bool = False, resume: bool = False, verbose: int = 1, log: Callable[[str], None] = print,
         documents: str = "none", text_column: str | None = None, label_column: str | None = None,
         text_key: str | None = None, label_key: str | None = None, skip_bad_records: bool = False,
         **train_settings: Any) -> TextModel | None:
    """Search cells, layers, units, dropout and learning rate with KerasTuner (`tuner` "random"
    or "hyperband") and return the best trial's model; its folder also holds the table of
    trials (`trials.csv`, `trials.json`). `layers`, `units`, `dropout` and `lr` are (min, max)
    or one value, `cells` a list (default: the level's ranges and every cell); `max_steps` is a
    trial's budget, `time_limit` the whole search's training time; `train_settings` are
    TrainConfig fields (seq_len, batch_size, epochs, seed, ...); records as `train` reads them.

    >>> model = textgen.tune(corpus, trials=2, cells=["gru", "lstm"], layers=1, units=8, max_steps=3,
    ...                      seq_len=32, output_dir=models, name="tuned", verbose=0)
    >>> import json
    >>> rows = json.loads((model.path / "trials.json").read_text())
    >>> len(rows), rows[0]["val_loss"] == model.config.result["best_val_loss"]
    (2, True)
    """
    path = run_search(
        _data_options(sources, encoding, val_file, tfds_data_dir, tfds_manual_dir, cache_ids, output_dir,
                      _records(documents, text_column, label_column, text_key, label_key, skip_bad_records),
                      level=level, max_vocab=max_vocab or DEFAULT_MAX_VOCAB),
        SearchSpace.for_level(level, cells=cells, layers=layers, units=units, dropout=dropout, lr=lr,
                              embedding_dim=embedding_dim),
        TrainConfig(**train_settings),
        SearchOptions(trials=trials, tuner=tuner, max_steps=max_steps, time_limit=time_limit),
        RunOptions(name=name, output_dir=output_dir, force=force, resume=resume, verbose=verbose, log=log),
    )
    return None if path is None else open_model_folder(path, eager=False)


def _data_options(sources: Sources, encoding: str, val_file: str | None, tfds_data_dir: str | None,
                  tfds_manual_dir: str | None, cache_ids: bool, output_dir: str, records: RecordFormat,
                  **vocabulary: Any) -> DataOptions:
    """The text options `train` and `tune` share."""
    sources = [sources] if isinstance(sources, (str, os.PathLike)) else sources
    return DataOptions(sources=[str(s) for s in sources], encoding=encoding, val_file=val_file,
                       tfds_data_dir=tfds_data_dir, tfds_manual_dir=tfds_manual_dir,
                       cache_dir=str(Path(output_dir) / CACHE_DIR) if cache_ids else None, records=records,
                       **vocabulary)


def _records(documents: str, text_column: str | None, label_column: str | None, text_key: str | None,
             label_key: str | None, skip_bad: bool) -> RecordFormat:
    return RecordFormat(documents=documents, text_column=text_column, label_column=label_column,
                        text_key=text_key, label_key=label_key, skip_bad=skip_bad)


def serve(models: Sources, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          output_dir: str = "saved_models", **settings: Any) -> None:
    """Serve models over HTTP until SIGTERM or Ctrl-C: OpenAI's `/v1/completions` with continuous
    batching, `/v1/models`, `/health`, and the playground at `/`. `models` are model folders or names,
    `.tflite` files or SavedModel folders (`NAME=MODEL` names one); `settings` are
    textgen.serving.serve's (max_batch, max_queue, limits, cors_origins, drain_seconds, log). The
    app alone, for an ASGI server of your own: textgen.serving.create_app."""
    from textgen.serving import serve as run_server  # Starlette and uvicorn: the [serve] extra

    models = [models] if isinstance(models, (str, os.PathLike)) else models
    run_server([str(m) for m in models], host=host, port=port, api_key=api_key, output_dir=output_dir,
               **settings)
