"""`textgen export`: SavedModel and TFLite files that compute what the Keras model computes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers import CELLS, run_cli, shakespeare, train


def runtimes(model: Path) -> list[Path]:
    return [model, model / "export" / "saved_model", model / "export" / "model.tflite"]


@pytest.mark.parametrize("cell", CELLS)
def test_greedy_text_is_byte_identical_in_keras_savedmodel_and_tflite(exported, cell, capsys):
    outputs = set()
    for target in runtimes(exported[cell]):
        code, out, err = run_cli(["sample", target, "--prime", "ROMEO:", "--temperature", "0",
                                  "--length", "200"], capsys)
        assert code == 0, err
        assert err == ""  # LiteRT's start-up line is hidden too
        outputs.add(out)
    assert len(outputs) == 1 and next(iter(outputs)).startswith("ROMEO:")


def test_word_model_greedy_and_seeded_text_is_identical_in_every_runtime(exported_word, capsys, tmp_path):
    for options in (["--temperature", "0"], ["--temperature", "0.9", "--top-k", "20", "--seed", "5"]):
        outputs = {run_cli(["sample", target, "--prime", "First Citizen", "--length", "80", *options],
                           capsys)[1] for target in runtimes(exported_word)}
        assert len(outputs) == 1
    code, _, err = run_cli(["export", exported_word, "--format", "tflite", "--quantize", "dynamic",
                            "--output", tmp_path / "int8"], capsys)
    assert code == 0, err
    int8 = tmp_path / "int8" / "model.tflite"
    code, out, _ = run_cli(["sample", int8, "--prime", "First", "--length", "30"], capsys)
    assert code == 0 and out.startswith("First")


def test_seeded_sampling_gives_the_same_text_in_every_runtime(exported, capsys):
    """The noise is a hash of (seed, position), identical under XLA, plain TF and around LiteRT."""
    options = ["--prime", "KING", "--length", "120", "--temperature", "1.0", "--top-p", "0.9", "--seed", "7"]
    outputs = {run_cli(["sample", target, *options], capsys)[1] for target in runtimes(exported["gru"])}
    assert len(outputs) == 1


@pytest.mark.parametrize("cell", CELLS)
def test_float_exports_give_keras_logits_over_300_steps(exported, cell):
    import textgen
    from textgen.export.litert import step_logits

    model = textgen.load(exported[cell])
    ids = model.tokenizer.encode(shakespeare()[50_000:50_300])[np.newaxis, :]
    reference = np.asarray(model.keras_model(ids, training=False))
    for target in runtimes(exported[cell])[1:]:
        export = textgen.load(target)
        difference = np.abs(step_logits(export.runner, export.metadata, ids) - reference).max()
        assert difference < 1e-4, (target, difference)


def test_savedmodel_serves_text_without_textgen(exported, tmp_path):
    """Plain TensorFlow in a fresh process: prompts of different lengths in one batch, all settings
    chosen at call time; greedy rows equal what textgen generates for each prompt alone."""
    import textgen

    script = tmp_path / "serve.py"
    script.write_text(
        "import json, sys\n"
        "import tensorflow as tf\n"
        "model = tf.saved_model.load(sys.argv[1])\n"
        "serve = model.signatures['serving_default']\n"
        "prompts = tf.constant(['ROMEO:', '', 'First Citizen:\\nWe are'])\n"
        "def run(t, k, p, seed):\n"
        "    out = serve(prompts=prompts, num_tokens=tf.constant(60), temperature=tf.constant(t),\n"
        "                top_k=tf.constant(k), top_p=tf.constant(p), seed=tf.constant(seed))\n"
        "    return [x.decode() for x in out['text'].numpy()]\n"
        "print(json.dumps({'greedy': run(0.0, 0, 1.0, 0), 'sampled': run(0.8, 10, 0.95, 3),\n"
        "                  'textgen_imported': any(m.startswith('textgen') for m in sys.modules)}))\n",
        encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, str(script), str(exported["lstm"] / "export" / "saved_model")],
                            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served["textgen_imported"] is False
    model = textgen.load(exported["lstm"])
    prompts = ["ROMEO:", "", "First Citizen:\nWe are"]
    assert served["greedy"] == [model.generate(p, 60, temperature=0) for p in prompts]
    # Each row draws its own noise (one batch holds several samples), so only row 0 is a batch of one.
    assert served["sampled"][0] == model.generate(prompts[0], 60, temperature=0.8, top_k=10, top_p=0.95,
                                                  seed=3)
    assert all(text.startswith(p) and len(text) == len(p) + 60
               for text, p in zip(served["sampled"], prompts, strict=True))


def test_exports_hold_each_weight_once(exported):
    import textgen

    model = textgen.load(exported["lstm"])
    weight_bytes = 4 * model.keras_model.count_params()
    variables = exported["lstm"] / "export" / "saved_model" / "variables"
    assert sum(f.stat().st_size for f in variables.iterdir()) < 1.1 * weight_bytes + 10_000
    assert (exported["lstm"] / "export" / "model.tflite").stat().st_size < 1.1 * weight_bytes + 20_000


@pytest.mark.parametrize("cell", CELLS)
def test_tflite_runs_on_builtin_ops_and_matches_its_metadata(exported, cell):
    from textgen.export.litert import LiteRTStep

    export_dir = exported[cell] / "export"
    metadata = json.loads((export_dir / "metadata.json").read_text(encoding="utf-8"))
    runner = LiteRTStep(export_dir / "model.tflite")
    assert not [op for op in runner.op_names() if op.startswith("Flex") or op == "CUSTOM"]
    assert "WHILE" not in runner.op_names()  # a step model: no loop inside
    signature = runner.interpreter.get_signature_list()["step"]
    assert sorted(signature["inputs"]) == sorted(metadata["inputs"])
    assert sorted(signature["outputs"]) == sorted(metadata["outputs"])
    states = ["h0", "c0", "h1", "c1"] if cell == "lstm" else ["h0", "h1"]
    assert [s["input"] for s in metadata["states"]] == states
    assert metadata["vocabulary"][0] == "\ufffd"
    assert len(metadata["vocabulary"]) == metadata["outputs"]["logits"]["shape"][1]
    assert metadata["parity"]["tflite"]["max_abs_logit_diff"] < 1e-4


@pytest.mark.parametrize("batch", [1, 3])
def test_litert_on_every_core_gives_one_threads_logits_bit_for_bit(exported, batch):
    from textgen.export.litert import LiteRTStep, state_sizes
    from textgen.generate.step_generator import zero_states

    export_dir = exported["lstm"] / "export"
    metadata = json.loads((export_dir / "metadata.json").read_text(encoding="utf-8"))
    sizes, vocab = state_sizes(metadata), len(metadata["vocabulary"])
    ids = np.random.default_rng(0).integers(1, vocab, size=(40, batch)).astype(np.int32)
    runs = []
    for threads in (2, 1):
        runner = LiteRTStep(export_dir / "model.tflite", num_threads=threads)
        states, logits = zero_states(sizes, batch), []
        for step_ids in ids:
            step_logits, states = runner(step_ids, states)
            logits.append(step_logits.copy())
        runs.append(np.stack(logits))
    np.testing.assert_array_equal(runs[0], runs[1])  # the threads split columns: the same sums


def test_litert_steps_small_batches_of_a_small_model_on_one_thread(exported):
    """A model that fits one core's cache runs batches under 32 rows on one thread and larger ones
    on every core, each in its own interpreter, resized as the batch changes: the same logits as
    one thread throughout."""
    from textgen.export.litert import ONE_THREAD_MAX_ROWS, LiteRTStep, state_sizes
    from textgen.model.machine import cpu_cores, l2_cache_bytes

    path = exported["lstm"] / "export" / "model.tflite"
    metadata = json.loads((path.parent / "metadata.json").read_text(encoding="utf-8"))
    assert l2_cache_bytes() >= 256 * 1024 > path.stat().st_size
    runner, one_thread = LiteRTStep(path), LiteRTStep(path, num_threads=1)
    assert runner.threads_for(ONE_THREAD_MAX_ROWS) == 1 and runner.threads_for(32) == cpu_cores()
    rng = np.random.default_rng(3)
    for batch in (1, 40, 3, 40, 1):
        ids = rng.integers(1, len(metadata["vocabulary"]), batch).astype(np.int32)
        states = {name: rng.normal(size=(batch, size)).astype(np.float32)
                  for name, size in state_sizes(metadata).items()}
        np.testing.assert_array_equal(runner(ids, states)[0], one_thread(ids, states)[0])
    assert sorted(runner.interpreters) == sorted({1, cpu_cores()})


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_quantized_tflite_converts_for_every_cell(exported, cell, quantize, tmp_path, capsys):
    output = tmp_path / "q"
    code, out, err = run_cli(["export", exported[cell], "--format", "tflite", "--quantize", quantize,
                              "--output", output], capsys)
    assert code == 0, err
    assert f"({quantize} quantization)" in out
    float_size = (exported[cell] / "export" / "model.tflite").stat().st_size
    assert (output / "model.tflite").stat().st_size < 0.6 * float_size
    assert not (output / "saved_model").exists()
    code, out, err = run_cli(["sample", output / "model.tflite", "--length", "50", "--seed", "1"], capsys)
    assert code == 0 and len(out) > 40


def test_dynamic_quantization_shrinks_the_file_and_keeps_the_loss(tmp_path, corpus_file, held_out_file,
                                                                   capsys):
    """A 2 x 128 LSTM trained a little: int8 weights make the file at most 35% of the float one,
    and its held-out loss stays within 2% of the Keras model's."""
    model = train(tmp_path, corpus_file, "lstm128", "--cell", "lstm", "--units", "128", "--max-steps", "250",
                  "--lr", "0.01")
    assert run_cli(["export", model, "--format", "tflite"], capsys)[0] == 0
    assert run_cli(["export", model, "--format", "tflite", "--quantize", "dynamic", "--output",
                    tmp_path / "int8"], capsys)[0] == 0
    float_file, int8_file = model / "export" / "model.tflite", tmp_path / "int8" / "model.tflite"
    assert int8_file.stat().st_size <= 0.35 * float_file.stat().st_size

    losses = {}
    for target in (model, float_file, int8_file):
        code, out, err = run_cli(["evaluate", target, held_out_file, "--json"], capsys)
        assert code == 0, err
        losses[target] = json.loads(out)["loss"]
    assert losses[model] < 2.8  # it learned something, so the comparison means something
    assert abs(losses[float_file] - losses[model]) < 1e-5
    assert abs(losses[int8_file] - losses[model]) <= 0.02 * losses[model]


def test_model_trained_in_mixed_precision_exports_float32(tmp_path, corpus_file, capsys):
    model = train(tmp_path, corpus_file, "bf16", "--cell", "gru", "--max-steps", "10",
                  "--precision", "mixed_bfloat16")
    code, _, err = run_cli(["export", model], capsys)
    assert code == 0, err
    metadata = json.loads((model / "export" / "metadata.json").read_text(encoding="utf-8"))
    assert metadata["parity"]["tflite"]["greedy_text_identical"]
    assert all(spec["dtype"] == "float32" for spec in metadata["outputs"].values())


# -- mistakes ------------------------------------------------------------------------------------
def test_existing_export_is_kept_without_force(exported, capsys):
    export_dir = exported["gru"] / "export"
    before = {p: p.stat().st_mtime_ns for p in export_dir.rglob("*")}
    code, _, err = run_cli(["export", exported["gru"]], capsys)
    assert code == 2
    assert err.strip() == f"textgen: error: {export_dir} already exists; pass --force to replace it"
    assert {p: p.stat().st_mtime_ns for p in export_dir.rglob("*")} == before
    assert sorted(p.name for p in exported["gru"].iterdir() if p.name.startswith(".")) == []


def test_force_replaces_an_export_in_one_piece(exported, capsys, tmp_path):
    output = tmp_path / "again"
    assert run_cli(["export", exported["rnn"], "--format", "tflite", "--output", output], capsys)[0] == 0
    assert run_cli(["export", exported["rnn"], "--format", "savedmodel", "--output", output, "--force"],
                   capsys)[0] == 0
    assert sorted(p.name for p in output.iterdir()) == ["metadata.json", "saved_model"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again"]  # no staging folder left behind


@pytest.mark.parametrize("args, message", [
    (["--format", "savedmodel", "--quantize", "dynamic"],
     "--quantize applies to the TFLite files; a SavedModel is always float32"),
    (["--format", "onnx"], "Invalid value for '--format'"),
])
def test_bad_export_options(exported, args, message, capsys, tmp_path):
    code, _, err = run_cli(["export", exported["gru"], "--output", tmp_path / "x", *args], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_export_into_a_path_under_a_file_fails_cleanly(exported, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    code, _, err = run_cli(["export", exported["gru"], "--output", blocker / "export"], capsys)
    assert code == 2 and err.startswith("textgen: error:") and len(err.strip().splitlines()) == 1
    assert blocker.read_text() == "not a folder"


def test_running_exports_that_are_broken_or_ambiguous(exported, tmp_path, capsys):
    export_dir = exported["lstm"] / "export"
    code, _, err = run_cli(["sample", export_dir], capsys)
    assert code == 2 and "is an export folder; pass the file or folder to run" in err

    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer")
    (tmp_path / "metadata.json").write_text((export_dir / "metadata.json").read_text(encoding="utf-8"),
                                            encoding="utf-8")
    code, _, err = run_cli(["sample", garbage], capsys)
    assert code == 2 and err.startswith(f"textgen: error: {garbage}: not a textgen TFLite model")

    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "model.tflite").write_bytes((export_dir / "model.tflite").read_bytes())
    code, _, err = run_cli(["evaluate", lonely / "model.tflite", __file__], capsys)
    assert code == 2 and "metadata.json: missing" in err

    code, _, err = run_cli(["sample", export_dir / "saved_model", "--temperature", "0.5,1"], capsys)
    assert code == 2 and "takes one temperature, not a list" in err


def test_an_export_cannot_be_exported_again(exported, capsys, tmp_path):
    tflite = exported["gru"] / "export" / "model.tflite"
    code, _, err = run_cli(["export", tflite, "--output", tmp_path / "x"], capsys)
    assert code == 2 and "is an export already" in err


def test_mobile_guide_uses_only_names_the_exporter_writes(exported, exported_word):
    """Every string literal in docs/mobile.md's Kotlin and Swift code is a signature, tensor or
    metadata name (or file name) that a real export has, and the essential ones are all used."""
    import re

    from textgen.export.litert import LiteRTStep

    guide = (Path(__file__).resolve().parents[1] / "docs" / "mobile.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```(?:kotlin|swift)\n(.*?)```", guide, flags=re.S)
    literals = {literal for block in blocks for literal in re.findall(r'"([^"\\]*)"', block)}

    known = set()
    for model in (exported["lstm"], exported_word):
        export_dir = model / "export"
        metadata = json.loads((export_dir / "metadata.json").read_text(encoding="utf-8"))
        assert metadata["level"] == "char" or metadata["word_pattern"]
        signatures = LiteRTStep(export_dir / "model.tflite").interpreter.get_signature_list()
        for name, signature in signatures.items():
            known |= {name, *signature["inputs"], *signature["outputs"]}
        known |= set(metadata) | {key for state in metadata["states"] for key in state}
        for file in ("model.tflite", "metadata.json"):
            assert (export_dir / file).is_file()
            known |= {file, *file.split(".")}
    assert literals <= known, literals - known
    assert {"step", "token_ids", "logits", "vocabulary", "states", "input", "output", "size", "unk_id",
            "prime_fallback_id", "word_pattern", "model.tflite", "metadata.json"} <= literals
    assert len(blocks) == 4
