"""A process killed (SIGKILL: nothing runs after it) while saving never costs the good model.

The kill is made deterministic by a child process that runs `textgen train` with one write
patched to stop at the worst moment: it touches a marker file and sleeps until killed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import TINY, run_cli

CHILD = """
import os, sys, time
from pathlib import Path

marker, mode, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]

def stop_here():
    marker.touch()
    time.sleep(600)

if mode == "publish":  # after the old folder is moved aside, before the new one is moved in
    real_replace = os.replace
    def replace(src, dst, *rest, **options):
        real_replace(src, dst, *rest, **options)
        if ".old-" in Path(dst).name:
            stop_here()
    os.replace = replace
else:  # "checkpoint": in the middle of writing the best model's archive
    import keras
    def save(model, path, *rest, **options):
        Path(path).write_bytes(b"PK half an archive")
        stop_here()
    keras.Model.save = save

from textgen.cli import main
sys.exit(main(args))
"""


def kill_when_stopped(tmp_path: Path, mode: str, args: list) -> None:
    """Run `textgen ARGS` in a child that stops inside the save `mode`, and SIGKILL it there. Its
    temporary files (TensorFlow's, which it deletes at exit) stay in `tmp_path`, not the machine's."""
    marker = tmp_path / "stopped"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(marker), mode, *map(str, args)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             env={**os.environ, "TMPDIR": str(tmp_path)})
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert child.poll() is None, f"the child ended before the save: {child.stderr.read().decode()}"
            assert time.monotonic() < deadline, "the child never reached the save"
            time.sleep(0.2)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


def test_killed_while_publishing_the_previous_model_survives(corpus_file, tmp_path, capsys):
    base = ["train", corpus_file, *TINY, "--epochs", "1", "--output-dir", tmp_path, "--name", "m"]
    assert run_cli(base, capsys)[0] == 0
    good = (tmp_path / "m" / "model.keras").read_bytes()
    kill_when_stopped(tmp_path, "publish", [*base, "--force", "--seed", "1"])
    # the worst moment: the good folder is only under its .old- name
    assert not (tmp_path / "m").exists() and list(tmp_path.glob(".m.old-*"))
    code, _, err = run_cli(["sample", "m", "--output-dir", tmp_path, "--length", "20"], capsys)
    assert code == 0, err
    assert (tmp_path / "m" / "model.keras").read_bytes() == good
    assert not list(tmp_path.glob(".m.old-*"))
    code, _, err = run_cli([*base, "--force", "--seed", "1"], capsys)  # and a re-run replaces it
    assert code == 0, err
    assert (tmp_path / "m" / "model.keras").read_bytes() != good
    assert not list(tmp_path.glob(".m.*"))


def test_a_model_moved_aside_by_a_killed_publish_is_listed(corpus_file, tmp_path, capsys):
    assert run_cli(["train", corpus_file, *TINY, "--max-steps", "2", "--output-dir", tmp_path,
                    "--name", "m"], capsys)[0] == 0
    os.replace(tmp_path / "m", tmp_path / ".m.old-12345")  # what the kill above leaves
    code, out, err = run_cli(["list", tmp_path], capsys)
    assert code == 0, err
    assert out.splitlines()[1].startswith("m ") and (tmp_path / "m" / "model.keras").is_file()


def test_killed_while_saving_the_best_checkpoint_then_resumed(corpus_file, tmp_path, capsys):
    base = ["train", corpus_file, *TINY, "--epochs", "2", "--output-dir", tmp_path, "--name", "c"]
    kill_when_stopped(tmp_path, "checkpoint", base)
    run_dir = tmp_path / ".c.training"
    assert (run_dir / "saving.model.keras").is_file()  # the half-written archive...
    assert not (run_dir / "model.keras").exists()  # ...never took the best model's name
    code, _, err = run_cli([*base, "--resume"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", tmp_path / "c", corpus_file], capsys)
    assert code == 0, err
    assert not run_dir.exists()
