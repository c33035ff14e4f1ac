"""A trained model as the Python API hands it out: generate text from it, measure it on held-out
text, check how much it copies, export it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from textgen.export.write import ExportResult, export
from textgen.generate.evaluation import WindowLosses
from textgen.generate.generator import Generator
from textgen.model.network import load_network
from textgen.sampling_model import SamplingModel
from textgen.store import artifacts
from textgen.store.config import RunConfig
from textgen.text.tokenizers import Tokenizer


class TextModel(SamplingModel):
    """A trained textgen model: generate text from it, or measure it on held-out text.

    >>> model = textgen.load(tiny)
    >>> model
    TextModel('.../tiny', char, gru 1x16, vocab 59)
    >>> model.config.result["stopped"]
    'max_steps'
    """

    def __init__(self, path: Path, tokenizer: Tokenizer, config: RunConfig, history: dict,
                 keras_model: keras.Model | None = None, *, checkpoint: str = "best"):
        """`keras_model` None: the checkpoint's file is read when the network is first needed."""
        super().__init__(path, tokenizer, config, history, checkpoint=checkpoint)
        self._keras_model = keras_model

    @property
    def keras_model(self) -> keras.Model:
        """The underlying Keras network (token ids [batch, time] -> logits [batch, time, vocab])."""
        if self._keras_model is None:
            self._keras_model = load_network(artifacts.checkpoint_path(self.path, self._checkpoint))
        return self._keras_model

    def _make_generator(self) -> Any:
        return Generator(self.keras_model, self.tokenizer)

    def export(self, output: str | os.PathLike | None = None, *, format: str = "all",
               quantize: str = "none", force: bool = False) -> ExportResult:
        """Write a SavedModel and/or a TFLite file (default folder: the model's `export/`), each
        checked against this model; returns what was written and the measured parity.

        >>> result = textgen.load(tiny).export(force=True)
        >>> sorted(result.files)
        ['metadata.json', 'model.tflite', 'saved_model/fingerprint.pb', 'saved_model/saved_model.pb', ...]
        >>> check = result.parity["tflite"]
        >>> check["max_abs_logit_diff"] < 1e-4, check["greedy_text_identical"]
        (True, True)
        >>> phone = textgen.load(result.path / "model.tflite")    # run by LiteRT
        >>> phone.generate("ROMEO:", 50, seed=1) == textgen.load(tiny).generate("ROMEO:", 50, seed=1)
        True
        """
        return export(self, Path(output) if output is not None else None, format, quantize, force)

    def _window_losses(self) -> WindowLosses:
        """The Keras network's cross-entropy of each window's targets."""
        model = self.keras_model

        @tf.function(reduce_retracing=True)
        def losses(ids):
            logits = model(ids[:, :-1], training=False)
            return keras.losses.sparse_categorical_crossentropy(ids[:, 1:], logits, from_logits=True)

        return lambda ids: losses(tf.constant(ids)).numpy()
