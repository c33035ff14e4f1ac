"""The quality issue's stock baseline: a plain Keras 3 char model, trained for a wall-clock budget.

    python bench/stock_keras.py SECONDS [--cell gru|lstm] [--units 256] [--layers 2]

Stock `keras.layers.GRU`/`LSTM` (no textgen code), embedding 64, batch 64, sequence 100, Adam
2e-3 with clipnorm 5 at a constant rate, windows of 101 characters cut from the first 90% of tiny
shakespeare and shuffled every epoch. Training stops after SECONDS of `fit` (validation
included, as textgen's --time-limit counts it); the printed JSON holds the loss on the last 10%,
computed as `textgen evaluate` computes it (windows of 100 from a zero state).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras
import numpy as np
import tensorflow as tf

from common import SHAKESPEARE

SEQ, BATCH = 100, 64


class StopAfter(keras.callbacks.Callback):
    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.start >= self.seconds:
            self.model.stop_training = True


def windows(ids: np.ndarray) -> np.ndarray:
    count = len(ids) // (SEQ + 1)
    return ids[: count * (SEQ + 1)].reshape(count, SEQ + 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("seconds", type=float)
    parser.add_argument("--cell", choices=["gru", "lstm"], default="gru")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--units", type=int, default=256)
    parser.add_argument("--embedding-dim", type=int, default=64)
    args = parser.parse_args()
    keras.utils.set_random_seed(0)
    text = SHAKESPEARE.read_text(encoding="utf-8")
    chars = sorted(set(text))
    lookup = {char: index for index, char in enumerate(chars)}
    ids = np.array([lookup[char] for char in text], np.int32)
    cut = len(ids) - len(ids) // 10
    train, val = windows(ids[:cut]), windows(ids[cut:])
    dataset = tf.data.Dataset.from_tensor_slices(train).shuffle(len(train), seed=0).batch(BATCH).map(
        lambda w: (w[:, :-1], w[:, 1:])).prefetch(tf.data.AUTOTUNE)
    val_dataset = tf.data.Dataset.from_tensor_slices(val).batch(BATCH).map(lambda w: (w[:, :-1], w[:, 1:]))
    recurrent = {"gru": keras.layers.GRU, "lstm": keras.layers.LSTM}[args.cell]
    model = keras.Sequential([keras.Input((None,), dtype="int32"),
                              keras.layers.Embedding(len(chars), args.embedding_dim),
                              *[recurrent(args.units, return_sequences=True) for _ in range(args.layers)],
                              keras.layers.Dense(len(chars))])
    model.compile(keras.optimizers.Adam(2e-3, clipnorm=5.0),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    start = time.perf_counter()
    history = model.fit(dataset, validation_data=val_dataset, epochs=1000, verbose=0,
                        callbacks=[StopAfter(args.seconds)])
    seconds = time.perf_counter() - start
    val_loss = float(model.evaluate(val_dataset, verbose=0))
    print(json.dumps({"baseline": f"stock Keras {args.cell.upper()} {args.layers}x{args.units}",
                      "budget_seconds": args.seconds, "fit_seconds": round(seconds, 1),
                      "epochs": len(history.history["loss"]),
                      "steps": int(model.optimizer.iterations.numpy()),
                      "val_loss": round(val_loss, 4)}))


if __name__ == "__main__":
    main()
