"""Run an exported `.tflite` file through LiteRT, and read an export's metadata.json: all an app,
`textgen sample` or a test needs to drive the export's `step` signature (ids and states in, logits
and states out), without TensorFlow.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textgen.errors import TextgenError
from textgen.generate.step_generator import States, StepRunner, logits_after_each
from textgen.model.machine import cpu_cores, l2_cache_bytes
from textgen.quiet import native_logs_hidden, native_stderr_silenced
from textgen.store.artifacts import EXPORT_METADATA_FILE
from textgen.store.config import RunConfig
from textgen.text.tokenizers import Tokenizer, tokenizer_for

STEP_SIGNATURE = "step"
EXPORT_FORMAT = "textgen-export"
EXPORT_VERSION = 1


def next_state_name(name: str) -> str:
    return f"next_{name}"


# Up to this many rows, a model whose weights fit in one core's level-2 cache steps faster on one
# thread: each step is then too short to repay the threads' hand-offs; at 32 they broke even
# (bench/RESULTS.md, "LiteRT's threads")
ONE_THREAD_MAX_ROWS = 31


@dataclass
class _Allocated:
    """An interpreter and the batch its input tensors are sized for (None: never run yet)."""

    interpreter: Any
    batch: int | None = None


class LiteRTStep:
    """The `.tflite` step signature through stock LiteRT (built-in ops only, no Flex delegate).

    Tensors are set and read by index, and resized only when the batch changes: the signature
    runner's call resizes and reallocates every input each time, which costs more than the
    computation itself for small models. Threads: XNNPACK splits each product's columns between
    them, so each core reads only its share of the weights, which may then stay in its own cache;
    a model that fits one core's cache runs small batches on one thread (a second interpreter,
    made when first needed); `num_threads` fixes the count. The results are the same bit for bit
    whatever the threads (bench/RESULTS.md, "LiteRT's threads").
    """

    def __init__(self, path: Path, num_threads: int | None = None):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise TextgenError("running a .tflite file needs LiteRT: pip install ai-edge-litert "
                               "(it has no wheel for Linux on ARM yet)") from None

        self.path, self.num_threads, self._interpreter_class = path, num_threads, Interpreter
        cache = l2_cache_bytes()
        self.fits_one_core = cache is not None and path.stat().st_size <= cache
        self.interpreters: dict[int, _Allocated] = {}  # by thread count
        try:
            self.interpreter = self._allocated(self.threads_for(1)).interpreter
            runner = self.interpreter.get_signature_runner(STEP_SIGNATURE)
        except (ValueError, RuntimeError) as exc:
            raise TextgenError(f"{path}: not a textgen TFLite model ({exc})") from None
        self.inputs = {name: detail["index"] for name, detail in runner.get_input_details().items()}
        self.outputs = {name: detail["index"] for name, detail in runner.get_output_details().items()}

    def threads_for(self, batch: int) -> int:
        if self.num_threads:
            return self.num_threads
        return 1 if self.fits_one_core and batch <= ONE_THREAD_MAX_ROWS else cpu_cores()

    def _allocated(self, threads: int) -> _Allocated:
        if threads not in self.interpreters:  # the file was checked when the first one was made
            interpreter = self._interpreter_class(model_path=str(self.path), num_threads=threads)
            self.interpreters[threads] = _Allocated(interpreter)
        return self.interpreters[threads]

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        allocated = self._allocated(self.threads_for(len(ids)))
        if allocated.batch is None:  # its first call sets up XNNPACK, which announces it on fd 2
            with native_stderr_silenced(native_logs_hidden()):
                return self._step(allocated, ids, states)
        return self._step(allocated, ids, states)

    def _step(self, allocated: _Allocated, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        interpreter = allocated.interpreter
        if len(ids) != allocated.batch:
            for name, index in self.inputs.items():
                shape = [len(ids)] + ([] if name == "token_ids" else [states[name].shape[1]])
                interpreter.resize_tensor_input(index, shape)
            interpreter.allocate_tensors()
            allocated.batch = len(ids)
        interpreter.set_tensor(self.inputs["token_ids"], ids.astype(np.int32, copy=False))
        for name, value in states.items():
            interpreter.set_tensor(self.inputs[name], value)
        interpreter.invoke()
        new_states = {name: interpreter.get_tensor(self.outputs[next_state_name(name)]) for name in states}
        return interpreter.get_tensor(self.outputs["logits"]), new_states

    def op_names(self) -> set[str]:
        return {op["op_name"] for op in self.interpreter._get_ops_details()}


def state_sizes(metadata: dict) -> dict[str, int]:
    """The step signature's state inputs and their sizes, in order."""
    return {s["input"]: s["size"] for s in metadata["states"]}


def step_logits(runner: StepRunner, metadata: dict, ids: np.ndarray) -> np.ndarray:
    """Logits after each token of `ids` [batch, time], fed one step at a time -> [batch, time, vocab]."""
    return np.stack(list(logits_after_each(runner, state_sizes(metadata), ids)), axis=1)


def export_tokenizer(metadata: dict) -> Tokenizer:
    """The tokenizer an export's metadata describes (its vocabulary after the unknown token)."""
    return tokenizer_for(metadata["level"])(metadata["vocabulary"][1:])


def export_config(metadata: dict) -> RunConfig:
    """The run configuration of the model an export came from, as its metadata keeps it."""
    return RunConfig.from_dict(metadata["textgen"]["config"])


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
