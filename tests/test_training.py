"""Training runs as a user starts them (`textgen train`): real files, real training, real model
folders; budgets, resuming, Ctrl-C and crashes; every bad setting as one error line."""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import pytest

import textgen
from textgen.model import fast_recurrent
from textgen.training import callbacks
from textgen.training import run as training

from helpers import SHAKESPEARE, TINY, folder_snapshot, run_cli

ROOT = Path(__file__).resolve().parents[1]


# -- train / sample / evaluate ---------------------------------------------------------------
def test_trained_folder_layout_and_history(char_model):
    names = {p.name for p in char_model.iterdir()}
    assert {"model.keras", "last.keras", "tokenizer.json", "config.json", "history.json", "logs"} <= names
    config = json.loads((char_model / "config.json").read_text())
    assert config["format_version"] == 1 and config["level"] == "char"
    assert config["result"]["stopped"] == "completed" and config["result"]["epochs"] == 2
    history = json.loads((char_model / "history.json").read_text())
    for key in ("loss", "val_loss", "val_perplexity", "val_bits_per_char", "epoch_seconds",
                "tokens_per_second"):
        assert len(history[key]) == 2, key
    assert history["val_loss"][1] < history["val_loss"][0]
    assert abs(history["val_bits_per_char"][0] - history["val_loss"][0] / 0.6931471805599453) < 1e-6
    assert not (char_model.parent / ".char.training").exists()  # finished runs leave no state


@pytest.mark.parametrize("cell", ["lstm", "rnn"])
def test_other_cells_train_and_sample(cell, corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--cell", cell, "--max-steps", "3",
                            "--output-dir", tmp_path, "--name", cell], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / cell / "config.json").read_text())
    assert config["model"]["cell"] == cell and config["result"]["stopped"] == "max_steps"
    assert run_cli(["sample", tmp_path / cell, "--length", "10"], capsys)[0] == 0


def test_sgd_with_embedding_dropout(corpus_file, tmp_path, capsys):
    """PyTorch's word_language_model recipe: plain SGD at a high rate, the gradients' global norm
    clipped, dropout on the embeddings; recorded, shown by info, and the model samples."""
    code, _, err = run_cli(["train", corpus_file, *TINY, "--level", "word", "--seq-len", "16",
                            "--optimizer", "sgd", "--lr", "20", "--clipnorm", "0.25",
                            "--embedding-dropout", "0.2", "--max-steps", "4", "--output-dir", tmp_path,
                            "--name", "sgd"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "sgd" / "config.json").read_text())
    assert config["train"]["optimizer"] == "sgd" and config["model"]["embedding_dropout"] == 0.2
    history = json.loads((tmp_path / "sgd" / "history.json").read_text())
    assert all(math.isfinite(loss) for loss in history["loss"])
    model = textgen.load(tmp_path / "sgd").keras_model
    assert model.get_layer("dropout_embedding").rate == 0.2
    code, out, _ = run_cli(["info", tmp_path / "sgd"], capsys)
    assert code == 0 and " (embeddings 0.2)" in out and "sgd, global clipnorm 0.25" in out
    assert run_cli(["sample", tmp_path / "sgd", "--length", "10"], capsys)[0] == 0


def test_sgd_clips_the_global_norm_and_never_decays_weights():
    from textgen.model.network import build_model
    from textgen.store.config import ModelConfig, TrainConfig

    model = build_model(ModelConfig(vocab_size=10, units=8, embedding_dim=8, layers=1))
    training._compile(model, TrainConfig(optimizer="sgd", lr=20.0, clipnorm=0.25))
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.SGD) and not optimizer.momentum
    assert optimizer.global_clipnorm == 0.25 and optimizer.clipnorm is None and optimizer.weight_decay is None
    training._compile(model, TrainConfig().optimized("adamw", 1e-3))
    assert isinstance(model.optimizer, keras.optimizers.AdamW) and model.optimizer.clipnorm == 1.0
    assert model.optimizer.weight_decay == 0.1


def test_window_defaults_follow_the_level(corpus_file, tmp_path, capsys):
    untimed = [a for a in TINY if a not in ("--seq-len", "32", "--batch-size", "16")]
    for level, window in (("char", [100, 64]), ("word", [35, 20])):
        code, _, err = run_cli(["train", corpus_file, *untimed, "--level", level, "--max-steps", "1",
                                "--output-dir", tmp_path, "--name", level], capsys)
        config = json.loads((tmp_path / level / "config.json").read_text())
        assert code == 0, err
        assert [config["train"]["seq_len"], config["train"]["batch_size"]] == window
    code, _, _ = run_cli(["train", corpus_file, *untimed, "--level", "word", "--seq-len", "20", "--max-steps",
                          "1", "--output-dir", tmp_path, "--name", "given", "--batch-size", "8"], capsys)
    config = json.loads((tmp_path / "given" / "config.json").read_text())
    assert code == 0 and [config["train"]["seq_len"], config["train"]["batch_size"]] == [20, 8]


def test_carried_state_run_resumes_where_its_batches_left_off(corpus_file, tmp_path, capsys):
    base = ["train", corpus_file, *TINY, "--output-dir", tmp_path, "--name", "c", "--carry-state"]
    assert run_cli([*base, "--epochs", "2", "--max-steps", "40"], capsys)[0] == 0
    assert run_cli([*base, "--epochs", "2", "--resume"], capsys)[0] == 0
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    history = json.loads((tmp_path / "c" / "history.json").read_text())
    assert config["train"]["carry_state"] and history["steps"] == [35, 35]  # (18,000 - 32) // (16 * 32)
    assert run_cli(["sample", tmp_path / "c", "--length", "10"], capsys)[0] == 0
    loud = [a for a in base if a != "--quiet"]
    code, out, _ = run_cli([*loud, "--batch-size", "600", "--max-steps", "1", "--force"], capsys)
    assert code == 0 and "--carry-state: the text does not fit" in out


def test_xla_trains_the_same_function(corpus_file, tmp_path, capsys):
    """--xla compiles the training step; same seed, same losses as without it (float tolerance)."""
    losses = {}
    for flag in ("--xla", "--no-xla"):
        code, _, err = run_cli(["train", corpus_file, *TINY, "--cell", "lstm", "--max-steps", "4", flag,
                                "--output-dir", tmp_path, "--name", flag], capsys)
        assert code == 0, err
        config = json.loads((tmp_path / flag / "config.json").read_text())
        assert config["train"]["xla"] is (flag == "--xla")
        history = json.loads((tmp_path / flag / "history.json").read_text())
        losses[flag] = (history["loss"][0], history["val_loss"][0])
    assert losses["--xla"] == pytest.approx(losses["--no-xla"], rel=1e-4)

    from textgen.model.network import build_model
    from textgen.store.config import ModelConfig, TrainConfig
    from textgen.training.run import _compile

    for xla in (True, False):
        model = build_model(ModelConfig(vocab_size=10, cell="lstm", layers=1, units=4))
        _compile(model, TrainConfig(xla=xla, lr=2e-3))
        assert model.jit_compile is xla


def test_tfds_dataset_offline_from_a_manual_folder(tmp_path, capsys):
    """The real TFDS code path, fed the file it would download (it checks the checksum)."""
    manual = tmp_path / "manual"
    manual.mkdir()
    shutil.copy(SHAKESPEARE, manual / "input.txt")
    code, _, err = run_cli(["train", "tfds:tiny_shakespeare", *TINY, "--max-steps", "2",
                            "--tfds-manual-dir", manual, "--tfds-data-dir", tmp_path / "tfds",
                            "--output-dir", tmp_path / "out"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "out" / "tiny_shakespeare-char" / "config.json").read_text())
    assert config["corpus"]["kind"] == "tfds" and config["corpus"]["tokens"] == 1_003_855
    assert config["corpus"]["validation"]["split"] == "validation"


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_run_trains_and_samples_on_cpu(policy, corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--precision", policy,
                            "--max-steps", "3", "--output-dir", tmp_path, "--name", "mixed"], capsys)
    assert code == 0, err
    assert err.count(f"textgen: warning: --precision {policy} was asked for, but no GPU was found") == 1
    config = json.loads((tmp_path / "mixed" / "config.json").read_text())
    assert config["precision_used"] == policy
    code, out, _ = run_cli(["sample", tmp_path / "mixed", "--length", "10", "--seed", "1"], capsys)
    assert code == 0 and len(out) > 5


def test_bf16_products_run_trains_float32_weights_and_says_so(corpus_file, tmp_path, capsys):
    """Any CPU can run it (slowly without bfloat16 hardware): no warning, float32 weights, recorded."""
    code, _, err = run_cli(["train", corpus_file, *TINY, "--precision", "float32_bf16_matmul",
                            "--max-steps", "3", "--output-dir", tmp_path, "--name", "bf16"], capsys)
    assert code == 0 and "warning" not in err, err
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["precision_used"] == "float32_bf16_matmul"
    assert not fast_recurrent._bf16_products  # the setting ends with the run
    model = textgen.load(tmp_path / "bf16").keras_model
    assert model.get_layer("gru_0").compute_dtype == "float32"


# -- unfinished runs -----------------------------------------------------------------------------
def test_budget_stop_then_resume_continues_history(corpus_file, tmp_path, capsys):
    base = ["train", corpus_file, *TINY, "--output-dir", tmp_path, "--name", "r"]
    assert run_cli([*base, "--epochs", "1"], capsys)[0] == 0
    code, _, err = run_cli([*base, "--epochs", "3"], capsys)
    assert code == 2 and "already exists" in err
    # a budget-stopped run keeps its state so that --resume can continue it
    assert run_cli([*base, "--epochs", "3", "--max-steps", "40", "--force"], capsys)[0] == 0
    assert (tmp_path / ".r.training").is_dir()
    first = json.loads((tmp_path / "r" / "history.json").read_text())
    code, _, err = run_cli([*base, "--epochs", "3", "--max-steps", "40"], capsys)
    assert code == 2 and "--resume" in err
    other = tmp_path / "other.txt"
    other.write_text(corpus_file.read_text()[:15_000])
    code, _, err = run_cli(["train", other, *base[2:], "--epochs", "3", "--resume"], capsys)
    assert code == 2 and "not the one run 'r' began with" in err
    assert run_cli([*base, "--epochs", "3", "--resume"], capsys)[0] == 0
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    # epoch 2 was cut after 5 of its 35 steps: the resumed run did it again in full
    assert first["steps"] == [35, 5] and history["steps"] == [35, 35, 35]
    assert len(history["loss"]) == 3 and history["loss"][0] == first["loss"][0]
    assert not (tmp_path / ".r.training").exists()
    code, _, err = run_cli([*base, "--resume"], capsys)
    assert code == 2 and "no interrupted run" in err


def test_ctrl_c_saves_what_was_finished(corpus_file, tmp_path):
    """A real process gets SIGINT mid-training: it saves, exits 130, prints no traceback."""
    big = tmp_path / "big.txt"
    big.write_text(SHAKESPEARE.read_text()[:200_000])
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "train", str(big), "--layers", "1", "--units", "32",
         "--seq-len", "32", "--batch-size", "16", "--epochs", "50", "--no-samples",
         "--output-dir", str(tmp_path), "--name", "int"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    deadline = time.time() + 120
    history = tmp_path / ".int.training" / "history.json"
    while not history.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "Interrupted" in out
    config = json.loads((tmp_path / "int" / "config.json").read_text())
    assert config["result"]["stopped"] == "interrupted" and config["result"]["epochs"] >= 1


def test_ctrl_c_landing_in_a_finalizer_still_interrupts(corpus_file, tmp_path, capsys, monkeypatch):
    """Ctrl-C pressed while Python runs a __del__, which swallows a KeyboardInterrupt raised there
    ("Exception ignored in"), still stops the run after the step, and what was finished is saved."""
    class PressesCtrlCWhenCollected:
        def __del__(self):
            signal.raise_signal(signal.SIGINT)
            sum(range(1000))  # bytecode for the handler to run in, inside __del__

    epoch_end = callbacks.EpochLog.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        epoch_end(self, epoch, logs)
        if epoch == 0:
            PressesCtrlCWhenCollected()  # collected at once, in the middle of the epoch's callbacks

    monkeypatch.setattr(callbacks.EpochLog, "on_epoch_end", on_epoch_end)
    code, _, err = run_cli(["train", corpus_file, *TINY, "--epochs", "4", "--output-dir", tmp_path,
                            "--name", "c"], capsys)
    assert code == 130 and "Traceback" not in err and "Exception ignored" not in err
    result = json.loads((tmp_path / "c" / "config.json").read_text())["result"]
    assert result["stopped"] == "interrupted" and result["epochs"] == 1


def test_resume_after_sigkill_continues_the_killed_run(tmp_path, capsys):
    """A run killed without warning leaves its state; --resume continues from its last epoch."""
    big = tmp_path / "big.txt"
    big.write_text(SHAKESPEARE.read_text()[:60_000])
    args = ["train", str(big), "--layers", "1", "--units", "16", "--embedding-dim", "8", "--seq-len", "32",
            "--batch-size", "16", "--epochs", "3", "--no-samples", "--quiet", "--output-dir", str(tmp_path),
            "--name", "k"]
    proc = subprocess.Popen([sys.executable, "-m", "textgen", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,  # killed: its TensorFlow temporaries stay in tmp_path
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path)})
    history = tmp_path / ".k.training" / "history.json"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(json.loads(history.read_text() or "{}").get("loss", [])) >= 1:
            break
        time.sleep(0.1)
    proc.kill()
    proc.wait(timeout=60)
    before = json.loads(history.read_text())
    assert not (tmp_path / "k").exists() and len(before["loss"]) in (1, 2)
    assert run_cli([*args, "--resume"], capsys)[0] == 0
    after = json.loads((tmp_path / "k" / "history.json").read_text())
    # Epoch 1 is either restored from its backup or, if the kill fell inside its backup, trained
    # again from the same start: the same loss either way (float noise aside), never a lower one.
    assert len(after["loss"]) == 3 and after["loss"][0] == pytest.approx(before["loss"][0], rel=1e-5)
    assert not (tmp_path / ".k.training").exists()


# -- bad input: one line on stderr, exit 2, nothing written ----------------------------------------
@pytest.mark.parametrize(("args", "message"), [
    (["--units", "0"], "'--units': 0 is not in the range"),
    (["--layers", "-1"], "'--layers'"),
    (["--lr", "0"], "'--lr'"),
    (["--seq-len", "5000"], "fewer than one window"),
    (["--cell", "transformer"], "'--cell'"),
    (["--val-fraction", "1.5"], "'--val-fraction'"),
    (["--optimizer", "adam"], "'--optimizer'"),
    (["--optimizer", "sgd"], "--optimizer sgd needs --lr: the presets have no sgd rate at this level (theirs "
                             "are adamw's)"),
    (["--embedding-dropout", "1"], "'--embedding-dropout'"),
    (["--optimizer", "sgd", "--lr", "1", "--weight-decay", "0.1"], "--weight-decay is AdamW's; SGD trains"),
    (["--level", "word", "--weight-decay", "0.1"], "--weight-decay is AdamW's; SGD trains without it"),
])
def test_bad_training_settings(args, message, corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, *args, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def make_source(folder: Path, name: str, data: bytes | None) -> Path:
    """A file with `data`, a folder if data is None (missing.txt is left missing)."""
    path = folder / name
    if data is None:
        path.mkdir()
    elif name != "missing.txt":
        path.write_bytes(data)
    return path


@pytest.mark.parametrize(("name", "data", "message"), [
    ("missing.txt", b"", "no such file"),
    ("empty.txt", b"", "file is empty"),
    ("binary.txt", b"\x00\x01\x02binary", "binary"),
    ("latin.txt", "café olé\n".encode("latin-1") * 100, "--encoding"),
    ("empty_dir", None, "no .txt files"),
    ("short.txt", b"too short\n", "fewer than one window"),
])
def test_bad_corpus(name, data, message, tmp_path, capsys):
    source = make_source(tmp_path, name, data)
    code, _, err = run_cli(["train", source, *TINY, "--output-dir", tmp_path / "out"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_output_folder_that_cannot_be_created(corpus_file, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["train", corpus_file, *TINY, "--max-steps", "1", "--output-dir",
                            blocker / "models"], capsys)
    assert code == 2 and "Not a directory" in err and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"


def test_existing_model_is_never_overwritten_without_force(char_model, corpus_file, capsys):
    before = folder_snapshot(char_model)
    code, _, err = run_cli(["train", corpus_file, *TINY, "--output-dir", char_model.parent,
                            "--name", "char"], capsys)
    assert code == 2 and "--force" in err
    assert folder_snapshot(char_model) == before


def test_force_replaces_a_model(corpus_file, tmp_path, capsys):
    base = ["train", corpus_file, *TINY, "--output-dir", tmp_path, "--name", "m", "--max-steps", "2"]
    assert run_cli(base, capsys)[0] == 0
    assert run_cli([*base, "--force", "--cell", "lstm"], capsys)[0] == 0
    assert json.loads((tmp_path / "m" / "config.json").read_text())["model"]["cell"] == "lstm"
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".m.training")) == ["m"]


def test_a_diverging_run_stops_and_says_why(corpus_file, tmp_path, capsys):
    # a rate that overflows float32 weights within a few steps (1e30 only saturates the gates)
    code, _, err = run_cli(["train", corpus_file, *TINY, "--lr", "1e38", "--lr-schedule", "constant",
                            "--epochs", "3", "--output-dir", tmp_path, "--name", "nan"], capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "nan" / "config.json").read_text())["result"]["stopped"] == "nan_loss"


def test_same_seed_same_training(corpus_file, tmp_path, capsys):
    for name in ("a", "b"):
        assert run_cli(["train", corpus_file, *TINY, "--max-steps", "12", "--output-dir", tmp_path,
                        "--name", name, "--seed", "5"], capsys)[0] == 0
    histories = [json.loads((tmp_path / n / "history.json").read_text()) for n in ("a", "b")]
    assert histories[0]["loss"] == histories[1]["loss"]
    assert histories[0]["val_loss"] == histories[1]["val_loss"]


def test_validation_file_is_used_instead_of_a_tail(corpus_file, held_out_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--val-file", held_out_file, "--max-steps", "2",
                            "--output-dir", tmp_path, "--name", "v"], capsys)
    assert code == 0, err
    corpus = json.loads((tmp_path / "v" / "config.json").read_text())["corpus"]
    # a file without a final line break gets one, as when several files are joined
    assert corpus["train_tokens"] == 20_001 and corpus["val_tokens"] == 5_000
    assert corpus["validation"]["paths"] == [str(held_out_file)]
