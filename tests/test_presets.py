"""Presets: named sizes, the user's options on top, and `auto` sizing the network by the budget."""

from __future__ import annotations

import json
import math
import signal

import numpy as np
import pytest

from textgen.errors import TextgenError
from textgen.model import machine, presets
from textgen.store.config import WEIGHT_DECAY, ModelConfig, TrainConfig
from textgen.training import callbacks

from helpers import TINY, run_cli

CORPUS_TOKENS = 1_000_000


def budget(**limits) -> presets.RunLimits:
    return presets.RunLimits(train_tokens=CORPUS_TOKENS, seq_len=100, batch_size=64, epochs=20, **limits)


def never_measured() -> float:
    raise AssertionError("a budget without a time limit needs no speed estimate")


def test_presets_grow_from_tiny_to_xlarge():
    for level in ("char", "word"):
        table = presets.PRESETS[level]
        assert [p.name for p in table] == list(presets.NAMES)
        flops = [presets.train_flops_per_token(**p.settings(), vocab_size=100) for p in table]
        assert flops == sorted(flops) and len(set(flops)) == len(flops)
        for p in table:  # every preset builds a valid network
            ModelConfig(vocab_size=100, **p.network())
    assert all(p.tie_weights for p in presets.PRESETS["word"])


@pytest.mark.parametrize("limits", [{}, {"max_steps": 100}, {"max_steps": 10**6}, {"steps_per_epoch": 10}])
def test_auto_without_a_time_limit_is_small_and_measures_nothing(limits):
    choice = presets.resolve("auto", "char", 66, budget(**limits), {}, never_measured)
    assert choice.preset.name == presets.DEFAULT_WITHOUT_TIME_LIMIT == "small"
    assert choice.planned_passes is None and "without --time-limit" in choice.describe()


def test_steps_and_epochs_that_end_a_timed_run_sooner_shrink_the_plan():
    fast = lambda: 1e14  # noqa: E731  (a machine on which time is no limit)
    largest = presets.resolve("auto", "char", 66, budget(time_limit=60), {}, fast)
    assert largest.preset.name == presets.NAMES[-1]
    short = presets.resolve("auto", "char", 66, budget(time_limit=60, max_steps=100), {}, fast)
    assert short.preset.name == "tiny" and short.planned_passes == pytest.approx(0.64)
    one_epoch = presets.RunLimits(train_tokens=CORPUS_TOKENS, seq_len=100, batch_size=64, epochs=1,
                               time_limit=60)
    assert presets.resolve("auto", "char", 66, one_epoch, {}, fast).planned_passes == 1


def planned_tokens(name: str, seconds: float, peak: float) -> float:
    p = presets.preset("char", name)
    timed = seconds * presets.TIMED_SHARE * peak * p.efficiency / presets.train_flops_per_token(
        **p.settings(), vocab_size=66)
    return min(timed, 20 * CORPUS_TOKENS)  # the 20 epochs end the run first


def test_auto_picks_the_largest_preset_the_time_lets_learn_enough():
    peak = 1e11  # FLOP/s
    for seconds in (30, 300, 3000, 30_000):
        choice = presets.resolve("auto", "char", 66, budget(time_limit=seconds), {}, lambda: peak)
        chosen = choice.preset.name
        assert choice.planned_passes == pytest.approx(planned_tokens(chosen, seconds, peak) / CORPUS_TOKENS)
        for name in presets.NAMES[presets.NAMES.index(chosen) + 1:]:  # each larger one learns too little
            tokens = planned_tokens(name, seconds, peak)
            assert tokens < presets.preset("char", name).min_passes * CORPUS_TOKENS
            assert tokens < presets.TOKENS_PER_PARAMETER * presets.parameters(
                **presets.preset("char", name).settings(), vocab_size=66)
    sizes = [presets.resolve("auto", "char", 66, budget(time_limit=s), {}, lambda: peak).preset.name
             for s in (30, 300, 3000, 30_000, 300_000)]
    assert sizes == sorted(sizes, key=presets.NAMES.index)  # more time, never a smaller network


def test_on_a_large_corpus_tokens_per_parameter_decide():
    """A corpus too large to be read a preset's `min_passes` times still gets a network its tokens
    can train."""
    huge = presets.RunLimits(train_tokens=10**10, seq_len=100, batch_size=64, epochs=20, time_limit=3600)
    choice = presets.resolve("auto", "char", 66, huge, {}, lambda: 1e11)
    assert choice.planned_passes < choice.preset.min_passes and choice.preset.name != "tiny"


def test_parameters_are_those_keras_counts():
    from textgen.model.network import build_model

    for level in ("char", "word"):
        for p in presets.PRESETS[level][:3]:
            settings = p.network()
            model = build_model(ModelConfig(vocab_size=500, **settings))
            assert presets.parameters(**settings, vocab_size=500) == model.count_params(), (level, p.name)
    for cell in ("lstm", "rnn"):
        model = build_model(ModelConfig(vocab_size=70, cell=cell, layers=2, units=16, embedding_dim=8))
        assert presets.parameters(cell, 2, 16, 8, 70) == model.count_params()


def test_auto_estimates_the_speed_of_the_cell_the_user_chose():
    peak = 1e11
    gru = presets.resolve("auto", "char", 66, budget(time_limit=500), {}, lambda: peak)
    rnn = presets.resolve("auto", "char", 66, budget(time_limit=500), {"cell": "rnn"}, lambda: peak)
    assert rnn.settings["cell"] == "rnn"  # a cheaper cell: a larger network fits the same time
    assert presets.NAMES.index(rnn.preset.name) > presets.NAMES.index(gru.preset.name)


def test_given_settings_override_the_preset():
    choice = presets.resolve("medium", "char", 66, budget(), {"units": 300, "lr": 1e-3, "dropout": None},
                             never_measured)
    medium = presets.preset("char", "medium")
    assert choice.settings == {**medium.settings(), "units": 300, "lr": 1e-3}
    assert choice.describe() == "preset medium (GRU 2x300)"


def test_a_preset_batch_size_applies_unless_the_user_gives_one():
    """`large` trains on batches of 32 unless --batch-size says otherwise; auto plans a step-bounded
    run by the batches its candidate would train on."""
    large = presets.preset("char", "large")
    assert large.batch_size == 32 and presets.preset("char", "medium").batch_size is None
    defaults = budget(batch_given=False)
    assert presets.resolve("large", "char", 66, defaults, {}, never_measured).batch_size == 32
    assert presets.resolve("medium", "char", 66, defaults, {}, never_measured).batch_size == 64
    assert presets.resolve("large", "char", 66, budget(), {}, never_measured).batch_size == 64  # given
    fast = lambda: 1e14  # noqa: E731
    steps = budget(time_limit=60, max_steps=1000, batch_given=False)
    assert defaults.tokens(large, fast) == 20 * CORPUS_TOKENS  # the epochs end it first
    assert steps.tokens(large, fast) == 1000 * 100 * 32
    assert steps.tokens(presets.preset("char", "medium"), fast) == 1000 * 100 * 64


def test_a_preset_weight_decay_applies_unless_the_user_gives_one():
    """Char `large` trains with AdamW's weight decay 0.3, the other presets with WEIGHT_DECAY; a
    --weight-decay given (0 too: plain Adam) wins, and SGD has none."""
    large = presets.preset("char", "large").weight_decay
    assert large == 0.3 and presets.preset("char", "medium").weight_decay is None
    assert TrainConfig().optimized("adamw", 2e-3, large).weight_decay == 0.3
    assert TrainConfig().optimized("adamw", 2e-3).weight_decay == WEIGHT_DECAY == 0.1
    assert TrainConfig(weight_decay=0.05).optimized("adamw", 2e-3, large).weight_decay == 0.05
    assert TrainConfig(weight_decay=0.0).optimized("adamw", 2e-3, large).weight_decay == 0.0
    assert TrainConfig().optimized("sgd", 20.0, large).weight_decay == 0.0


def test_word_presets_train_with_sgd_and_keep_an_adamw_rate():
    """Word presets train as PyTorch's word_language_model (SGD at 20, global clipping 0.25);
    asking for AdamW takes the preset's AdamW rate, and its clipping and weight decay."""
    resolve = lambda given: presets.resolve("small", "word", 500, budget(), given, never_measured).settings  # noqa: E731
    sgd = resolve({})
    assert (sgd["optimizer"], sgd["lr"]) == ("sgd", 20.0)
    config = TrainConfig().optimized(sgd["optimizer"], sgd["lr"])
    assert (config.clipnorm, config.weight_decay) == (0.25, 0.0)
    adamw = resolve({"optimizer": "adamw"})
    assert (adamw["optimizer"], adamw["lr"]) == ("adamw", presets.preset("word", "small").rate("adamw"))
    config = TrainConfig(clipnorm=0.0).optimized("adamw", adamw["lr"])
    assert (config.clipnorm, config.weight_decay) == (0.0, 0.1)  # 0: clipping off, as given
    assert resolve({"optimizer": "adamw", "lr": 1e-3})["lr"] == 1e-3
    assert all(p.optimizer == "adamw" for p in presets.PRESETS["char"])
    assert all(p.optimizer == "sgd" for p in presets.PRESETS["word"])
    with pytest.raises(TextgenError, match="--optimizer sgd needs --lr: the presets have no sgd rate"):
        presets.resolve("small", "char", 66, budget(), {"optimizer": "sgd"}, never_measured)
    with pytest.raises(TextgenError, match="--weight-decay is AdamW's; SGD trains without it"):
        TrainConfig(weight_decay=0.1).optimized("sgd", 20.0)


def test_auto_stops_word_runs_after_the_passes_that_help():
    """Given time for more passes than word models gain from, auto keeps the largest preset but
    ends the run (decayed) after MAX_USEFUL_PASSES; char runs and shorter budgets are untouched."""
    useful = presets.MAX_USEFUL_PASSES["word"]
    long = presets.resolve("auto", "word", 500, budget(time_limit=3600), {}, lambda: 1e11)
    assert long.planned_passes > useful and long.stop_after_passes == useful
    assert long.stop_at_step == math.ceil(useful * CORPUS_TOKENS / 6400)
    assert f"it trains {useful:g} of them ({long.stop_at_step:,} steps)" in long.describe()
    short = presets.resolve("auto", "word", 500, budget(time_limit=3600, max_steps=100), {}, lambda: 1e11)
    assert short.planned_passes < useful and short.stop_at_step is None
    char = presets.resolve("auto", "char", 66, budget(time_limit=3600), {}, lambda: 1e11)
    assert char.planned_passes > useful and char.stop_at_step is None
    named = presets.resolve("large", "word", 500, budget(time_limit=3600), {}, never_measured)
    assert named.stop_at_step is None  # a preset the user names trains for the whole budget


def test_tied_presets_follow_the_user_sizes():
    word = presets.preset("word", "small")
    resolve = lambda given: presets.resolve("small", "word", 500, budget(), given, never_measured).settings  # noqa: E731
    assert resolve({"units": 300})["embedding_dim"] == 300 and resolve({"units": 300})["tie_weights"]
    untied = resolve({"units": 300, "embedding_dim": 100})
    assert not untied["tie_weights"] and untied["embedding_dim"] == 100
    assert resolve({"tie_weights": False})["tie_weights"] is False
    assert resolve({})["embedding_dim"] == word.embedding_dim == word.units
    with pytest.raises(TextgenError, match="tied weights need --embedding-dim equal to --units"):
        ModelConfig(vocab_size=500, units=32, embedding_dim=16, tie_weights=True)


def test_the_matmul_rate_is_measured_once():
    first = machine.measured_matmul_flops()
    assert first > 1e8 and machine.measured_matmul_flops() == first


def test_train_records_the_preset_and_its_settings(corpus_file, tmp_path, capsys):
    code, out, err = run_cli(["train", corpus_file, "--preset", "tiny", "--max-steps", "2", "--seq-len", "32",
                              "--no-samples", "--output-dir", tmp_path, "--name", "p"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "p" / "config.json").read_text())
    tiny = presets.preset("char", "tiny")
    assert config["preset"] == {"requested": "tiny", "used": "tiny", "description": "preset tiny (GRU 1x128)"}
    assert {k: config["model"][k] for k in ("cell", "layers", "units", "embedding_dim", "dropout")} == \
        {"cell": "gru", "layers": 1, "units": 128, "embedding_dim": 32, "dropout": 0.0}
    assert (config["train"]["optimizer"], config["train"]["lr"]) == ("adamw", tiny.rate("adamw"))
    assert config["train"]["batch_size"] == 64  # the level's: tiny has no batch size of its own
    assert "preset tiny (GRU 1x128)" in out and "batches of 64 x 32" in out


def test_a_preset_with_its_own_batch_size_and_weight_decay_trains_on_them(corpus_file, tmp_path, capsys):
    args = ["train", corpus_file, "--preset", "large", "--units", "16", "--embedding-dim", "8", "--max-steps",
            "1", "--seq-len", "32", "--no-samples", "--output-dir", tmp_path]
    code, out, err = run_cli([*args, "--name", "own"], capsys)
    assert code == 0, err
    train = json.loads((tmp_path / "own" / "config.json").read_text())["train"]
    assert (train["batch_size"], train["lr"], train["weight_decay"]) == (32, 2e-3, 0.3)
    assert "batches of 32 x 32" in out
    given = ["--batch-size", "8", "--weight-decay", "0.05"]
    code, out, err = run_cli([*args, "--name", "given", *given], capsys)
    assert code == 0, err
    train = json.loads((tmp_path / "given" / "config.json").read_text())["train"]
    assert (train["batch_size"], train["weight_decay"]) == (8, 0.05)


def test_auto_with_a_time_limit_says_what_it_planned(corpus_file, tmp_path, capsys):
    code, out, err = run_cli(["train", corpus_file, "--time-limit", "3", "--seq-len", "32", "--no-samples",
                              "--output-dir", tmp_path, "--name", "a", "--units", "16", "--layers", "1"],
                             capsys)
    assert code == 0, err
    record = json.loads((tmp_path / "a" / "config.json").read_text())["preset"]
    assert record["requested"] == "auto" and record["planned_passes"] > 0
    assert "passes over the training text" in out


def test_a_word_run_with_time_for_too_many_passes_stops_after_the_useful_ones(corpus_file, tmp_path, capsys):
    code, _, err = run_cli(["train", corpus_file, *TINY, "--level", "word", "--seq-len", "16",
                            "--time-limit", "600", "--output-dir", tmp_path, "--name", "w"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    useful = presets.MAX_USEFUL_PASSES["word"]
    steps = math.ceil(useful * config["corpus"]["train_tokens"] / (16 * 16))
    assert config["preset"]["stop_after_passes"] == useful and config["preset"]["stop_at_step"] == steps
    assert config["train"]["max_steps"] is None  # a session's limit; the run's own end is the preset's
    # the passes planned are done: a finished run, with nothing left to resume
    assert config["result"]["stopped"] == "completed" and config["result"]["steps"] == steps
    assert config["result"]["train_seconds"] < 600
    assert not (tmp_path / ".w.training").exists()


def test_a_resumed_word_run_still_stops_after_the_useful_passes(corpus_file, tmp_path, capsys, monkeypatch):
    """The stop after MAX_USEFUL_PASSES counts the whole run's steps: a run interrupted after its
    first epoch and resumed with another session's budget trains only the steps left."""
    epoch_end = callbacks.EpochLog.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        epoch_end(self, epoch, logs)
        if epoch == 0:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C after the first epoch

    args = ["train", corpus_file, *TINY, "--level", "word", "--seq-len", "16", "--output-dir", tmp_path,
            "--name", "w"]
    with monkeypatch.context() as patched:
        patched.setattr(callbacks.EpochLog, "on_epoch_end", on_epoch_end)
        code, _, err = run_cli([*args, "--time-limit", "600"], capsys)
    assert code == 130, err
    first = json.loads((tmp_path / "w" / "config.json").read_text())
    planned = first["preset"]["stop_at_step"]
    assert first["result"]["stopped"] == "interrupted" and first["result"]["steps"] < planned

    code, _, err = run_cli([*args, "--resume", "--time-limit", "900"], capsys)
    assert code == 0, err
    config = json.loads((tmp_path / "w" / "config.json").read_text())
    assert config["preset"]["stop_at_step"] == planned
    assert config["result"]["stopped"] == "completed" and config["result"]["steps"] == planned
    assert not (tmp_path / ".w.training").exists()


def test_tied_word_model_trains_saves_and_generates(corpus_file, tmp_path, capsys):
    import textgen

    code, _, err = run_cli(["train", corpus_file, *TINY, "--level", "word", "--seq-len", "16",
                            "--epochs", "1", "--output-dir", tmp_path, "--name", "w"], capsys)
    assert code == 0, err
    model = textgen.load(tmp_path / "w")
    assert model.config.model.tie_weights
    train = model.config.train
    assert (train.optimizer, train.lr, train.clipnorm, train.weight_decay) == ("sgd", 20.0, 0.25, 0.0)
    assert "logits" not in [layer.name for layer in model.keras_model.layers]
    parameters = model.keras_model.count_params()
    vocab = model.config.model.vocab_size
    assert parameters < 2 * vocab * 8  # one vocabulary matrix, not two
    ids = model.tokenizer.encode("ROMEO: what")[None, :]
    logits = model.keras_model(ids, training=False).numpy()[0, -1]
    step_logits, _ = model.generator._prime(ids.astype(np.int32))[:2]
    np.testing.assert_allclose(step_logits.numpy()[0], logits, atol=1e-5)


@pytest.mark.parametrize(("args", "message"), [
    (["--preset", "huge"], "'huge' is not one of"),
    (["--tie-weights", "--units", "32", "--embedding-dim", "16"], "tied weights need --embedding-dim equal"),
])
def test_bad_preset_options(corpus_file, tmp_path, capsys, args, message):
    code, _, err = run_cli(["train", corpus_file, *args, "--max-steps", "1", "--output-dir", tmp_path,
                            "--name", "bad"], capsys)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "bad").exists() and not (tmp_path / ".bad.training").exists()
