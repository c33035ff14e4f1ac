"""`load`: a model folder (or a name in the output folder), or an export, as a TextModel."""

from __future__ import annotations

import os
from pathlib import Path

from textgen.errors import TextgenError
from textgen.exported_model import load_export
from textgen.model.network import load_network
from textgen.store import artifacts
from textgen.text_model import TextModel


def load(model: str | os.PathLike, *, checkpoint: str = "best",
         output_dir: str | os.PathLike = "saved_models") -> TextModel:
    """Load a model folder (or a model name inside `output_dir`), or an exported `.tflite` file or
    SavedModel folder (run by LiteRT or TensorFlow, to check an export before shipping it).

    >>> textgen.load(tiny).config.level
    'char'
    >>> textgen.load("no-such-model", output_dir=models)
    Traceback (most recent call last):
    textgen.errors.TextgenError: no-such-model: no such model (looked in ...)
    """
    candidate = Path(model).expanduser()
    if artifacts.is_export(candidate):
        return load_export(candidate)
    if artifacts.is_export_folder(candidate):
        raise TextgenError(f"{candidate} is an export folder; pass the file or folder to run: "
                           f"{candidate / artifacts.TFLITE_FILE} or {candidate / artifacts.SAVED_MODEL_DIR}")
    return open_model_folder(artifacts.resolve_model_dir(model, output_dir), checkpoint, eager=True)


def open_model_folder(path: Path, checkpoint: str = "best", *, eager: bool = True) -> TextModel:
    """A model folder as a TextModel; its network is read now (`eager`, so that a broken file is an
    error here) or when first needed."""
    tokenizer, config, history = artifacts.read_model_folder(path)
    weights = artifacts.checkpoint_path(path, checkpoint)
    return TextModel(path, tokenizer, config, history, load_network(weights) if eager else None,
                     checkpoint=checkpoint)
