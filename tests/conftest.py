"""Shared fixtures: small real corpora cut from tiny shakespeare, and tiny trained models."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# XLA's compiled code (textgen.compile_cache) goes to a folder of the run, removed at its end, not
# to the user's cache
if "TEXTGEN_XLA_CACHE" not in os.environ:
    os.environ["TEXTGEN_XLA_CACHE"] = tempfile.mkdtemp(prefix="textgen-xla-")
    atexit.register(shutil.rmtree, os.environ["TEXTGEN_XLA_CACHE"], ignore_errors=True)
# A shell without job control starts background commands (`pytest &`) with Ctrl-C ignored, which
# their children inherit: the Ctrl-C tests would see no interrupt. Tests send their own SIGINTs.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest

from helpers import CELLS, CHROMIUM_ARGS, TINY, chromium_path, shakespeare, train
from serving import KEY, LONG, Server


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory) -> Path:
    """The first 20,000 characters of tiny shakespeare."""
    path = tmp_path_factory.mktemp("corpus") / "shakespeare.txt"
    path.write_text(shakespeare()[:20_000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def held_out_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("held_out") / "held_out.txt"
    path.write_text(shakespeare()[-5_000:], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def char_model(tmp_path_factory, corpus_file) -> Path:
    """A tiny trained char model (GRU), shared by the sampling and evaluation tests."""
    from textgen.cli import main

    out = tmp_path_factory.mktemp("models")
    assert main(["train", str(corpus_file), *TINY, "--epochs", "2", "--output-dir", str(out),
                 "--name", "char"]) == 0
    return out / "char"


@pytest.fixture(scope="session")
def word_model(tmp_path_factory, corpus_file) -> Path:
    from textgen.cli import main

    out = tmp_path_factory.mktemp("models")
    assert main(["train", str(corpus_file), *TINY, "--level", "word", "--seq-len", "16",
                 "--epochs", "1", "--output-dir", str(out), "--name", "word", "--cell", "lstm"]) == 0
    return out / "word"


@pytest.fixture(scope="session")
def tflite_file(char_model, tmp_path_factory) -> Path:
    """The char model's float TFLite export."""
    import textgen

    folder = tmp_path_factory.mktemp("export") / "export"
    assert textgen.load(char_model).export(folder, format="tflite").path == folder
    return folder / "model.tflite"


@pytest.fixture(scope="session")
def server(char_model, word_model, tflite_file, tmp_path_factory):
    """One `textgen serve` process for the server and playground tests: the char model as `char`, the
    word model as `word`, the TFLite file (`char-tflite`), a key, 8 rows, room for 8 waiting requests."""
    process = Server([f"char={char_model}", f"word={word_model}", tflite_file, "--api-key", KEY,
                      "--max-batch", "8", "--max-queue", "8", "--max-prompt-tokens", "200",
                      "--max-body-bytes", "4096", "--max-tokens", LONG],
                     tmp_path_factory.mktemp("server") / "server.log")
    yield process
    assert process.stop() == 0


@pytest.fixture(scope="session")
def served_models(char_model, word_model, tflite_file) -> dict:
    """The served models, loaded here: what `textgen sample` gives is the reference."""
    import textgen

    return {"char": textgen.load(char_model), "word": textgen.load(word_model),
            "char-tflite": textgen.load(tflite_file)}


@pytest.fixture(scope="module")
def browser():
    """Chromium, driven by Playwright (the playground and web export tests). Per module: Playwright's
    synchronous API keeps an event loop running in this thread while it is open, where other
    modules' tests run loops of their own."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def exported(tmp_path_factory, corpus_file) -> dict[str, Path]:
    """One small char model per cell, exported (SavedModel, float TFLite, web) by the CLI."""
    from textgen.cli import main

    out = tmp_path_factory.mktemp("export_models")
    models = {}
    for cell in CELLS:
        model = train(out, corpus_file, cell, "--cell", cell, "--max-steps", "30")
        assert main(["export", str(model)]) == 0
        models[cell] = model
    return models


@pytest.fixture(scope="session")
def exported_word(word_model) -> Path:
    """The word model, exported in every format."""
    from textgen.cli import main

    assert main(["export", str(word_model), "--force"]) == 0
    return word_model
