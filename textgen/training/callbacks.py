"""What watches a run from inside Keras' `fit`: the epoch log, the budget, Ctrl-C, the best
checkpoint and the samples printed after each epoch (backups: textgen.training.backup)."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from pathlib import Path
from typing import Any

import keras

from textgen.generate.evaluation import LN2, perplexity
from textgen.generate.generator import Generator
from textgen.store import artifacts
from textgen.training.options import Log


class EpochLog(keras.callbacks.Callback):
    """Adds perplexity and bits per character to each epoch's logs, and keeps history.json.

    It runs before Keras' History and progress bar, which therefore show and keep these too.
    The history file also gets epoch time and tokens/s, and stays continuous across `--resume`.
    """

    def __init__(self, path: Path, tokens_per_step: int, val_chars_per_token: float, level: str):
        super().__init__()
        self.path = path
        self.tokens_per_step = tokens_per_step
        self.val_chars_per_token = val_chars_per_token
        self.level = level
        self.history: dict[str, list] = {}
        if path.exists():
            self.history = json.loads(path.read_text(encoding="utf-8"))

    def on_epoch_begin(self, epoch, logs=None):
        # After a resume, epochs beyond the restored one were lost with the crash: drop them.
        for values in self.history.values():
            del values[epoch:]
        self.start = time.perf_counter()
        self.train_seconds: float | None = None
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_test_begin(self, logs=None):
        if self.train_seconds is None and hasattr(self, "start"):
            self.train_seconds = time.perf_counter() - self.start

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        if "loss" in logs:
            logs["perplexity"] = perplexity(logs["loss"])
            if self.level == "char":
                logs["bits_per_char"] = logs["loss"] / LN2
        if "val_loss" in logs:
            logs["val_perplexity"] = perplexity(logs["val_loss"])
            logs["val_bits_per_char"] = logs["val_loss"] / LN2 / self.val_chars_per_token
        train_seconds = self.train_seconds or (time.perf_counter() - self.start)
        record = {**logs, "epoch_seconds": time.perf_counter() - self.start, "steps": self.steps,
                  "tokens_per_second": self.steps * self.tokens_per_step / max(train_seconds, 1e-9)}
        for key, value in record.items():
            number = int(value) if key == "steps" else float(value)
            self.history.setdefault(key, [None] * epoch).append(number)
        artifacts.write_json_atomic(self.path, self.history)


class BudgetStop(keras.callbacks.Callback):
    """Stops training cleanly after `max_steps` steps or `time_limit` seconds (then we save)."""

    def __init__(self, max_steps: int | None, time_limit: float | None):
        super().__init__()
        self.max_steps = max_steps
        self.time_limit = time_limit
        self.steps = 0
        self.reason: str | None = None
        self.cut_epoch = False  # the budget ran out in the middle of an epoch
        self.first_step_at: float | None = None  # perf_counter() at the end of the first step

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def _spent(self) -> str | None:
        if self.max_steps is not None and self.steps >= self.max_steps:
            return "max_steps"
        if self.time_limit is not None and time.perf_counter() - self.start >= self.time_limit:
            return "time_limit"
        return None

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.first_step_at is None:
            self.first_step_at = time.perf_counter()
        if not self.reason and (reason := self._spent()):
            self.reason = reason
            self.cut_epoch = batch + 1 < (self.params.get("steps") or float("inf"))
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        if not self.reason and (reason := self._spent()):
            self.reason = reason
            self.model.stop_training = True


class CtrlCBetweenSteps(keras.callbacks.Callback):
    """While `fit` runs, turns the first Ctrl-C into a KeyboardInterrupt raised at the next step's end.

    Python raises KeyboardInterrupt wherever the main thread happens to be when the signal lands;
    inside a `__del__` or a weakref callback (frequent at an epoch's end, as iterators and saves
    are collected) it is printed as "Exception ignored" and swallowed, and training went on as if
    no key was pressed. Raised from here, it always reaches fit's caller. A second Ctrl-C before
    the step ends interrupts at once, as usual.
    """

    def __init__(self):
        super().__init__()
        self.pressed = False
        self._previous: Any = None

    def __enter__(self) -> CtrlCBetweenSteps:
        with contextlib.suppress(ValueError):  # not the main thread: signals do not reach it anyway
            self._previous = signal.signal(signal.SIGINT, self._press)
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if self.pressed and exc_type is None:  # pressed after the last step's end
            raise KeyboardInterrupt

    def _press(self, signum, frame) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def _raise_if_pressed(self, *_args, **_kwargs) -> None:
        if self.pressed:
            raise KeyboardInterrupt

    on_train_batch_end = on_test_batch_end = on_epoch_begin = on_epoch_end = _raise_if_pressed


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model whenever the validation loss improves, atomically.

    Keras' ModelCheckpoint writes the archive in place, so a process killed while it saves
    leaves a corrupt best model; this one writes beside it and renames.
    """

    def __init__(self, path: Path, best: float = math.inf):
        super().__init__()
        self.path = path
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("val_loss")
        if loss is None or not loss < self.best:
            return
        saving = self.path.with_name(f"saving.{self.path.name}")
        self.model.save(saving, overwrite=True)
        saving.replace(self.path)
        self.best = loss


class EpochSamples(keras.callbacks.Callback):
    """Prints a short sample after each epoch, so users see the model learn."""

    def __init__(self, generator: Generator, log: Log, length: int, seed: int):
        super().__init__()
        self.generator = generator
        self.log = log
        self.length = length
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        self.generator.sync_weights()
        text = self.generator.generate("", self.length, temperature=0.8, seed=self.seed + epoch)[0]
        self.log(f"--- sample after epoch {epoch + 1} ---\n{text.strip()}\n---")
