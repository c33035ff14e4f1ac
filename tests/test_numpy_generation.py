"""Generation without TensorFlow: the numpy sampler draws what the compiled one draws, the numpy
network computes Keras' logits, and `textgen sample` runs on them, writing the API's text."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from textgen.generate import numpy_sampling


def test_the_numpy_sampler_draws_what_the_compiled_sampler_draws():
    import tensorflow as tf

    from textgen.generate import sampling

    rng = np.random.default_rng(0)
    banned = np.zeros(97, bool)
    banned[0] = True
    for trial in range(40):
        batch = 8
        logits = (rng.normal(size=(batch, 97)) * rng.uniform(0.5, 4)).astype(np.float32)
        settings = (rng.choice([0.0, 0.3, 0.8, 1.5], batch).astype(np.float32),
                    rng.choice([0, 1, 5, 200], batch).astype(np.int32),
                    rng.choice([1.0, 0.5, 0.9, 0.99], batch).astype(np.float32),
                    rng.integers(-2**31, 2**31 - 1, batch).astype(np.int32),
                    rng.integers(0, 10_000, batch).astype(np.int32),
                    rng.permutation(batch).astype(np.int32))
        expected = sampling.sample_rows(tf.constant(logits), *map(tf.constant, settings), tf.constant(banned))
        drawn = numpy_sampling.sample_rows(logits, *settings, banned)
        np.testing.assert_array_equal(drawn, expected.numpy(), err_msg=f"trial {trial}")
        seen = rng.random((batch, 97)) < 0.3
        penalty = rng.choice([1.0, 1.3], batch).astype(np.float32)
        penalised = sampling.apply_repetition_penalty(*map(tf.constant, (logits, seen, penalty)))
        np.testing.assert_array_equal(numpy_sampling.apply_repetition_penalty(logits, seen, penalty),
                                      penalised.numpy())


def test_the_noise_never_reaches_one():
    """Seed 57, step 18 hashes column 44 of a 65-token row to the largest uniform, 1 - 2**-25,
    which float32 rounds to 1: its noise was infinite, so that token was drawn whatever its
    probability, even outside top-k. Both samplers keep it below 1."""
    import tensorflow as tf

    from textgen.generate import sampling

    seeds, steps, rows = (np.array([value], np.int32) for value in (57, 18, 0))
    assert numpy_sampling.row_noise(65, seeds, steps, rows).max() < 1
    assert sampling.row_noise(65, *map(tf.constant, (seeds, steps, rows))).numpy().max() < 1
    logits = np.zeros((1, 65), np.float32)
    logits[0, 3], logits[0, 44] = 5.0, -30.0
    settings = (np.float32([1.0]), np.int32([1]), np.float32([1.0]), seeds, steps, rows)
    assert numpy_sampling.sample_rows(logits, *settings)[0] == 3
    assert sampling.sample_rows(tf.constant(logits), *map(tf.constant, settings)).numpy()[0] == 3


@pytest.mark.parametrize("vocab, batch, horizon, tokens", [(65, 1, 500, 64), (65, 64, 500, 63),
                                                          (10_001, 64, 500, 1), (65, 3, 5, 5)])
def test_noise_computed_ahead_is_each_steps_own(vocab, batch, horizon, tokens):
    """`NoiseAhead`'s blocks (`tokens` steps of 1 MB at most, no more than the `horizon`) hold, bit
    for bit, each step's `gumbel_noise`, also where the steps jump."""
    seeds = np.full(batch, -123_456, np.int32)
    rows = (np.arange(batch) + 5).astype(np.int32)
    ahead = numpy_sampling.NoiseAhead(vocab, seeds, rows, horizon)
    for step in [*range(70), 200, 201, 199, 3, *range(130, 140)]:
        steps = np.full(batch, step, np.int32) + np.arange(batch, dtype=np.int32) % 3
        expected = -np.log(-np.log(numpy_sampling.row_noise(vocab, seeds, steps, rows)))
        np.testing.assert_array_equal(ahead.at(steps).view(np.uint32), expected.view(np.uint32),
                                      err_msg=f"step {step}")
    assert ahead.tokens == len(ahead.block) == tokens


def test_the_plain_choice_is_the_general_ones():
    """`choose_plain` (no top-k, top-p or penalty; one temperature) draws what `choose` draws, on one
    row and several, greedy and not, tiny temperatures included."""
    from textgen.generate.step_generator import StepGenerator
    from textgen.text.tokenizers import CharTokenizer

    sampler = StepGenerator(lambda ids, states: None, CharTokenizer("abcdefghij"), {})
    vocab, rng = sampler.tokenizer.vocab_size, np.random.default_rng(4)
    for trial in range(60):
        rows = int(rng.choice([1, 3, 64]))
        logits = (rng.normal(size=(rows, vocab)) * 3).astype(np.float32)
        temperature = np.float32(rng.choice([0.0, 1e-50, 1e-7, 0.3, 1.0, 2.5]))
        seeds = np.full(rows, trial, np.int32)
        steps, row_ids = np.full(rows, trial * 7, np.int32), np.arange(rows, dtype=np.int32)
        neutral = (np.zeros(rows, np.int32), np.ones(rows, np.float32), np.ones(rows, np.float32))
        expected, _ = sampler.choose(logits, np.zeros((rows, vocab), bool), np.full(rows, temperature),
                                     *neutral, seeds, steps, row_ids)
        noise = numpy_sampling.gumbel_noise(vocab, seeds, steps, row_ids)
        np.testing.assert_array_equal(sampler.choose_plain(logits, temperature, noise), expected,
                                      err_msg=f"trial {trial}")


def test_auto_samples_in_numpy_where_that_ends_sooner():
    """The engines break even at fewer tokens the more streams share the loop (bench/RESULTS.md):
    `auto` takes numpy for one stream up to 20,000 tokens and for 64 streams only up to 5,000."""
    from textgen.cli.generate_commands import numpy_is_quicker

    assert numpy_is_quicker(20_000, 1) and not numpy_is_quicker(20_001, 1)
    assert numpy_is_quicker(13_000, 4) and not numpy_is_quicker(14_000, 4)
    assert numpy_is_quicker(5_000, 64) and not numpy_is_quicker(6_000, 64)


@pytest.mark.parametrize("cell, tie_weights", [("gru", False), ("lstm", False), ("rnn", False),
                                               ("lstm", True)])
def test_the_numpy_network_computes_the_keras_logits(cell, tie_weights, tmp_path):
    import keras

    from textgen.generate.numpy_network import NumpyNetwork
    from textgen.generate.step_generator import zero_states
    from textgen.model.network import build_model
    from textgen.store.config import ModelConfig

    keras.utils.set_random_seed(1)
    config = ModelConfig(vocab_size=41, cell=cell, layers=2, units=24, dropout=0.1, embedding_dropout=0.1,
                         embedding_dim=24 if tie_weights else 12, tie_weights=tie_weights)
    model = build_model(config)
    path = tmp_path / "model.keras"
    model.save(path)
    ids = np.random.default_rng(2).integers(0, 41, size=(3, 30)).astype(np.int32)
    expected = keras.ops.convert_to_numpy(model(ids, training=False))

    network = NumpyNetwork(path)
    states = zero_states(network.state_sizes, 3)
    logits = []
    for t in range(ids.shape[1]):
        step, states = network(ids[:, t], states)
        logits.append(step)
    np.testing.assert_allclose(np.stack(logits, axis=1), expected, atol=2e-5)
    assert list(states) == (["h0", "c0", "h1", "c1"] if cell == "lstm" else ["h0", "h1"])


@pytest.mark.parametrize("options", [
    {"seed": 3},
    {"seed": 4, "temperature": [0.5, 1.2], "top_k": 8, "top_p": 0.9, "num_samples": 3},
    {"seed": 5, "temperature": 0.0, "stop": ["\n\n"]},
    {"seed": 6, "repetition_penalty": 1.3, "num_samples": 2},
])
def test_the_numpy_sampler_writes_the_compiled_generators_text(char_model, word_model, options):
    import textgen

    for model in (char_model, word_model):
        compiled, lean = textgen.load(model), textgen.load_sampler(model)
        assert (lean.generate_many("First", 120, **{"num_samples": 1, **options})
                == compiled.generate_many("First", 120, **{"num_samples": 1, **options}))


def run_without_tensorflow(args: list[str]) -> str:
    """`textgen ARGS` in a fresh process, which must import neither TensorFlow nor Keras nor write
    to stderr (LiteRT's start-up line included): its output."""
    script = ("import sys\nfrom textgen.cli import main\n"
              f"code = main({args!r})\n"
              "heavy = sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)\n"
              "print('IMPORTED', heavy)\nsys.exit(code)\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text, imported = result.stdout.rsplit("IMPORTED ", 1)
    assert imported.strip() == "[]"
    return text


def test_sample_runs_without_tensorflow(char_model, tflite_file):
    """`textgen sample` on a model folder or a `.tflite` file imports neither TensorFlow nor Keras,
    and writes the text the Python API gives for the same seed."""
    import textgen

    expected = textgen.load(char_model).generate("ROMEO:", 150, seed=7, top_p=0.95) + "\n"
    for model in (char_model, tflite_file):
        assert run_without_tensorflow(["sample", str(model), "--prime", "ROMEO:", "--length", "150",
                                       "--seed", "7", "--top-p", "0.95"]) == expected


def test_a_missing_tflite_file_is_one_error(tmp_path, capsys):
    from helpers import run_cli

    code, out, err = run_cli(["sample", tmp_path / "phone.tflite"], capsys)
    assert code == 2 and "no such file" in err and len(err.strip().splitlines()) == 1 and out == ""


def test_each_engine_writes_the_same_samples(char_model, capsys):
    from helpers import run_cli

    outputs = {}
    for engine in ("numpy", "compiled", "auto"):
        code, outputs[engine], err = run_cli(["sample", char_model, "--length", "80", "--num-samples", "2",
                                              "--seed", "11", "--engine", engine], capsys)
        assert code == 0, err
    assert outputs["numpy"] == outputs["compiled"] == outputs["auto"]
    assert "=== sample 2 ===" in outputs["auto"]
    code, _, err = run_cli(["sample", char_model, "--engine", "jax"], capsys)
    assert code == 2 and "'--engine'" in err and len(err.strip().splitlines()) == 1
