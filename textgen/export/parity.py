"""Proof that an export computes what the Keras model computes, measured before it is published."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from textgen.errors import TextgenError
from textgen.export.litert import LiteRTStep, state_sizes, step_logits
from textgen.export.runtime import SavedModelStep, ServingGenerator
from textgen.generate.generator import Generator
from textgen.generate.priming import prime_ids
from textgen.generate.step_generator import StepGenerator
from textgen.model.network import build_model
from textgen.store.artifacts import SAVED_MODEL_DIR
from textgen.store.config import ModelConfig

PARITY_STEPS = 300
FLOAT_TOLERANCE = 1e-4  # max |logit difference| allowed for a float export


def float32_twin(keras_model: keras.Model, config: ModelConfig) -> keras.Model:
    """The model itself, or for a model trained under a mixed policy the same weights computing in
    float32: exports compute in float32, so that is what they must equal."""
    if all(layer.dtype_policy.compute_dtype == "float32" for layer in keras_model.layers):
        return keras_model
    twin = build_model(config)
    twin.set_weights(keras_model.get_weights())
    return twin


def check_parity(keras_model: keras.Model, config: ModelConfig, generator: Generator, staging: Path,
                 metadata: dict) -> dict[str, Any]:
    """Compare each export with the Keras model on the Keras model's own greedy text.

    Logits: the text's ids fed one step at a time to the export, against the Keras model run
    over the whole sequence. Greedy text: each export decodes on its own from an empty prime.
    A float export that differs is a bug and is not published.
    """
    reference_text = generator.generate("", PARITY_STEPS, temperature=0.0)[0]
    tokenizer = generator.tokenizer
    ids = np.concatenate([prime_ids(tokenizer, ""), tokenizer.encode(reference_text)])[:PARITY_STEPS]
    keras_model = float32_twin(keras_model, config)
    reference = keras.ops.convert_to_numpy(keras_model(ids[np.newaxis, :].astype(np.int32), training=False))

    runners: dict[str, Any] = {}
    if "saved_model" in metadata:
        loaded = tf.saved_model.load(str(staging / SAVED_MODEL_DIR))
        runners["saved_model"] = (SavedModelStep(loaded), ServingGenerator(loaded, tokenizer), "none")
    for name in ("tflite", "web"):
        if name in metadata:
            runner = LiteRTStep(staging / metadata[name]["file"])
            non_builtin = sorted(op for op in runner.op_names() if op.startswith("Flex") or op == "CUSTOM")
            if non_builtin:
                raise TextgenError(f"the TFLite file needs ops stock LiteRT lacks: {', '.join(non_builtin)}")
            sampler = StepGenerator(runner, tokenizer, state_sizes(metadata))
            runners[name] = (runner, sampler, metadata[name]["quantization"])

    report: dict[str, Any] = {"steps": len(ids), "tolerance": FLOAT_TOLERANCE}
    for name, (runner, sampler, quantization) in runners.items():
        logits = step_logits(runner, metadata, ids[np.newaxis, :])
        difference = float(np.max(np.abs(logits - reference)))
        greedy = np.concatenate(list(sampler.stream("", PARITY_STEPS, temperature=0.0)), axis=1)
        text = tokenizer.decode_records(greedy[0])
        report[name] = {"max_abs_logit_diff": difference, "greedy_text_identical": text == reference_text,
                        "quantization": quantization}
        if quantization == "none" and (difference > FLOAT_TOLERANCE or text != reference_text):
            raise TextgenError(f"the {name} export does not match the Keras model (max logit difference "
                               f"{difference:.2e}, greedy text identical: {text == reference_text}); nothing "
                               "was written — please report this")
    return report
