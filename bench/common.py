"""Shared pieces of the benchmarks: the machine's matmul peak, measured in the same run."""

from __future__ import annotations

import os
import time

from textgen.datasets import tiny_shakespeare_path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
SHAKESPEARE = tiny_shakespeare_path()  # the copy textgen ships


def matmul_peak_gflops(size: int = 2048, seconds: float = 2.0) -> float:
    """float32 GFLOP/s of large square matmuls: the better of TensorFlow (default threads) and
    NumPy's BLAS, which here gets closer to the cores' FMA limit; the stricter bound to compare with."""
    import numpy as np
    import tensorflow as tf

    def rate(matmul, a, b) -> float:
        matmul(a, b)
        runs, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            matmul(a, b)
            runs += 1
        return 2 * size**3 * runs / (time.perf_counter() - start) / 1e9

    tf_matmul = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
    tf_rate = rate(lambda x, y: tf_matmul(x, y).numpy(), tf.random.normal([size, size]),
                   tf.random.normal([size, size]))
    a, b = np.random.default_rng(0).random((2, size, size), dtype=np.float32)
    return max(tf_rate, rate(np.matmul, a, b))
