"""The learning rate over a run, shaped by its budget: a short warm-up, then either the full
rate until the last quarter and a cosine decay over it ("wsd", warm-up/stable/decay), or a
cosine decay over the whole run ("cosine").

The end of the run is whichever comes first of `--time-limit` (by the clock), `--max-steps` and
the epochs (by optimizer steps), so a run that its budget stops ends at a low learning rate
instead of being cut off at a high one, where its last minutes would be wasted.
"""

from __future__ import annotations

import math
import time

import keras

WARMUP = 0.02  # share of the run spent warming up from zero
DECAY = 0.25  # share of the run at the end that "wsd" decays over
FINAL = 0.1  # the learning rate at the end, as a share of --lr


def multiplier(progress: float, schedule: str = "wsd") -> float:
    """The share of the base learning rate at `progress` (0 at the start, 1 at the end)."""
    progress = min(max(progress, 0.0), 1.0)
    if progress < WARMUP:
        return progress / WARMUP
    start = WARMUP if schedule == "cosine" else 1.0 - DECAY
    if progress <= start:
        return 1.0
    decay = (progress - start) / (1.0 - start)
    return FINAL + (1.0 - FINAL) * 0.5 * (1.0 + math.cos(math.pi * decay))


class BudgetSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each step from how much of the run is spent."""

    def __init__(self, base_lr: float, schedule: str, *, total_steps: int, max_steps: int | None,
                 time_limit: float | None):
        super().__init__()
        self.base_lr = base_lr
        self.schedule = schedule
        self.total_steps = total_steps  # optimizer steps at the end of the last epoch
        self.max_steps = max_steps  # steps of this session
        self.time_limit = time_limit
        self.session_steps = 0
        self.clock_from: float | None = None  # the budget's clock (start_clock)
        self.clock_span: float | None = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()
        self.first_step = int(self.model.optimizer.iterations.numpy())

    def start_clock(self) -> None:
        """The clock's share of the budget counts from the end of the first step: tracing it takes
        seconds, which would otherwise eat the warm-up (2% of 300 s is 6 s) and start the run at the
        full rate. The span left after it still ends when the time limit stops the run."""
        now = time.perf_counter()
        self.clock_from = now
        if self.time_limit is not None:
            self.clock_span = max(self.time_limit - (now - self.start), 1e-9)

    def progress(self) -> float:
        spent = [(self.first_step + self.session_steps) / self.total_steps]
        if self.max_steps is not None:
            spent.append(self.session_steps / self.max_steps)
        if self.clock_span is not None:
            spent.append((time.perf_counter() - self.clock_from) / self.clock_span)
        return max(spent)

    def decaying(self) -> bool:
        """Whether the rate has begun its final decay (always, for "cosine")."""
        return self.schedule == "cosine" or self.progress() >= 1.0 - DECAY

    def on_train_batch_begin(self, batch, logs=None):
        self.model.optimizer.learning_rate.assign(self.base_lr * multiplier(self.progress(), self.schedule))

    def on_train_batch_end(self, batch, logs=None):
        if self.session_steps == 0:
            self.start_clock()
        self.session_steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:  # the rate of the epoch's last step, kept in history.json
            logs["learning_rate"] = float(self.model.optimizer.learning_rate.numpy())


class EarlyStopping(keras.callbacks.EarlyStopping):
    """Keras' early stopping on val_loss, which under "wsd" only counts epochs of the decay.

    While the rate is held high, the validation loss plateaus, and it falls again only once the
    rate decays: stopping on that plateau would end the run just before its best part
    (bench/RESULTS.md, "Early stopping").
    """

    def __init__(self, schedule: BudgetSchedule | None, patience: int):
        if patience < 2:
            raise ValueError("patience below 2 could stop a run on its plateau")
        super().__init__(monitor="val_loss", patience=patience)
        self.schedule = schedule

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)  # tracks the best; a held epoch leaves wait at 0 or 1
        if self.schedule is not None and not self.schedule.decaying():
            self.wait = 0  # patience counts from the decay
