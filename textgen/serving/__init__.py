"""Serving models over HTTP: an OpenAI-compatible completions API with continuous batching, and
a playground page (`textgen serve`, `textgen.serve`).

Under an ASGI server of your own: `uvicorn --factory textgen.serving:from_environment`, with the
models in TEXTGEN_MODELS (comma-separated, as `textgen serve` takes them) and the key, if any, in
TEXTGEN_API_KEY.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from textgen.serving.app import ServerState, create_app
from textgen.serving.models import load_models
from textgen.serving.protocol import Limits
from textgen.serving.server import API_KEY_VARIABLE, serve

__all__ = ["Limits", "ServerState", "create_app", "from_environment", "load_models", "serve"]


def from_environment() -> Starlette:
    """The app over the models TEXTGEN_MODELS names (an ASGI factory)."""
    specs = [spec for spec in os.environ.get("TEXTGEN_MODELS", "").split(",") if spec.strip()]
    output_dir = os.environ.get("TEXTGEN_OUTPUT_DIR", "saved_models")
    state = ServerState(models=load_models(specs, output_dir=output_dir),
                        api_key=os.environ.get(API_KEY_VARIABLE) or None)
    return create_app(state, log=print)
