"""Write a trained model as a SavedModel and a TFLite file, and prove both equal to the Keras model.

    NAME/export/
        saved_model/    serving_default: prompts in, generated text out, the loop in the graph;
                        step: token ids + states -> logits + states
        model.tflite    the step signature alone, built-in ops only (stock LiteRT, no Flex)
        metadata.json   vocabulary, state names and sizes, settings and measured parity

Both graphs call the generator's own cells and sampling ops, so they compute what
`textgen sample` computes. The TFLite file is converted from a SavedModel of the step alone
written through Keras' ExportArchive, which freezes the weights into the file (a step traced
from concrete functions keeps them as variables read at every call). Tokenization stays outside
the `.tflite` (string ops would need Flex); `metadata.json` carries what a client needs for it.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from textgen import artifacts
from textgen.api import TextModel
from textgen.config import ModelConfig
from textgen.errors import TextgenError
from textgen.exported import (
    EXPORT_FORMAT,
    EXPORT_VERSION,
    METADATA_FILE,
    SAVED_MODEL_DIR,
    STEP_SIGNATURE,
    TFLITE_FILE,
    LiteRTStep,
    SavedModelStep,
    ServingGenerator,
    StepGenerator,
    next_state_name,
    step_logits,
)
from textgen.generation import Generator
from textgen.graph_tokenizer import GraphTokenizer
from textgen.models import build_model
from textgen.tokenizers import WORD_PATTERN

FORMATS = ("all", "savedmodel", "tflite")
QUANTIZATIONS = ("none", "dynamic", "float16")
PARITY_STEPS = 300
FLOAT_TOLERANCE = 1e-4  # max |logit difference| allowed for a float export


@dataclasses.dataclass
class ExportResult:
    path: Path
    files: dict[str, int]  # relative path -> bytes
    parity: dict[str, Any]


def export(model: TextModel, output: Path | None = None, fmt: str = "all", quantize: str = "none",
           force: bool = False) -> ExportResult:
    """Export `model` to `output` (default: the model folder's `export/`), atomically."""
    if fmt not in FORMATS:
        raise TextgenError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise TextgenError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)}")
    if quantize != "none" and fmt == "savedmodel":
        raise TextgenError("--quantize applies to the TFLite file; a SavedModel is always float32")
    output = Path(output) if output is not None else model.path / "export"
    if output.exists() and not force:
        raise TextgenError(f"{output} already exists; pass --force to replace it")
    if output.exists() and not output.is_dir():
        raise TextgenError(f"{output} is a file, not a folder")

    generator = Generator(model.keras_model, model.tokenizer, xla=False, derived_weights=False)
    staging = artifacts.staging_dir(output)
    try:
        metadata = describe(model, generator)
        if fmt in ("all", "savedmodel"):
            write_saved_model(generator, staging / SAVED_MODEL_DIR)
            metadata["saved_model"] = {"dir": SAVED_MODEL_DIR,
                                       "signatures": ["serving_default", STEP_SIGNATURE]}
        if fmt in ("all", "tflite"):
            (staging / TFLITE_FILE).write_bytes(convert_tflite(generator, quantize, staging))
            metadata["tflite"] = {"file": TFLITE_FILE, "signature": STEP_SIGNATURE,
                                  "quantization": quantize}
        metadata["parity"] = check_parity(model, generator, staging, metadata)
        artifacts.write_json_atomic(staging / METADATA_FILE, metadata)
        files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*"))
                 if p.is_file()}
        with artifacts.sigint_deferred():  # the swap of old and new export is never cut in half
            artifacts.publish(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ExportResult(output, files, metadata["parity"])


# -- what travels with the files --------------------------------------------------------------
def describe(model: TextModel, generator: Generator) -> dict[str, Any]:
    """metadata.json: everything a client needs besides the graph (see docs/mobile.md)."""
    tokenizer = model.tokenizer
    states = list(zip(generator.state_names, generator.state_units, strict=True))
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "level": tokenizer.level,
        "vocabulary": [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)],
        "unk_id": 0,
        "prime_fallback_id": generator.fallback_id,
        "word_pattern": WORD_PATTERN.pattern if tokenizer.level == "word" else None,
        "inputs": {"token_ids": {"shape": [-1], "dtype": "int32"},
                   **{name: {"shape": [-1, units], "dtype": "float32"} for name, units in states}},
        "outputs": {"logits": {"shape": [-1, tokenizer.vocab_size], "dtype": "float32"},
                    **{next_state_name(name): {"shape": [-1, units], "dtype": "float32"}
                       for name, units in states}},
        "states": [{"input": name, "output": next_state_name(name), "size": units} for name, units in states],
        "textgen": {"model": model.path.name, "config": json.loads(model.config.to_json())},
    }


# -- graphs --------------------------------------------------------------------------------------
def _step_endpoint(generator: Generator):
    def step(token_ids, states):
        logits, new_states = generator.step(token_ids, [states[name] for name in generator.state_names])
        return {"logits": logits, **{next_state_name(name): state
                                     for name, state in zip(generator.state_names, new_states, strict=True)}}

    signature = [tf.TensorSpec([None], tf.int32, name="token_ids"),
                 {name: tf.TensorSpec([None, units], tf.float32, name=name)
                  for name, units in zip(generator.state_names, generator.state_units, strict=True)}]
    return step, signature


def _archive(generator: Generator) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()  # it tracks the variables the endpoints use
    step, signature = _step_endpoint(generator)
    archive.add_endpoint(STEP_SIGNATURE, step, input_signature=signature)
    return archive


def write_saved_model(generator: Generator, path: Path) -> None:
    """A SavedModel that needs no textgen code: tokenizer, prime, sampling loop, detokenizer."""
    tokenizer = GraphTokenizer(generator.tokenizer)
    archive = _archive(generator)
    archive.track(tokenizer.table)

    def generate(prompts, num_tokens, temperature, top_k, top_p, seed):
        ids = tokenizer.encode(prompts)
        ids = tf.ragged.boolean_mask(ids, ids != 0)
        lengths = tf.maximum(tf.cast(ids.row_lengths(), tf.int32), 1)  # empty: the fallback token
        width = tf.maximum(tf.reduce_max(lengths), 1)
        padded = ids.to_tensor(default_value=generator.fallback_id, shape=[tf.size(prompts), width])
        logits, states, seen = generator.prime_graph(padded, tf.sequence_mask(lengths, width))
        new_ids, *_ = generator.sample_graph(
            logits, states, seen, tf.maximum(num_tokens, 0), temperature[tf.newaxis], top_k, top_p,
            tf.constant(1.0), seed, tf.constant(0))
        generated = tokenizer.decode(new_ids)
        return {"generated": generated, "text": prompts + generated, "token_ids": new_ids}

    archive.add_endpoint("serving_default", generate, input_signature=[
        tf.TensorSpec([None], tf.string, name="prompts"),
        tf.TensorSpec([], tf.int32, name="num_tokens"),
        tf.TensorSpec([], tf.float32, name="temperature"),
        tf.TensorSpec([], tf.int32, name="top_k"),
        tf.TensorSpec([], tf.float32, name="top_p"),
        tf.TensorSpec([], tf.int32, name="seed"),
    ])
    archive.write_out(str(path), verbose=False)


def convert_tflite(generator: Generator, quantize: str, scratch: Path) -> bytes:
    """The step signature as a `.tflite` with built-in ops only, optionally with smaller weights."""
    step_dir = Path(tempfile.mkdtemp(prefix=".step-", dir=scratch))
    try:
        _archive(generator).write_out(str(step_dir), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(step_dir), signature_keys=[STEP_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    finally:
        shutil.rmtree(step_dir, ignore_errors=True)


# -- parity ----------------------------------------------------------------------------------
def float32_twin(keras_model: keras.Model, config: ModelConfig) -> keras.Model:
    """The model itself, or for a model trained under a mixed policy the same weights computing in
    float32: exports compute in float32, so that is what they must equal."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in keras_model.layers):
        return keras_model
    twin = build_model(config)
    twin.set_weights(keras_model.get_weights())
    return twin


def check_parity(model: TextModel, generator: Generator, staging: Path, metadata: dict) -> dict[str, Any]:
    """Compare each export with the Keras model on the Keras model's own greedy text.

    Logits: the text's ids fed one step at a time to the export, against the Keras model run
    over the whole sequence. Greedy text: each export decodes on its own from an empty prime.
    A float export that differs is a bug and is not published.
    """
    reference_text = generator.generate("", PARITY_STEPS, temperature=0.0)[0]
    ids = np.concatenate([[generator.fallback_id], model.tokenizer.encode(reference_text)])[:PARITY_STEPS]
    keras_model = float32_twin(model.keras_model, model.config.model)
    reference = keras.ops.convert_to_numpy(keras_model(ids[np.newaxis, :].astype(np.int32), training=False))

    runners: dict[str, Any] = {}
    if "saved_model" in metadata:
        loaded = tf.saved_model.load(str(staging / SAVED_MODEL_DIR))
        runners["saved_model"] = (SavedModelStep(loaded), ServingGenerator(loaded), "none")
    if "tflite" in metadata:
        runner = LiteRTStep(staging / TFLITE_FILE)
        non_builtin = sorted(op for op in runner.op_names() if op.startswith("Flex") or op == "CUSTOM")
        if non_builtin:
            raise TextgenError(f"the TFLite file needs ops stock LiteRT lacks: {', '.join(non_builtin)}")
        runners["tflite"] = (runner, StepGenerator(runner, metadata, model.tokenizer),
                             metadata["tflite"]["quantization"])

    report: dict[str, Any] = {"steps": len(ids), "tolerance": FLOAT_TOLERANCE}
    for name, (runner, sampler, quantization) in runners.items():
        logits = step_logits(runner, metadata, ids[np.newaxis, :])
        difference = float(np.max(np.abs(logits - reference)))
        greedy = np.concatenate(list(sampler.stream("", PARITY_STEPS, temperature=0.0)), axis=1)
        text = model.tokenizer.decode(greedy[0])
        report[name] = {"max_abs_logit_diff": difference, "greedy_text_identical": text == reference_text,
                        "quantization": quantization}
        if quantization == "none" and (difference > FLOAT_TOLERANCE or text != reference_text):
            raise TextgenError(f"the {name} export does not match the Keras model (max logit difference "
                               f"{difference:.2e}, greedy text identical: {text == reference_text}); nothing "
                               "was written — please report this")
    return report
