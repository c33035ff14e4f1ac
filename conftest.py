"""Names the API docstrings' examples use, so pytest runs them as doctests (`textgen/`): a corpus
cut from the bundled tiny shakespeare, held-out text, a models folder, and `tiny`, a model trained
once for all of them, so that each docstring's examples stand alone."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@pytest.fixture(scope="session")
def doctest_files(tmp_path_factory) -> dict:
    import textgen
    from textgen.datasets import tiny_shakespeare_path

    folder = tmp_path_factory.mktemp("doctest")
    text = tiny_shakespeare_path().read_text(encoding="utf-8")
    (folder / "corpus.txt").write_text(text[:20_000], encoding="utf-8")
    (folder / "held_out.txt").write_text(text[-5_000:], encoding="utf-8")
    tiny = textgen.train(str(folder / "corpus.txt"), layers=1, units=16, seq_len=32, max_steps=5,
                         output_dir=str(folder / "tiny-models"), name="tiny", verbose=0)
    return {"textgen": textgen, "corpus": str(folder / "corpus.txt"), "models": str(folder / "models"),
            "held_out": str(folder / "held_out.txt"), "tiny": str(tiny.path)}


@pytest.fixture(autouse=True)
def doctest_names(request, doctest_namespace):
    """Only doctests ask for the files (tests have fixtures of their own)."""
    if isinstance(request.node, pytest.DoctestItem):
        doctest_namespace.update(request.getfixturevalue("doctest_files"))
