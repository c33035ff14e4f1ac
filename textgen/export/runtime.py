"""Run exported models: a `.tflite` file through LiteRT, a SavedModel through TensorFlow.

Both are driven through the export's `step` signature (ids and states in, logits and states out)
by textgen.generate.step_generator, which draws what the Keras generator draws; a SavedModel's
generation additionally runs its in-graph `serving_default` loop, as a server would.
textgen.exported_model puts these behind the same API as a trained model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from textgen.errors import TextgenError
from textgen.generate.evaluation import LossTally
from textgen.generate.numpy_sampling import temperature_list
from textgen.generate.priming import prime_ids
from textgen.generate.step_generator import States, StepRunner
from textgen.quiet import native_logs_hidden, native_stderr_silenced
from textgen.store.artifacts import EXPORT_METADATA_FILE
from textgen.text.pipeline import TokenSource, window_dataset
from textgen.text.tokenizers import Tokenizer

STEP_SIGNATURE = "step"
EXPORT_FORMAT = "textgen-export"
EXPORT_VERSION = 1


def next_state_name(name: str) -> str:
    return f"next_{name}"


class LiteRTStep:
    """The `.tflite` step signature through stock LiteRT (built-in ops only, no Flex delegate).

    Tensors are set and read by index, and resized only when the batch changes: the signature
    runner's call resizes and reallocates every input each time, which costs more than the
    computation itself for small models.
    """

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise TextgenError("running a .tflite file needs LiteRT: pip install ai-edge-litert "
                               "(it has no wheel for Linux on ARM yet)") from None

        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
            runner = self.interpreter.get_signature_runner(STEP_SIGNATURE)
        except (ValueError, RuntimeError) as exc:
            raise TextgenError(f"{path}: not a textgen TFLite model ({exc})") from None
        self.inputs = {name: detail["index"] for name, detail in runner.get_input_details().items()}
        self.outputs = {name: detail["index"] for name, detail in runner.get_output_details().items()}
        self.batch = 0
        self.started = False

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        if not self.started:  # the first call sets up XNNPACK, which announces it on fd 2
            self.started = True
            with native_stderr_silenced(native_logs_hidden()):
                return self(ids, states)
        interpreter = self.interpreter
        if len(ids) != self.batch:
            for name, index in self.inputs.items():
                shape = [len(ids)] + ([] if name == "token_ids" else [states[name].shape[1]])
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
            self.batch = len(ids)
        interpreter.set_tensor(self.inputs["token_ids"], ids.astype(np.int32, copy=False))
        for name, value in states.items():
            interpreter.set_tensor(self.inputs[name], value)
        interpreter.invoke()
        new_states = {name: interpreter.get_tensor(self.outputs[next_state_name(name)]) for name in states}
        return interpreter.get_tensor(self.outputs["logits"]), new_states

    def op_names(self) -> set[str]:
        return {op["op_name"] for op in self.interpreter._get_ops_details()}


class SavedModelStep:
    """The SavedModel's `step` signature through TensorFlow."""

    def __init__(self, loaded: Any):
        self.signature = loaded.signatures[STEP_SIGNATURE]

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        import tensorflow as tf

        outputs = self.signature(token_ids=tf.constant(ids, tf.int32),
                                 **{name: tf.constant(value) for name, value in states.items()})
        return outputs["logits"].numpy(), {name: outputs[next_state_name(name)].numpy() for name in states}


def state_sizes(metadata: dict) -> dict[str, int]:
    """The step signature's state inputs and their sizes, in order."""
    return {s["input"]: s["size"] for s in metadata["states"]}


def zero_states(metadata: dict, batch: int) -> States:
    return {name: np.zeros((batch, size), np.float32) for name, size in state_sizes(metadata).items()}


def step_logits(runner: StepRunner, metadata: dict, ids: np.ndarray) -> np.ndarray:
    """Logits after each token of `ids` [batch, time], fed one step at a time -> [batch, time, vocab]."""
    states = zero_states(metadata, ids.shape[0])
    logits = []
    for t in range(ids.shape[1]):
        step, states = runner(ids[:, t], states)
        logits.append(step)
    return np.stack(logits, axis=1)


class ServingGenerator:
    """Generation by the SavedModel's `serving_default` signature: the whole loop in its graph."""

    def __init__(self, loaded: Any, tokenizer: Tokenizer):
        self.signature = loaded.signatures["serving_default"]
        self.tokenizer = tokenizer

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0,
               label: str | None = None) -> Iterator[np.ndarray]:
        import tensorflow as tf

        temperatures = temperature_list(temperature)
        prime_ids(self.tokenizer, "", label)  # a label the model does not know: one clear error
        records = self.tokenizer.specials is not None
        labels = {"labels": tf.constant([label or ""] * num_samples)} if records else {}
        if len(temperatures) != 1:
            raise TextgenError("a SavedModel's serving signature takes one temperature, not a list")
        if repetition_penalty != 1:
            raise TextgenError("a SavedModel's serving signature has no repetition penalty")
        outputs = self.signature(prompts=tf.constant([prime] * num_samples), num_tokens=tf.constant(length),
                                 temperature=tf.constant(float(temperatures[0])),
                                 top_k=tf.constant(int(top_k)), top_p=tf.constant(float(top_p)),
                                 seed=tf.constant(int(seed)), **labels)
        yield outputs["token_ids"].numpy()


def evaluate_steps(runner: StepRunner, metadata: dict, source: TokenSource, seq_len: int,
                   batch_size: int, tally: LossTally) -> dict:
    """`evaluation.evaluate_windows` for a step model: the same windows, each from a zero state."""
    windows = window_dataset(source, seq_len, with_lengths=True).batch(batch_size)
    for ids, lengths in windows.as_numpy_iterator():
        logits = step_logits(runner, metadata, ids[:, :-1]).astype(np.float64)
        log_probs = logits - _logsumexp(logits)
        targets = ids[:, 1:]
        losses = -np.take_along_axis(log_probs, targets[..., np.newaxis], axis=-1)[..., 0]
        tally.add(losses, targets, lengths[:, 1:])
    return tally.report()


def _logsumexp(x: np.ndarray) -> np.ndarray:
    top = x.max(axis=-1, keepdims=True)
    return top + np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


def read_metadata(export_dir: Path) -> dict:
    """metadata.json of an export folder, checked to be textgen's of this version."""
    path = export_dir / EXPORT_METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except OSError:
        raise TextgenError(f"{path}: missing (it travels with an export; re-export the model)") from None
    except ValueError:
        raise TextgenError(f"{path}: not valid JSON") from None
    if metadata.get("format") != EXPORT_FORMAT or metadata.get("version") != EXPORT_VERSION:
        raise TextgenError(f"{path}: not a textgen export description of version {EXPORT_VERSION}")
    return metadata
