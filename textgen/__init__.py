"""textgen: train recurrent language models on your own text and generate from them.

    import textgen
    model = textgen.train("corpus.txt", epochs=5)
    print(model.generate("ROMEO:", length=200, temperature=0.8, seed=1))

TensorFlow is imported on first use, not on `import textgen`, so the CLI's help stays fast.
"""

from __future__ import annotations

from typing import Any

from textgen.errors import TextgenError

__version__ = "0.1.0"
__all__ = ["TextModel", "TextgenError", "__version__", "load", "load_sampler", "serve", "train", "tune"]


def __getattr__(name: str) -> Any:
    if name in ("TextModel", "load", "serve", "train", "tune"):
        from textgen import api

        return getattr(api, name)
    if name == "load_sampler":  # generation and evaluation in numpy: no TensorFlow
        from textgen.sampling_model import load_sampler

        return load_sampler
    raise AttributeError(f"module 'textgen' has no attribute {name!r}")
