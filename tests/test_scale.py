"""Scale and resilience: epochs of a fixed number of steps, backups within epochs."""

import json

from conftest import TINY, run_cli


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_steps_per_epoch_with_a_budget_stop_and_resume(corpus_file, tmp_path, capsys):
    """Epochs of 7 steps over the repeated text; a budget cut and --resume keep the counts continuous."""
    base = ["train", corpus_file, *TINY, "--steps-per-epoch", "7", "--epochs", "3", "--output-dir", tmp_path,
            "--name", "e"]
    code, _, err = run_cli([*base, "--max-steps", "10"], capsys)
    assert code == 0, err
    first = read_json(tmp_path / "e" / "history.json")
    assert first["steps"] == [7, 3]  # the budget cut epoch 2 after 3 of its 7 steps
    config = read_json(tmp_path / "e" / "config.json")
    assert config["train"]["steps_per_epoch"] == 7 and config["result"]["steps"] == 10
    # the resume is asked without --steps-per-epoch: the run's own setting is kept
    code, _, err = run_cli(["train", corpus_file, *TINY, "--epochs", "3", "--output-dir", tmp_path,
                            "--name", "e", "--resume"], capsys)
    assert code == 0, err
    history = read_json(tmp_path / "e" / "history.json")
    config = read_json(tmp_path / "e" / "config.json")
    assert history["steps"] == [7, 7, 7] and history["loss"][0] == first["loss"][0]
    assert config["result"]["epochs"] == 3 and config["result"]["stopped"] == "completed"
    # 10 steps before the resume, then epochs 2 and 3 in full: the optimizer's count went on
    assert config["result"]["steps"] == 10 + 2 * 7


def test_steps_per_epoch_longer_than_the_text(corpus_file, tmp_path, capsys):
    """An epoch may span several passes over the text: 80 batches of 16 windows, 545 windows."""
    code, _, err = run_cli(["train", corpus_file, *TINY, "--steps-per-epoch", "80", "--epochs", "1",
                            "--output-dir", tmp_path, "--name", "long"], capsys)
    assert code == 0, err
    assert read_json(tmp_path / "long" / "history.json")["steps"] == [80]
    assert run_cli(["info", tmp_path / "long"], capsys)[1].count("epochs of 80 steps") == 1


def test_a_resumed_endless_run_continues_exactly_where_it_stopped(corpus_file, tmp_path, capsys):
    """Weights, optimizer state and data position all continue: stopping after epoch 1 and resuming
    gives the very losses of an uninterrupted run (training on batches 1-7 again would not)."""
    base = ["train", corpus_file, *TINY, "--steps-per-epoch", "7", "--epochs", "2", "--output-dir", tmp_path]
    assert run_cli([*base, "--name", "whole"], capsys)[0] == 0
    assert run_cli([*base, "--name", "split", "--max-steps", "7"], capsys)[0] == 0
    assert read_json(tmp_path / "split" / "history.json")["steps"] == [7]
    assert run_cli([*base, "--name", "split", "--resume"], capsys)[0] == 0
    whole, split = (read_json(tmp_path / name / "history.json") for name in ("whole", "split"))
    assert split["loss"] == whole["loss"] and split["val_loss"] == whole["val_loss"]
