"""Write a trained model as a SavedModel, a TFLite file and a web folder, and prove each equal to
the Keras model (textgen.export.parity) before anything is published.

    NAME/export/
        saved_model/    serving_default: prompts in, generated text out, the loop in the graph;
                        step: token ids + states -> logits + states
        model.tflite    the step signature alone, built-in ops only (stock LiteRT, no Flex)
        web/            the step for a batch of one, run in the browser by LiteRT.js (export.web)
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
from typing import Any, Protocol

import keras
import tensorflow as tf

from textgen.errors import TextgenError
from textgen.export.graph_tokenizer import GraphTokenizer
from textgen.export.litert import EXPORT_FORMAT, EXPORT_VERSION, STEP_SIGNATURE, next_state_name
from textgen.export.parity import check_parity
from textgen.export.web import WEB_DIR, write_web
from textgen.generate.generator import Generator, RowSettings
from textgen.store import artifacts
from textgen.store.artifacts import EXPORT_METADATA_FILE, SAVED_MODEL_DIR, TFLITE_FILE
from textgen.store.config import RunConfig
from textgen.text.tokenizers import WORD_PATTERN, Tokenizer


class Trained(Protocol):
    """What an export is made of (a loaded model folder, textgen.text_model.TextModel)."""

    path: Path
    keras_model: keras.Model
    tokenizer: Tokenizer
    config: RunConfig


FORMATS = ("all", "savedmodel", "tflite", "web")
QUANTIZATIONS = ("none", "dynamic", "float16")


@dataclasses.dataclass
class ExportResult:
    path: Path
    files: dict[str, int]  # relative path -> bytes
    parity: dict[str, Any]


def export(model: Trained, output: Path | None = None, fmt: str = "all", quantize: str = "none",
           force: bool = False) -> ExportResult:
    """Export `model` to `output` (default: the model folder's `export/`), atomically."""
    if fmt not in FORMATS:
        raise TextgenError(f"unknown format {fmt!r}; choose {', '.join(FORMATS)}")
    if quantize not in QUANTIZATIONS:
        raise TextgenError(f"unknown quantization {quantize!r}; choose {', '.join(QUANTIZATIONS)}")
    if quantize != "none" and fmt == "savedmodel":
        raise TextgenError("--quantize applies to the TFLite files; a SavedModel is always float32")
    output = Path(output) if output is not None else model.path / artifacts.EXPORT_DIR
    if output.exists() and not force:
        raise TextgenError(f"{output} already exists; pass --force to replace it")
    if output.exists() and not output.is_dir():
        raise TextgenError(f"{output} is a file, not a folder")

    generator = Generator(model.keras_model, model.tokenizer, xla=False, derived_weights=False)
    with artifacts.staged(output) as staging:
        metadata = export_metadata(model, generator)
        if fmt in ("all", "savedmodel"):
            write_saved_model(generator, staging / SAVED_MODEL_DIR)
            metadata["saved_model"] = {"dir": SAVED_MODEL_DIR,
                                       "signatures": ["serving_default", STEP_SIGNATURE]}
        if fmt in ("all", "tflite"):
            (staging / TFLITE_FILE).write_bytes(convert_tflite(generator, quantize, staging))
            metadata["tflite"] = {"file": TFLITE_FILE, "signature": STEP_SIGNATURE,
                                  "quantization": quantize}
        if fmt in ("all", "web"):
            (staging / WEB_DIR).mkdir()
            web_step = convert_tflite(generator, quantize, staging, batch=1)
            (staging / WEB_DIR / TFLITE_FILE).write_bytes(web_step)
            metadata["web"] = {"dir": WEB_DIR, "file": f"{WEB_DIR}/{TFLITE_FILE}", "batch": 1,
                               "quantization": quantize}
        metadata["parity"] = check_parity(model.keras_model, model.config.model, generator, staging, metadata)
        if "web" in metadata:
            write_web(staging / WEB_DIR, metadata, quantize)
        artifacts.write_json_atomic(staging / EXPORT_METADATA_FILE, metadata)
        files = {str(p.relative_to(staging)): p.stat().st_size for p in sorted(staging.rglob("*"))
                 if p.is_file()}
    return ExportResult(output, files, metadata["parity"])


# -- what travels with the files --------------------------------------------------------------
def export_metadata(model: Trained, generator: Generator) -> dict[str, Any]:
    """metadata.json: everything a client needs besides the graph (see docs/mobile.md)."""
    tokenizer = model.tokenizer
    states = list(zip(generator.state_names, generator.state_units, strict=True))
    return {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "level": tokenizer.level,
        "vocabulary": [tokenizer.unk_text, *tokenizer.tokens],
        "unk_id": 0,
        "prime_fallback_id": generator.fallback_id,
        "document": document_ids(tokenizer),
        "word_pattern": WORD_PATTERN.pattern if tokenizer.level == "word" else None,
        "inputs": {"token_ids": {"shape": [-1], "dtype": "int32"},
                   **{name: {"shape": [-1, units], "dtype": "float32"} for name, units in states}},
        "outputs": {"logits": {"shape": [-1, tokenizer.vocab_size], "dtype": "float32"},
                    **{next_state_name(name): {"shape": [-1, units], "dtype": "float32"}
                       for name, units in states}},
        "states": [{"input": name, "output": next_state_name(name), "size": units} for name, units in states],
        "textgen": {"model": model.path.name, "config": json.loads(model.config.to_json())},
    }


def document_ids(tokenizer: Tokenizer) -> dict[str, Any] | None:
    """A model of records: the ids that start a record (<bos>, then a label's), the id that ends
    one (<eos>); none of them stands for text. A model of one text: None."""
    specials = tokenizer.specials
    if specials is None:
        return None
    return {"bos_id": specials.bos, "eos_id": specials.eos, "label_ids": specials.labels}


# -- graphs --------------------------------------------------------------------------------------
def _step_endpoint(generator: Generator, batch: int | None = None):
    """The step signature: token ids [batch] and states -> logits and next states (`batch` None:
    any batch)."""
    def step(token_ids, states):
        logits, new_states = generator.step(token_ids, [states[name] for name in generator.state_names])
        return {"logits": logits, **{next_state_name(name): state
                                     for name, state in zip(generator.state_names, new_states, strict=True)}}

    signature = [tf.TensorSpec([batch], tf.int32, name="token_ids"),
                 {name: tf.TensorSpec([batch, units], tf.float32, name=name)
                  for name, units in zip(generator.state_names, generator.state_units, strict=True)}]
    return step, signature


def _archive(generator: Generator, batch: int | None = None) -> keras.export.ExportArchive:
    archive = keras.export.ExportArchive()  # it tracks the variables the endpoints use
    step, signature = _step_endpoint(generator, batch)
    archive.add_endpoint(STEP_SIGNATURE, step, input_signature=signature)
    return archive


def write_saved_model(generator: Generator, path: Path) -> None:
    """A SavedModel that needs no textgen code: tokenizer, prime, sampling loop, detokenizer. A
    model of records also takes `labels` (one per prompt, "" for none; a signature's inputs cannot
    be optional) and starts each row at <bos> and its label; its text ends at <eos>."""
    tokenizer = GraphTokenizer(generator.tokenizer)
    specials = generator.tokenizer.specials
    archive = _archive(generator)
    archive.track(tokenizer.table)
    labels = None if specials is None else tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["", *specials.labels], tf.string),
                                            tf.constant([-1, *specials.labels.values()], tf.int32)),
        default_value=-2)
    if labels is not None:
        archive.track(labels)

    def generate(prompts, num_tokens, temperature, top_k, top_p, seed, label_names=None):
        ids = tokenizer.encode(prompts)
        ids = tf.ragged.boolean_mask(ids, ids != 0)
        if specials is not None:
            ids = tf.concat([_record_heads(specials.bos, labels.lookup(label_names)), ids], axis=1)
        lengths = tf.maximum(tf.cast(ids.row_lengths(), tf.int32), 1)  # empty: the fallback token
        width = tf.maximum(tf.reduce_max(lengths), 1)
        padded = ids.to_tensor(default_value=generator.fallback_id, shape=[tf.size(prompts), width])
        logits, states, seen = generator.prime_graph(padded, tf.sequence_mask(lengths, width))
        settings = RowSettings.same(tf.size(prompts), temperature[tf.newaxis], top_k, top_p, 1.0, seed)
        new_ids, *_ = generator.sample_graph(logits, states, seen, tf.maximum(num_tokens, 0), settings)
        shown = new_ids
        if specials is not None:  # nothing from a row's <eos> on (<eos> stands for no text)
            ended = tf.cumsum(tf.cast(new_ids == specials.eos, tf.int32), axis=1) > 0
            shown = tf.where(ended, tf.fill(tf.shape(new_ids), specials.eos), new_ids)
        generated = tokenizer.decode(shown)
        return {"generated": generated, "text": prompts + generated, "token_ids": new_ids}

    inputs = [tf.TensorSpec([None], tf.string, name="prompts"),
              tf.TensorSpec([], tf.int32, name="num_tokens"),
              tf.TensorSpec([], tf.float32, name="temperature"),
              tf.TensorSpec([], tf.int32, name="top_k"),
              tf.TensorSpec([], tf.float32, name="top_p"),
              tf.TensorSpec([], tf.int32, name="seed")]
    if specials is not None:
        inputs.append(tf.TensorSpec([None], tf.string, name="labels"))
    archive.add_endpoint("serving_default", generate, input_signature=inputs)
    archive.write_out(str(path), verbose=False)


def _record_heads(bos: int, label_ids: tf.Tensor) -> tf.RaggedTensor:
    """Each row's start: <bos>, then its label's id (-1: no label); an unknown label is an error."""
    tf.debugging.assert_greater_equal(label_ids, -1, message="unknown label (metadata.json lists the labels)")
    has_label = label_ids >= 0
    bos_ids = tf.fill(tf.shape(label_ids), bos)
    heads = tf.stack([bos_ids, label_ids], axis=1)
    return tf.ragged.boolean_mask(heads, tf.stack([tf.ones_like(has_label), has_label], axis=1))


def convert_tflite(generator: Generator, quantize: str, scratch: Path, batch: int | None = None) -> bytes:
    """The step signature as a `.tflite` with built-in ops only, optionally with smaller weights;
    `batch` pins its inputs' batch (LiteRT.js takes static shapes only)."""
    step_dir = Path(tempfile.mkdtemp(prefix=".step-", dir=scratch))
    try:
        _archive(generator, batch).write_out(str(step_dir), verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(step_dir), signature_keys=[STEP_SIGNATURE])
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize != "none":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]  # dynamic range: int8 weights
        if quantize == "float16":
            converter.target_spec.supported_types = [tf.float16]
        return converter.convert()
    finally:
        shutil.rmtree(step_dir, ignore_errors=True)
