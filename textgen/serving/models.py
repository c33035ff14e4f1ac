"""The models a server holds: each loaded once at start (safe mode), named, with its engine."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from textgen.errors import TextgenError
from textgen.export.litert import state_sizes
from textgen.export.web import WEB_DIR
from textgen.exported_model import ExportedTextModel
from textgen.generate.step_generator import StepGenerator
from textgen.loading import load
from textgen.serving.backends import GeneratorBackend, StepBackend
from textgen.serving.engine import Engine, batch_sizes
from textgen.store.artifacts import EXPORT_DIR, EXPORT_METADATA_FILE
from textgen.text_model import TextModel


@dataclass(frozen=True)
class ServedModel:
    name: str
    model: TextModel
    engine: Engine
    kind: str  # "keras", "tflite" or "savedmodel"
    created: int  # when it was loaded (OpenAI's `created`)
    web: Path | None = None  # its web export (`textgen export --format web`), served at /web/NAME/

    @property
    def labels(self) -> list[str]:
        """The labels a request may ask for (a model of labelled records; none otherwise)."""
        specials = self.model.tokenizer.specials
        return list(specials.labels) if specials is not None else []


def web_folder(model: TextModel) -> Path | None:
    """The web export beside a model folder's other exports, or beside an export file."""
    exports = model.path.parent if isinstance(model, ExportedTextModel) else model.path / EXPORT_DIR
    folder = exports / WEB_DIR
    return folder if (folder / EXPORT_METADATA_FILE).is_file() else None


def model_name(model: TextModel) -> str:
    """The name clients ask for: NAME from `NAME=PATH`; a model folder's name; for an export, the
    name of the model it came from and its kind (`shakespeare-char-tflite`)."""
    if isinstance(model, ExportedTextModel):
        return f"{model.metadata['textgen']['model']}-{model.kind}"
    return model.path.name


def load_models(specs: list[str], *, output_dir: str | os.PathLike = "saved_models", max_batch: int = 64,
                max_queue: int = 256) -> dict[str, ServedModel]:
    """Load every model (`MODEL` or `NAME=MODEL`, as `sample` takes MODEL), make its engine and
    compile its loop for every batch size, before the server opens its port."""
    if not specs:
        raise TextgenError("give at least one model to serve")
    served: dict[str, ServedModel] = {}
    for spec in specs:
        name, _, path = spec.rpartition("=") if "=" in spec and not Path(spec).exists() else ("", "", spec)
        model = load(path, output_dir=output_dir)
        name = name or model_name(model)
        if name in served:
            raise TextgenError(f"two models are named {name!r}; name them: NAME={path}")
        if isinstance(model, ExportedTextModel) and model.kind == "savedmodel":
            backend = StepBackend(_step_sampler(model))
            kind = "savedmodel"
        elif isinstance(model, ExportedTextModel):
            backend, kind = StepBackend(model.generator), "tflite"
        else:
            backend, kind = GeneratorBackend(model.generator), "keras"
        backend.warm_up(batch_sizes(max_batch))
        engine = Engine(backend, max_batch=max_batch, max_queue=max_queue, name=name)
        served[name] = ServedModel(name, model, engine, kind, int(time.time()), web_folder(model))
    return served


def _step_sampler(model: ExportedTextModel) -> StepGenerator:
    """A SavedModel served through its `step` signature, token by token, like a `.tflite` (its
    `serving_default` runs a whole request in one call, which cannot share a batch)."""
    return StepGenerator(model.runner, model.tokenizer, state_sizes(model.metadata))
