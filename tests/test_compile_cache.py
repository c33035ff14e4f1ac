"""XLA's compiled code kept between runs: where, when not, how much, and that a run reuses it."""

from __future__ import annotations

import os
import subprocess
import sys

from textgen import compile_cache


def test_the_cache_folder_is_named_by_tensorflow_and_the_machine(tmp_path):
    environ = {"TEXTGEN_XLA_CACHE": str(tmp_path), "TF_XLA_FLAGS": "--tf_xla_auto_jit=0"}
    folder = compile_cache.enable(environ)
    assert folder is not None and folder.parent == tmp_path and folder.is_dir()
    assert folder.name.startswith("tf-") and len(folder.name.rsplit("-", 1)[1]) == 16
    assert environ["TF_XLA_FLAGS"] == f"--tf_xla_auto_jit=0 {compile_cache.FLAG}={folder}"
    emulated = compile_cache.enable({"TEXTGEN_XLA_CACHE": str(tmp_path),
                                     "XLA_FLAGS": "--xla_cpu_max_isa=AVX2"})
    assert emulated is not None and emulated != folder  # code for another instruction set: elsewhere
    preloaded = compile_cache.enable({"TEXTGEN_XLA_CACHE": str(tmp_path), "LD_PRELOAD": "/x/avx2_cpuid.so"})
    assert preloaded not in (None, folder, emulated)  # a library that may change what CPUID reports


def test_off_already_set_or_unwritable_leaves_the_flags_alone(tmp_path):
    for environ in ({"TEXTGEN_XLA_CACHE": "off"},
                    {"TEXTGEN_XLA_CACHE": str(tmp_path), "TF_XLA_FLAGS": f"{compile_cache.FLAG}=/elsewhere"}):
        before = dict(environ)
        assert compile_cache.enable(environ) is None and environ == before
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    environ = {"TEXTGEN_XLA_CACHE": str(blocked)}
    assert compile_cache.enable(environ) is None and "TF_XLA_FLAGS" not in environ
    environ = {"XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert compile_cache.enable(environ).parent == tmp_path / "xdg" / "textgen" / "xla"


def test_the_oldest_entries_go_when_the_folder_outgrows_its_limit(tmp_path):
    for age, name in enumerate(["newest", "middle", "oldest"]):
        path = tmp_path / name
        path.write_bytes(b"x" * 100)
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    compile_cache.trim(tmp_path, max_bytes=250)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["middle", "newest"]
    compile_cache.trim(tmp_path, max_bytes=250)
    assert len(list(tmp_path.iterdir())) == 2


def test_a_second_run_reuses_the_compiled_loop(char_model, tmp_path):
    """`textgen sample --engine compiled` writes its compiled loop into the cache; the next run
    loads it (TensorFlow checks the computation is the same) and writes the same text."""
    env = {**{k: v for k, v in os.environ.items() if k != "TF_XLA_FLAGS"}, "TEXTGEN_XLA_CACHE": str(tmp_path)}
    command = [sys.executable, "-m", "textgen", "sample", str(char_model), "--length", "60", "--seed", "2",
               "--engine", "compiled"]
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    (folder,) = tmp_path.iterdir()
    entries = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert entries and all(name.endswith(".pb") for name in entries)
    second = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == entries  # read, not rewritten
