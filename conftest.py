"""Names the API docstrings' examples use, so pytest runs them as doctests (`textgen/api.py`)."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session", autouse=True)
def doctest_files(doctest_namespace, tmp_path_factory):
    import textgen
    from textgen.datasets import tiny_shakespeare_path

    folder = tmp_path_factory.mktemp("doctest")
    text = tiny_shakespeare_path().read_text(encoding="utf-8")
    (folder / "corpus.txt").write_text(text[:20_000], encoding="utf-8")
    (folder / "held_out.txt").write_text(text[-5_000:], encoding="utf-8")
    doctest_namespace.update(textgen=textgen, corpus=str(folder / "corpus.txt"),
                             held_out=str(folder / "held_out.txt"), models=str(folder / "models"))
