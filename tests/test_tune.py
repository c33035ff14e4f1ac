"""`textgen tune` driven as a user drives it: real searches over tiny models on real text."""

import contextlib
import csv
import io
import json
import os
import shutil
import signal
from pathlib import Path

import pytest

from helpers import run_cli

TINY = ["--layers", "1", "--units", "8", "--embedding-dim", "8", "--seq-len", "32", "--batch-size", "16"]
SEARCH = ["--trials", "3", *TINY, "--max-steps", "4"]
TRAIN_FILES = {"model.keras", "last.keras", "tokenizer.json", "config.json", "history.json", "logs",
               "training_curves.png"}


def run_captured(args: list) -> tuple[int, str, str]:
    """The CLI in-process, for fixtures that outlive one test (capsys cannot serve them)."""
    from textgen.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def trials(model: Path) -> list[dict]:
    return json.loads((model / "trials.json").read_text())


def settings(rows: list[dict]) -> list[dict]:
    """The rows without their timing, which varies from run to run."""
    return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]


@pytest.fixture(scope="module")
def searched(tmp_path_factory, corpus_file) -> tuple[Path, str]:
    """A random search of three trials: the model folder it published and what it printed."""
    out = tmp_path_factory.mktemp("tuned")
    code, stdout, stderr = run_captured(["tune", corpus_file, *SEARCH, "--output-dir", out, "--name", "t"])
    assert code == 0, stderr
    return out / "t", stdout


def test_the_best_trial_is_published_as_a_model(searched, held_out_file, capsys):
    model, stdout = searched
    assert TRAIN_FILES | {"trials.csv", "trials.json"} <= {p.name for p in model.iterdir()}
    assert [p.name for p in model.parent.iterdir()] == ["t"]  # the search's folder is gone
    rows = trials(model)
    assert sorted(row["trial"] for row in rows) == [1, 2, 3]
    assert [row["val_loss"] for row in rows] == sorted(row["val_loss"] for row in rows)
    with (model / "trials.csv").open() as handle:
        assert [int(row["trial"]) for row in csv.DictReader(handle)] == [row["trial"] for row in rows]
    config = json.loads((model / "config.json").read_text())
    history = json.loads((model / "history.json").read_text())
    best = rows[0]
    assert config["result"]["best_val_loss"] == best["val_loss"] == min(history["val_loss"])
    assert (config["model"]["cell"], config["model"]["dropout"], config["train"]["lr"]) == (
        best["cell"], best["dropout"], best["lr"])
    assert config["result"]["tuning"]["best_trial"] == best["trial"] and best["steps"] == 4
    # the table printed at the end, best first
    table = stdout[stdout.index("trial  cell"):].splitlines()
    assert table[0].split() == ["trial", "cell", "layers", "units", "dropout", "lr", "params", "steps",
                                "seconds", "val_loss"]
    assert [int(line.split()[0]) for line in table[1:4]] == [row["trial"] for row in rows]
    assert f"Saved {model}" in table[4]
    # an ordinary model folder
    code, text, _ = run_cli(["sample", model, "--prime", "ROMEO:", "--length", "20", "--seed", "1"], capsys)
    assert code == 0 and text.startswith("ROMEO:")
    code, text, _ = run_cli(["evaluate", model, held_out_file, "--json"], capsys)
    assert code == 0 and json.loads(text)["tokens"] > 0
    code, text, _ = run_cli(["info", model], capsys)
    assert code == 0 and f"val_loss {best['val_loss']:.4f}" in text


def test_the_same_seed_gives_the_same_trials(searched, corpus_file, tmp_path, capsys):
    model, _ = searched
    shutil.copytree(model, tmp_path / "t")  # replaced with --force
    code, _, err = run_cli(["tune", corpus_file, *SEARCH, "--output-dir", tmp_path, "--name", "t", "--force"],
                           capsys)
    assert code == 0, err
    assert settings(trials(tmp_path / "t")) == settings(trials(model))
    code, _, err = run_cli(["tune", corpus_file, *SEARCH[2:], "--trials", "1", "--seed", "1",
                            "--output-dir", tmp_path, "--name", "other"], capsys)
    assert code == 0, err
    first = next(row for row in trials(model) if row["trial"] == 1)
    assert (trials(tmp_path / "other")[0]["dropout"], trials(tmp_path / "other")[0]["lr"]) != (
        first["dropout"], first["lr"])


def test_hyperband_trains_the_best_again_for_longer(corpus_file, tmp_path, capsys):
    code, out, err = run_cli(["tune", corpus_file, "--tuner", "hyperband", "--trials", "6", *TINY,
                              "--max-steps", "6", "--output-dir", tmp_path, "--name", "hb"], capsys)
    assert code == 0, err
    rows = {row["trial"]: row for row in trials(tmp_path / "hb")}
    # three trials of a third of the budget, the best of them again in full, two new ones in full
    assert {n: row["steps"] for n, row in rows.items()} == {1: 2, 2: 2, 3: 2, 4: 6, 5: 6, 6: 6}
    best_short = min((rows[n] for n in (1, 2, 3)), key=lambda row: row["val_loss"])
    model = ("cell", "layers", "units", "dropout", "lr")
    assert [rows[4][k] for k in model] == [best_short[k] for k in model]
    assert rows[4]["val_loss"] < best_short["val_loss"]
    assert "the longest trials at most 6 steps, the others 1/3 of it" in out
    config = json.loads((tmp_path / "hb" / "config.json").read_text())
    assert config["result"]["best_val_loss"] == min(row["val_loss"] for row in rows.values())


def test_hyperband_budgets_are_keras_tuners_rounds():
    """The budgets a search shares its time by, trial by trial, as KerasTuner's oracle runs them."""
    from textgen.training.search_space import hyperband_budgets

    assert hyperband_budgets(6) == (3, [1, 1, 1, 3, 3, 3])
    assert hyperband_budgets(8) == (3, [1, 1, 1, 3, 3, 3, 1, 1])  # a second iteration, cut off
    assert hyperband_budgets(23) == (9, [1] * 9 + [3] * 3 + [9] + [3] * 5 + [9] * 2 + [9] * 3)


def test_an_interrupted_search_resumes_where_it_stopped(searched, corpus_file, tmp_path, capsys,
                                                        monkeypatch):
    """Ctrl-C (a real SIGINT) in the second trial's training; --resume runs trials 2 and 3 only."""
    from textgen.training.callbacks import BudgetStop

    started = []
    begin = BudgetStop.on_train_begin

    def interrupt_the_second_trial(self, logs=None):
        begin(self, logs)
        started.append(self)
        if len(started) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(BudgetStop, "on_train_begin", interrupt_the_second_trial)
    args = ["tune", corpus_file, *SEARCH, "--output-dir", tmp_path, "--name", "t"]
    code, out, err = run_cli(args, capsys)
    assert code == 130 and "interrupted" in err and "Traceback" not in err
    assert "Continue with --resume --name t." in out
    assert [row["trial"] for row in trials(tmp_path / "t")] == [1]  # what was finished is kept
    assert (tmp_path / ".t.tuning").is_dir()
    monkeypatch.setattr(BudgetStop, "on_train_begin", begin)

    code, _, err = run_cli(args, capsys)
    assert code == 2 and "an unfinished search named 't'" in err and "--resume" in err
    code, out, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    assert "Trial 1/3" not in out and "Trial 2/3" in out and "Trial 3/3" in out
    # the same trials and losses as the search that was never interrupted
    assert settings(trials(tmp_path / "t")) == settings(trials(searched[0]))
    assert not (tmp_path / ".t.tuning").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--trials", "0"], "'--trials'"),
    (["--time-limit", "0"], "'--time-limit'"),
    (["--layers", "3:1"], "--layers 3:1: the minimum is above the maximum"),
    (["--layers", "1:2:3"], "not a number or a range MIN:MAX"),
    (["--lr", "nan"], "not a number or a range MIN:MAX"),
    (["--layers", "1.5"], "--layers takes whole numbers"),
    (["--units", "0:8"], "must be at least 1"),
    (["--dropout", "0:1"], "--dropout must be in [0, 1)"),
    (["--lr", "0:0.01"], "--lr must be positive"),
    (["--cells", "gru,transformer"], "unknown cell 'transformer' in --cells"),
    (["--cells", ","], "--cells needs at least one cell"),
    (["--tuner", "hyperband"], "--tuner hyperband needs --trials 6 or more"),
    (["--cells", "gru", "--dropout", "0.1", "--lr", "0.002"], "the search space holds only 1 model"),
    (["--resume"], "no interrupted search named 'shakespeare-char-tuned'"),
    (["--seq-len", "5000"], "fewer than one window"),
    (["--val-file", "missing.txt"], "no such file"),
])
def test_user_mistakes(args, message, corpus_file, tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["tune", corpus_file, *SEARCH, *args, "--output-dir", out], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_word_search_draws_sgd_rates(corpus_file, tmp_path, capsys):
    """Word presets train with SGD, so a word search does too, at rates on SGD's scale."""
    code, _, err = run_cli(["tune", corpus_file, "--level", "word", "--trials", "1", *TINY, "--seq-len", "16",
                            "--max-steps", "2", "--output-dir", tmp_path, "--name", "w"], capsys)
    assert code == 0, err
    train = json.loads((tmp_path / "w" / "config.json").read_text())["train"]
    assert train["optimizer"] == "sgd" and 5 <= train["lr"] <= 40 and train["clipnorm"] == 0.25


def test_missing_corpus(tmp_path, capsys):
    code, _, err = run_cli(["tune", tmp_path / "missing.txt", *SEARCH, "--output-dir", tmp_path / "out"],
                           capsys)
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_an_existing_model_is_never_overwritten_without_force(searched, corpus_file, capsys):
    model, _ = searched
    before = {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()}
    code, _, err = run_cli(["tune", corpus_file, *SEARCH, "--output-dir", model.parent, "--name", "t"],
                           capsys)
    assert code == 2 and "model 't' already exists in" in err and "--force" in err
    assert {p.relative_to(model): p.read_bytes() for p in model.rglob("*") if p.is_file()} == before
    assert [p.name for p in model.parent.iterdir()] == ["t"]
