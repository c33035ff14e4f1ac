"""The repository stands alone: the corpus the suite and the README need ships in the package, and
`tfds:tiny_shakespeare` trains from that copy when its download host cannot be reached."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpers import SHAKESPEARE, TINY, run_cli, shakespeare

ROOT = Path(__file__).resolve().parents[1]


def test_the_bundled_corpus_is_the_file_tfds_downloads():
    import tensorflow_datasets as tfds

    (url_info,) = tfds.builder("tiny_shakespeare").url_infos.values()
    assert len(shakespeare()) == 1_115_394 and SHAKESPEARE.name == url_info.filename == "input.txt"
    assert hashlib.sha256(SHAKESPEARE.read_bytes()).hexdigest() == url_info.checksum


def test_nothing_in_tests_or_bench_reaches_outside_the_repository():
    outside = re.compile("|".join([r"\.\./" + "shared", "TEXTGEN_" + "SHARED", r'/ "' + 'shared"']))
    files = [path for folder in ("tests", "bench") for path in (ROOT / folder).rglob("*")
             if path.suffix in (".py", ".md", ".sh")]
    offenders = [str(p.relative_to(ROOT)) for p in files if outside.search(p.read_text(encoding="utf-8"))]
    offenders += [name for name in ("conftest.py", ".ci/run") if outside.search((ROOT / name).read_text())]
    assert offenders == []


def test_the_wheel_carries_the_corpus(tmp_path):
    """What `pip install keras-textgen` gets: built from a copy of the sources, as a release would be."""
    source = tmp_path / "source"
    shutil.copytree(ROOT / "textgen", source / "textgen", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--quiet",
                    "--wheel-dir", str(tmp_path / "dist"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("keras_textgen-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("textgen/datasets/tiny_shakespeare/input.txt") == SHAKESPEARE.read_bytes()
        shipped = ["textgen/serving/static/playground.html", "textgen/export/web_files/textgen.js",
                   "textgen/export/web_files/index.html", "textgen/export/web_runtime/VENDOR.json",
                   "textgen/export/web_runtime/litert_wasm_internal.wasm"]
        for name in shipped:  # the playground, and what the web export copies
            assert archive.read(name) == (ROOT / name).read_bytes(), name


@pytest.fixture
def network_cut(monkeypatch):
    """No host answers, as on a machine without internet (loopback too: nothing here needs it)."""
    def refuse(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)


def test_tfds_tiny_shakespeare_offline_trains_from_the_bundled_copy(network_cut, tmp_path, capsys):
    """The real TFDS build, fed the bundled file as its manual download (TFDS checks its checksum)."""
    code, _, err = run_cli(["train", "tfds:tiny_shakespeare", *TINY, "--max-steps", "2",
                            "--tfds-data-dir", tmp_path / "tfds", "--output-dir", tmp_path / "out"], capsys)
    assert code == 0, err
    assert err.splitlines() == [
        "textgen: note: offline: using the copy of tiny_shakespeare bundled with textgen"]
    config = json.loads((tmp_path / "out" / "tiny_shakespeare-char" / "config.json").read_text())
    assert config["corpus"]["kind"] == "tfds" and config["corpus"]["tokens"] == 1_003_855
    assert config["corpus"]["validation"]["split"] == "validation"


def test_other_tfds_datasets_offline_say_what_to_do(network_cut, tmp_path, capsys):
    code, _, err = run_cli(["train", "tfds:imdb_reviews", "--tfds-data-dir", tmp_path,
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and err.splitlines() == [
        "textgen: error: tfds:imdb_reviews: cannot reach ai.stanford.edu to download it; offline, put its "
        "file (aclImdb_v1.tar.gz) in a folder and pass --tfds-manual-dir FOLDER"]
    assert not (tmp_path / "out").exists()
