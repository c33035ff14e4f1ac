"""An exported model (a `.tflite` file or a SavedModel folder) behind the API of a trained one, so
that users check an export before shipping it: generate, stream and evaluate as before export."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError
from textgen.export.litert import LiteRTStep, export_config, export_tokenizer, read_metadata, state_sizes
from textgen.export.runtime import SavedModelStep, ServingGenerator
from textgen.generate.evaluation import WindowLosses, step_window_losses
from textgen.generate.step_generator import StepGenerator, StepRunner
from textgen.text_model import TextModel


class ExportedTextModel(TextModel):
    """An export run by LiteRT (`.tflite`) or TensorFlow (SavedModel), with its metadata.json."""

    keras_model = None  # an export has no Keras network

    def __init__(self, path: Path, metadata: dict):
        tokenizer = export_tokenizer(metadata)
        super().__init__(path, tokenizer, export_config(metadata), {})
        self.metadata = metadata
        if path.suffix == ".tflite":
            self.kind = "tflite"
            self.runner: StepRunner = LiteRTStep(path)
            self._generator = StepGenerator(self.runner, tokenizer, state_sizes(metadata))
        else:
            import tensorflow as tf

            self.kind = "savedmodel"
            loaded = tf.saved_model.load(str(path))
            self.runner = SavedModelStep(loaded)
            self._generator = ServingGenerator(loaded, tokenizer)
            self._loaded = loaded  # keeps the signatures' variables alive

    def __repr__(self) -> str:
        m = self.config.model
        return (f"ExportedTextModel({str(self.path)!r}, {self.kind}, {self.config.level}, "
                f"{m.cell} {m.layers}x{m.units}, vocab {m.vocab_size})")

    def export(self, output: str | os.PathLike | None = None, **options: Any) -> Any:
        raise TextgenError(f"{self.path} is an export already; export the model it came from")

    def _window_losses(self) -> WindowLosses:
        return step_window_losses(self.runner, state_sizes(self.metadata))


def load_export(path: Path) -> ExportedTextModel:
    """A `.tflite` file or a SavedModel folder written by `textgen export`."""
    if not path.exists():
        raise TextgenError(f"{path}: no such file or folder")
    return ExportedTextModel(path, read_metadata(path.parent))
