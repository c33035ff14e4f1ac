"""textgen list / info / plot: read model folders without TensorFlow."""

import subprocess
import sys

import pytest

from helpers import run_cli


def test_list_shows_models_and_unfinished_runs(char_model, word_model, tmp_path, capsys):
    code, out, _ = run_cli(["list", char_model.parent], capsys)
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["NAME", "LEVEL", "MODEL", "PARAMS"]
    assert lines[1].split()[:4] == ["char", "char", "GRU", "1x8"]
    assert "completed" in lines[1]
    (char_model.parent / ".ghost.training").mkdir()
    try:
        assert "unfinished run: ghost" in run_cli(["list", char_model.parent], capsys)[1]
    finally:
        (char_model.parent / ".ghost.training").rmdir()
    assert run_cli(["list", word_model.parent], capsys)[1].splitlines()[1].split()[:2] == ["word", "word"]
    code, out, _ = run_cli(["list", tmp_path], capsys)
    assert code == 0 and "No models" in out
    code, _, err = run_cli(["list", tmp_path / "nope"], capsys)
    assert code == 2 and "no such folder" in err


def test_info_describes_a_model(char_model, capsys):
    code, out, _ = run_cli(["info", char_model], capsys)
    assert code == 0
    for expected in ("GRU 1x8", "parameters", "vocabulary", "shakespeare.txt", "2 epoch(s)",
                     "stopped: completed", "best         val_loss", "bits/char", "exports      none",
                     "preset       preset small (GRU 1x8; auto, without --time-limit)", "weight decay 0.1"):
        assert expected in out, expected


def test_list_info_help_and_argument_errors_do_not_import_tensorflow(char_model):
    script = ("import sys; from textgen.cli import main; "
              f"main(['info', {str(char_model)!r}]); main(['list', {str(char_model.parent)!r}]); "
              "main(['train', '--help']); main(['--help']); "
              f"assert main(['sample', {str(char_model)!r}, '--top-p', '3']) == 2; "
              "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.strip().endswith("False")


def test_training_writes_curves_and_plot_redraws_them(char_model, tmp_path, capsys):
    png = char_model / "training_curves.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, _ = run_cli(["plot", char_model, "--output", tmp_path / "c.png"], capsys)
    assert code == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_without_matplotlib_says_how_to_get_it(char_model, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    code, _, err = run_cli(["plot", char_model, "--output", tmp_path / "c.png"], capsys)
    assert code == 2 and "keras-textgen[plot]" in err and not (tmp_path / "c.png").exists()


@pytest.mark.parametrize("command", ["train", "sample", "evaluate", "list", "info", "plot"])
def test_every_command_help_shows_an_example(command, capsys):
    code, out, _ = run_cli([command, "--help"], capsys)
    assert code == 0 and "Example:" in out and f"textgen {command}" in out


def test_shell_completion_script_is_generated():
    env = {"_TEXTGEN_COMPLETE": "bash_source", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "textgen"], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0 and "_textgen_completion" in result.stdout


@pytest.mark.parametrize(("flags", "redirected"), [([], True), (["--verbose"], False)])
def test_tensorflow_start_up_output_is_hidden_unless_verbose(flags, redirected, tmp_path):
    """Without --verbose, file descriptor 2 points at /dev/null while TensorFlow is imported."""
    script = ("import os; from textgen.cli import main; calls = []; real = os.dup2; "
              "os.dup2 = lambda a, b: (calls.append(b), real(a, b))[1]; "
              f"main([*{flags!r}, 'evaluate', {str(tmp_path / 'none')!r}, 'held_out.txt', "
              "'--engine', 'compiled']); print(calls)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == ("[2, 2]" if redirected else "[]")
    assert "no such model" in result.stderr
