"""Scale and resilience: epochs of a fixed number of steps, backups within epochs."""

import json
import os
import subprocess
import sys
import time

import pytest

from helpers import SHAKESPEARE, TINY, run_cli


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
    assert 0 < config["result"]["first_step_seconds"] < config["result"]["train_seconds"] + 60
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
    # a constant rate: --max-steps shapes the cosine schedule, so the split run's would differ by design
    base = ["train", corpus_file, *TINY, "--steps-per-epoch", "7", "--epochs", "2", "--output-dir", tmp_path,
            "--lr-schedule", "constant"]
    assert run_cli([*base, "--name", "whole"], capsys)[0] == 0
    assert run_cli([*base, "--name", "split", "--max-steps", "7"], capsys)[0] == 0
    assert read_json(tmp_path / "split" / "history.json")["steps"] == [7]
    assert run_cli([*base, "--name", "split", "--resume"], capsys)[0] == 0
    whole, split = (read_json(tmp_path / name / "history.json") for name in ("whole", "split"))
    assert split["loss"] == whole["loss"] and split["val_loss"] == whole["val_loss"]


def test_a_resumed_run_of_one_pass_epochs_continues_the_shuffle_order(corpus_file, tmp_path, capsys):
    """Each epoch is a pass in its own seeded order: stopping after epoch 1 and resuming gives the
    losses of an uninterrupted run (a resumed run replaying epoch 1's order would not)."""
    base = ["train", corpus_file, *TINY, "--epochs", "2", "--output-dir", tmp_path,
            "--lr-schedule", "constant"]  # as above
    assert run_cli([*base, "--name", "whole"], capsys)[0] == 0
    per_epoch = read_json(tmp_path / "whole" / "history.json")["steps"][0]
    code, _, err = run_cli([*base, "--name", "split", "--max-steps", str(per_epoch)], capsys)
    assert code == 0, err
    assert read_json(tmp_path / "split" / "history.json")["steps"] == [per_epoch]
    assert run_cli([*base, "--name", "split", "--resume"], capsys)[0] == 0
    whole, split = (read_json(tmp_path / name / "history.json") for name in ("whole", "split"))
    assert split["loss"] == whole["loss"] and split["val_loss"] == whole["val_loss"]


# -- backups within epochs -----------------------------------------------------------------------
@pytest.mark.parametrize(("every_steps", "every_seconds", "expected"), [
    (2, None, [None, 2, 2, 4, 4, 6, 6]),   # --backup-every 2
    (None, 0.0, [1, 2, 3, 4, 5, 6, 6]),    # the time-based default, with a clock that is always due
    (None, 600.0, [None] * 6 + [6]),       # the default on short epochs: only at the end of each one
])
def test_backup_frequency(every_steps, every_seconds, expected, tmp_path):
    """What the backup holds after each of 6 steps, then after the epoch (its optimizer step count)."""
    import keras
    import numpy as np

    from textgen.training.backup import BACKUP_METADATA, RunBackup, backup_position
    from textgen.training.callbacks import BudgetStop

    class Watch(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seen = []

        def on_train_batch_end(self, batch, logs=None):
            backed_up = (tmp_path / BACKUP_METADATA).exists()
            self.seen.append(backup_position(tmp_path).steps if backed_up else None)

        def on_epoch_end(self, epoch, logs=None):
            self.seen.append(backup_position(tmp_path).steps)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    watch = Watch()
    budget = BudgetStop(None, None)
    model.fit(np.ones((12, 3)), np.ones(12), batch_size=2, epochs=1, verbose=0, shuffle=False,
              callbacks=[budget, RunBackup(tmp_path, budget, every_steps, every_seconds), watch])
    assert watch.seen == expected
    assert backup_position(tmp_path).epoch == 1  # the finished epoch is recorded


def test_a_crash_between_weights_and_metadata_resumes_from_a_matching_pair(tmp_path):
    """A kill after the new weights replaced the old but before the metadata did leaves them
    mismatched: the resume must use the previous complete backup, never the new weights with the
    old epoch (which would redo an epoch from weights that already learned it)."""
    import keras
    import numpy as np

    from textgen.training.backup import RunBackup
    from textgen.training.callbacks import BudgetStop

    def fitted_model(epochs: int) -> keras.Model:
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(optimizer="adam", loss="mse")
        budget = BudgetStop(None, None)
        model.fit(np.ones((4, 3)), np.ones(4), epochs=epochs, verbose=0,
                  callbacks=[budget, RunBackup(tmp_path, budget)])
        return model

    after_two = fitted_model(2).get_weights()  # backups: epoch 1 (as .bkp) and epoch 2
    weights = tmp_path / "latest.weights.h5"
    meta = tmp_path / "training_metadata.json"
    # The crash: the next backup had moved the current pair aside and replaced the weights.
    (tmp_path / "latest.weights.h5.bkp").write_bytes(weights.read_bytes())
    (tmp_path / "training_metadata.json.bkp").write_bytes(meta.read_bytes())
    changed = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    changed.compile(optimizer="adam", loss="mse")
    changed.optimizer.build(changed.trainable_variables)
    changed.save_weights(weights)

    restored = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    restored.compile(optimizer="adam", loss="mse")
    backup = RunBackup(tmp_path, BudgetStop(None, None))
    backup.set_model(restored)
    backup.on_train_begin()
    assert restored._initial_epoch == 2
    for got, expected in zip(restored.get_weights(), after_two, strict=True):
        np.testing.assert_array_equal(got, expected)

    # Without any complete pair (a first backup cut short), training starts from the beginning.
    meta.unlink()
    (tmp_path / "training_metadata.json.bkp").unlink()
    fresh = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    fresh.compile(optimizer="adam", loss="mse")
    backup = RunBackup(tmp_path, BudgetStop(None, None))
    backup.set_model(fresh)
    backup.on_train_begin()
    assert getattr(fresh, "_initial_epoch", 0) in (0, None) and not weights.exists()


def test_resume_after_a_sigkill_in_the_middle_of_an_epoch(tmp_path, capsys):
    """A run killed without warning mid-epoch resumes from its last step backup: the finished epoch
    is not done again, and the optimizer's step count goes on from the backup."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(SHAKESPEARE.read_text(encoding="utf-8")[:60_000], encoding="utf-8")
    args = ["train", str(corpus), "--layers", "1", "--units", "16", "--embedding-dim", "8", "--seq-len", "32",
            "--batch-size", "16", "--epochs", "2", "--backup-every", "10", "--no-samples", "--quiet",
            "--output-dir", str(tmp_path), "--name", "k"]
    proc = subprocess.Popen([sys.executable, "-m", "textgen", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,  # killed: its TensorFlow temporaries stay in tmp_path
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TMPDIR": str(tmp_path)})
    metadata = tmp_path / ".k.training" / "backup" / "training_metadata.json"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if metadata.exists() and read_json(metadata)["epoch"] == 1 and read_json(metadata)["batch"] > 0:
                break  # a step backup inside the second epoch
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    backup = read_json(metadata)
    before = read_json(tmp_path / ".k.training" / "history.json")
    per_epoch = before["steps"][0]  # 1,636 windows of 33 characters: 103 batches
    assert backup["epoch"] == 1 and len(before["loss"]) == 1, (backup, before)
    assert per_epoch < backup["steps"] < 2 * per_epoch  # killed mid-epoch, after a step backup
    assert not (tmp_path / "k").exists()

    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 0, err
    history = read_json(tmp_path / "k" / "history.json")
    result = read_json(tmp_path / "k" / "config.json")["result"]
    assert history["steps"] == [per_epoch, per_epoch] and history["loss"][0] == before["loss"][0]
    assert result["epochs"] == 2 and result["stopped"] == "completed"
    # the optimizer went on from the step backup: its steps, then the second epoch once more in full
    assert result["steps"] == backup["steps"] + per_epoch
    assert not (tmp_path / ".k.training").exists()
