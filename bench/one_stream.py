"""What bounds one stream of the compiled generation loop: bytes of weights read per token.

    python bench/one_stream.py      # prints one JSON object (about a minute)

A stand-alone XLA loop of the generation step of a 2-layer LSTM (the first layer's input
projection a table row, the second layer's [x | h] @ [W; U] one product, then the logits and a
greedy choice) at several widths, so that its weights fall inside and outside the core's L2, and
at 256 units with the weights cast to bfloat16 inside the step. Each figure is the best of three
runs of 20,000 steps in this process; `gigabytes_per_s` is the weights read per second.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine

STEPS = 20_000
VOCAB = 65


def steps_per_second(units: int, weights_dtype: str = "float32") -> float:
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    gates = 4 * units

    def weight(rows: int, cols: int, scale: float) -> tf.Tensor:
        return tf.constant(rng.normal(size=(rows, cols)).astype(np.float32) * scale)

    table, first, second, output = (weight(VOCAB, gates, 0.1), weight(units, gates, 0.05),
                                    weight(2 * units, gates, 0.05), weight(units, VOCAB, 0.1))

    def product(x: tf.Tensor, w: tf.Tensor) -> tf.Tensor:
        if weights_dtype == "float32":
            return tf.matmul(x, w)
        return tf.cast(tf.matmul(tf.cast(x, weights_dtype), tf.cast(w, weights_dtype)), tf.float32)

    def lstm(z: tf.Tensor, c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        i, f, g, o = tf.split(z, 4, 1)
        c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c), c

    @tf.function(jit_compile=True)
    def run(steps: tf.Tensor) -> tf.Tensor:
        def body(t, token, h0, c0, h1, c1):
            h0, c0 = lstm(tf.gather(table, token) + product(h0, first), c0)
            h1, c1 = lstm(product(tf.concat([h0, h1], 1), second), c1)
            return t + 1, tf.argmax(tf.matmul(h1, output), 1, output_type=tf.int32), h0, c0, h1, c1

        zeros = tf.zeros([1, units])
        return tf.while_loop(lambda t, *_: t < steps, body,
                             (0, tf.zeros([1], tf.int32), zeros, zeros, zeros, zeros))[1]

    run(tf.constant(10)).numpy()  # compiled here
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        run(tf.constant(STEPS)).numpy()
        best = min(best, time.perf_counter() - start)
    return STEPS / best


def weight_bytes(units: int, bytes_per_weight: int = 4) -> int:
    """Weights read per token: the first layer's U, the second's [W; U], the output kernel."""
    gates = 4 * units
    return bytes_per_weight * (units * gates + 2 * units * gates + units * VOCAB)


def main() -> None:
    results: dict = {"machine": machine(), "steps": STEPS, "widths": {}}
    for units in (64, 128, 256, 384):
        rate = steps_per_second(units)
        results["widths"][str(units)] = {"weights_mb": round(weight_bytes(units) / 1e6, 2),
                                         "steps_per_s": round(rate),
                                         "gigabytes_per_s": round(rate * weight_bytes(units) / 1e9, 1)}
    rate = steps_per_second(256, "bfloat16")
    results["bfloat16_weights_256"] = {"steps_per_s": round(rate),
                                       "vs_float32": round(rate / results["widths"]["256"]["steps_per_s"], 2)}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
