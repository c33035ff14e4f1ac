"""Shared pieces of the benchmarks: the machine's matmul peak, measured in the same run."""

from __future__ import annotations

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def matmul_peak_gflops(size: int = 1024, seconds: float = 2.0) -> float:
    """float32 GFLOP/s of large square matmuls with TensorFlow's default threads."""
    import tensorflow as tf

    a = tf.random.normal([size, size])
    b = tf.random.normal([size, size])
    matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    matmul(a, b).numpy()
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        matmul(a, b).numpy()
        runs += 1
    return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9

