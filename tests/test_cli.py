"""The CLI driven as a user drives it: sampling, evaluation, errors and entry points, on real model
folders (training runs: test_training.py)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import textgen
from textgen.model.machine import memory_bytes

from helpers import SHAKESPEARE, run_cli

ROOT = Path(__file__).resolve().parents[1]


def test_sample_is_reproducible_and_echoes_the_prime(char_model, capsys):
    args = ["sample", char_model, "--prime", "ROMEO:", "--length", "50", "--seed", "3"]
    code, first, _ = run_cli(args, capsys)
    assert code == 0 and first.startswith("ROMEO:") and len(first) > 50
    assert run_cli(args, capsys)[1] == first
    assert run_cli([*args[:-1], "4"], capsys)[1] != first


def test_sample_options_and_batch(char_model, capsys, tmp_path):
    out = tmp_path / "samples.txt"
    code, _, err = run_cli(["sample", char_model, "--num-samples", "3", "--length", "20", "--top-k", "5",
                            "--top-p", "0.9", "--temperature", "1.2", "--seed", "1", "--output", out],
                           capsys)
    assert code == 0 and "Wrote 3 sample(s)" in err
    assert out.read_text().count("=== sample") == 3
    code, greedy, _ = run_cli(["sample", char_model, "--temperature", "0", "--length", "30"], capsys)
    assert code == 0
    assert run_cli(["sample", char_model, "--temperature", "0", "--length", "30", "--seed", "9"],
                   capsys)[1] == greedy


def test_unknown_prime_characters_are_skipped_with_a_warning(char_model, capsys):
    code, out, err = run_cli(["sample", char_model, "--prime", "Hi ☃", "--length", "10"], capsys)
    assert code == 0 and out.startswith("Hi ☃")
    assert "warning" in err and "☃" in err


def test_evaluate_json_and_text(char_model, held_out_file, capsys):
    code, out, _ = run_cli(["evaluate", char_model, held_out_file, "--json"], capsys)
    result = json.loads(out)
    assert code == 0 and {"loss", "perplexity", "bits_per_char", "tokens"} <= result.keys()
    assert result["tokens"] == (5000 // 33) * 32
    assert abs(result["bits_per_char"] - result["loss"] / 0.6931471805599453) < 1e-9
    code, out, _ = run_cli(["evaluate", char_model, held_out_file], capsys)
    assert code == 0 and "perplexity" in out and "bits per char" in out
    code, out, _ = run_cli(["evaluate", char_model, held_out_file, "--json", "--seq-len", "100"], capsys)
    longer = json.loads(out)
    assert code == 0 and longer["tokens"] == (5000 // 101) * 100 and longer["loss"] != result["loss"]


@pytest.mark.parametrize("fixture", ["char_model", "word_model"])
def test_evaluate_in_numpy_gives_what_tensorflow_gives(fixture, held_out_file, capsys, request):
    model = request.getfixturevalue(fixture)
    results = {}
    for engine in ("numpy", "compiled"):
        code, out, _ = run_cli(["evaluate", model, held_out_file, "--json", "--engine", engine], capsys)
        assert code == 0
        results[engine] = json.loads(out)
    numpy_result, keras_result = results["numpy"], results["compiled"]
    assert (numpy_result["tokens"], numpy_result["chars"]) == (keras_result["tokens"], keras_result["chars"])
    assert numpy_result["loss"] == pytest.approx(keras_result["loss"], rel=1e-5)
    assert numpy_result["bits_per_char"] == pytest.approx(keras_result["bits_per_char"], rel=1e-5)


def test_evaluate_of_a_short_text_does_not_import_tensorflow(char_model, held_out_file):
    code = ("import sys; from textgen.cli import main; "
            f"main(['evaluate', {str(char_model)!r}, {str(held_out_file)!r}, '--json']); "
            "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    *_, imported = result.stdout.split()
    assert result.returncode == 0 and imported == "False" and '"tokens"' in result.stdout


def test_word_model_end_to_end(word_model, held_out_file, capsys):
    tokenizer = json.loads((word_model / "tokenizer.json").read_text())
    assert tokenizer["level"] == "word" and "\n" in tokenizer["tokens"]
    code, out, _ = run_cli(["sample", word_model, "--prime", "KING", "--length", "30", "--seed", "1"],
                           capsys)
    assert code == 0 and out.startswith("KING") and "<unk>" not in out
    code, out, _ = run_cli(["evaluate", word_model, held_out_file, "--json"], capsys)
    result = json.loads(out)
    assert result["chars"] > result["tokens"] > 0
    assert result["bits_per_char"] < result["bits_per_token"]


def test_python_api(char_model, held_out_file):

    model = textgen.load(char_model)
    text = model.generate("ROMEO:", length=30, seed=2)
    assert text.startswith("ROMEO:") and text == model.generate("ROMEO:", length=30, seed=2)
    assert len(model.generate_many("A", 10, num_samples=3, seed=1)) == 3
    assert model.evaluate([held_out_file])["tokens"] > 0
    assert model.evaluate(text=SHAKESPEARE.read_text()[:3000])["loss"] > 0


@pytest.mark.parametrize(("args", "message"), [
    (["--temperature", "-1"], "'--temperature'"),
    (["--top-p", "0"], "'--top-p'"),
    (["--top-p", "1.5"], "'--top-p'"),
    (["--top-k", "-2"], "'--top-k'"),
    (["--length", "0"], "'--length'"),
    (["--temperature", "0.5,x"], "comma-separated list"),
    (["--temperature", "0.5,-1"], "0 (greedy) or more"),
    (["--repetition-penalty", "0.5"], "'--repetition-penalty'"),
])
def test_bad_sampling_settings(args, message, char_model, capsys):
    code, out, err = run_cli(["sample", char_model, *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and out == ""


def test_unknown_and_corrupt_models(char_model, tmp_path, capsys):
    code, _, err = run_cli(["sample", tmp_path / "nothing-here"], capsys)
    assert code == 2 and "no such model" in err
    broken = tmp_path / "broken"
    shutil.copytree(char_model, broken)
    (broken / "model.keras").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_cli(["sample", broken], capsys)
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    code, _, err = run_cli(["evaluate", broken, char_model / "tokenizer.json"], capsys)
    assert code == 2 and "format version" in err


def test_console_entry_points_and_help(tmp_path):
    for command in ([sys.executable, "-m", "textgen", "--help"],
                    [sys.executable, str(ROOT / "cli.py"), "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=60)
        assert result.returncode == 0 and "train" in result.stdout and "sample" in result.stdout
    result = subprocess.run([sys.executable, "-m", "textgen", "train"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1


def test_a_real_process_prints_exactly_one_error_line(tmp_path):
    """TensorFlow's start-up chatter on file descriptor 2 must not bury the error."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-m", "textgen", "sample", str(tmp_path / "nope")],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"textgen: error: {tmp_path / 'nope'}: no such model (looked in {tmp_path / 'nope'})"]


def test_tensorflow_is_imported_out_of_the_collectors_way():
    """What importing TensorFlow and Keras made is frozen, and the collector runs again after it:
    each full collection had walked all of it (bench/RESULTS.md, "Start-up")."""
    code = ("import gc; from textgen.cli.params import start_tensorflow; start_tensorflow(); "
            "print(gc.isenabled(), gc.get_freeze_count())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    enabled, frozen = result.stdout.split()
    assert enabled == "True" and int(frozen) > 100_000


@pytest.mark.parametrize(("training", "preset", "allocator"),
                         [(True, None, "true"), (False, None, "None"), (True, "false", "false")])
def test_training_commands_take_tensorflows_bfc_allocator(training, preset, allocator):
    """Training's CPU tensors come from TensorFlow's BFC allocator (as an AVX2 CPU malloc faulted
    them in again at every step); generation keeps the default, and a value the user set stays."""
    name = "TF_CPU_ALLOCATOR_USE_BFC"
    code = ("import os; from textgen.cli.params import start_tensorflow; "
            f"start_tensorflow(training={training}); print(os.environ.get({name!r}), "
            "os.environ.get('TF_CPU_BFC_MEM_LIMIT_IN_MB'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TF_CPU_")}
    env |= {name: preset} if preset else {}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=env)
    allocator_set, limit = result.stdout.split()
    assert allocator_set == allocator, result.stderr
    # no lower limit than malloc's (the machine's memory) nor TensorFlow's own (64 GB)
    if allocator == "true":
        assert int(limit) >= max(65536, memory_bytes() >> 20)
    else:
        assert limit == "None"


@pytest.mark.parametrize(("data", "message"), [
    (b"tiny\n", "fewer than one window"),
    ("ça va très bien\n".encode("latin-1") * 50, "--encoding"),
])
def test_evaluate_bad_text(data, message, char_model, tmp_path, capsys):
    path = tmp_path / "eval.txt"
    path.write_bytes(data)
    code, out, err = run_cli(["evaluate", char_model, path], capsys)
    assert code == 2 and message in err and out == ""


@pytest.mark.parametrize(("window", "message"), [("0", "--seq-len"), ("6000", "fewer than one window")])
def test_evaluate_bad_window(window, message, char_model, held_out_file, capsys):
    code, out, err = run_cli(["evaluate", char_model, held_out_file, "--seq-len", window], capsys)
    assert code == 2 and message in err and out == "" and len(err.strip().splitlines()) == 1
