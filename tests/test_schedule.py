import itertools
import json

import keras
import pytest

from textgen.training import schedule
from textgen.training.schedule import DECAY, FINAL, WARMUP, BudgetSchedule, multiplier

from helpers import TINY, run_cli


def test_warm_up_then_cosine_decay_to_a_tenth():
    assert multiplier(0.0, "cosine") == 0.0
    assert multiplier(WARMUP / 2, "cosine") == pytest.approx(0.5)
    assert multiplier(WARMUP, "cosine") == pytest.approx(1.0)
    assert multiplier(1.0, "cosine") == pytest.approx(FINAL)
    assert multiplier(2.0, "cosine") == pytest.approx(FINAL)  # past the end (a budget overrun): stays low
    decay = [multiplier(WARMUP + (1 - WARMUP) * i / 100, "cosine") for i in range(101)]
    assert all(a > b for a, b in itertools.pairwise(decay))


def test_wsd_holds_the_rate_until_the_last_quarter():
    assert multiplier(WARMUP / 2) == pytest.approx(0.5)  # wsd is the default shape
    assert multiplier(WARMUP) == multiplier(0.5) == multiplier(1 - DECAY) == 1.0
    assert multiplier(1 - DECAY / 2) == pytest.approx((1 + FINAL) / 2)
    assert multiplier(1.0) == pytest.approx(FINAL)
    decay = [multiplier(1 - DECAY + DECAY * i / 100) for i in range(101)]
    assert all(a > b for a, b in itertools.pairwise(decay))


def test_progress_is_the_budget_that_ends_first(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock[0])
    planned = BudgetSchedule(1e-3, "wsd", total_steps=1000, max_steps=None, time_limit=None)
    planned.start, planned.first_step, planned.session_steps = 100.0, 400, 100
    assert planned.progress() == pytest.approx(0.5)  # a resumed run: 500 of 1,000 steps
    limited = BudgetSchedule(1e-3, "wsd", total_steps=1000, max_steps=200, time_limit=60.0)
    limited.start, limited.first_step, limited.session_steps = 100.0, 0, 50
    limited.start_clock()
    assert limited.progress() == pytest.approx(0.25)  # 50 of 200 steps; 0 of 60 s
    clock[0] = 145.0
    assert limited.progress() == pytest.approx(0.75)  # 45 of 60 s


def test_the_clock_starts_after_the_first_step_so_tracing_spends_no_warm_up(monkeypatch):
    clock = [0.0]
    monkeypatch.setattr(schedule.time, "perf_counter", lambda: clock[0])
    timed = BudgetSchedule(1e-3, "wsd", total_steps=10**6, max_steps=None, time_limit=300.0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    timed.set_model(model)
    timed.on_train_begin()
    timed.on_train_batch_begin(0)
    assert float(timed.model.optimizer.learning_rate.numpy()) == 0.0  # warming up from zero
    clock[0] = 10.0  # the first step traced for 10 s: past 2% of the 300 s budget
    timed.on_train_batch_end(0)
    timed.on_train_batch_begin(1)
    assert timed.progress() == pytest.approx(1 / 10**6)  # one step, no time yet
    assert float(timed.model.optimizer.learning_rate.numpy()) < 1e-3 / 2  # still warming up
    clock[0] = 10.0 + 290.0 * 0.5
    assert timed.progress() == pytest.approx(0.5)  # half of the 290 s left after tracing


@pytest.mark.parametrize("schedule_name", ["wsd", "cosine", "constant"])
def test_training_follows_the_schedule_to_the_end_of_its_epochs(schedule_name, corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--epochs", 3, "--lr", 0.01, "--lr-schedule",
                            schedule_name, "--output-dir", tmp_path, "--name", "m"], capsys)
    assert code == 0, err
    history = json.loads((tmp_path / "m" / "history.json").read_text(encoding="utf-8"))
    config = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert config["train"]["lr_schedule"] == schedule_name
    if schedule_name == "constant":
        assert "learning_rate" not in history
        return
    rates = history["learning_rate"]
    steps = sum(history["steps"])
    if schedule_name == "cosine":
        assert len(rates) == 3 and rates[0] > rates[1] > rates[2]
    else:  # the full rate through two thirds of the run, then the decay
        assert len(rates) == 3 and rates[0] == rates[1] == pytest.approx(0.01) and rates[1] > rates[2]
    assert rates[-1] == pytest.approx(0.01 * multiplier((steps - 1) / steps, schedule_name), rel=1e-5)


def test_an_unknown_schedule_is_a_usage_error(corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--lr-schedule", "linear", "--output-dir", tmp_path],
                           capsys)
    assert code == 2 and "linear" in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("shape", ["wsd", "cosine", None])
def test_early_stopping_under_wsd_waits_for_the_decay(shape):
    """A validation loss that stalls while wsd holds the rate must not stop the run: it falls once
    the rate decays. In the decay, and under cosine or a constant rate, patience counts as usual."""
    import keras

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False  # as fit sets it
    planned = None if shape is None else BudgetSchedule(1e-3, shape, total_steps=100, max_steps=None,
                                                        time_limit=None)
    stopper = schedule.EarlyStopping(planned, patience=2)
    stopper.set_model(model)
    stopper.on_train_begin()
    if planned is not None:
        planned.first_step = 0
    stops = []
    for epoch, loss in enumerate([1.0, 1.1, 1.2, 1.3, 1.4, 1.5]):  # worse every epoch
        if planned is not None:
            planned.session_steps = 15 * epoch  # progress 0, 0.15, ... 0.75 (the decay begins)
        stopper.on_epoch_end(epoch, {"val_loss": loss})
        stops.append(bool(model.stop_training))
    if shape == "wsd":
        assert stops == [False] * 6 and stopper.best == 1.0
        stopper.on_epoch_end(6, {"val_loss": 1.6})  # the second epoch of the decay without a gain
        assert model.stop_training
    else:
        assert stops.index(True) == 2
