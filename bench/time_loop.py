"""The forward loop over time of a GRU layer, alone, in four designs (XLA or graph, float32 or bfloat16 h·U).

    python bench/time_loop.py [--units 768] [--batch 32] [--steps 100] [--threads 1]   # prints JSON

Training runs one explicit loop per core (fast_recurrent.loop_parts), each over its part of the
batch: `large` on 2 cores is GRU 768 over parts of 32 rows. Each step is h @ U (the product that
cannot leave the loop) plus the GRU's gate arithmetic. The designs: the loop compiled by XLA (what
textgen runs) or as a plain TensorFlow graph, with h @ U in float32 or from bfloat16 operands
(float32 sums). `--threads 1` pins TensorFlow to one core, as when the parts run side by side.
A loop alone is not a training step: see the README for what the designs gave inside one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: F401  (quiets TensorFlow's logging before it is imported)


def gru_loop(steps: int, product_dtype, jit_compile: bool):
    """A tf.function: xw [steps, batch, 3 units] -> every state [steps, batch, units] and what each
    step keeps for a backward pass, each step textgen's own GRU arithmetic (cells.GRURule) as
    training runs it (what the step keeps also decides how XLA fuses it: bench/RESULTS.md)."""
    import tensorflow as tf

    from textgen.model.cells import GRURule

    def loop(xw, recurrent, recurrent_bias, initial):
        recurrent_cast = tf.cast(recurrent, product_dtype)

        def body(t, h, states, kept):
            hu = tf.cast(tf.matmul(tf.cast(h, product_dtype), recurrent_cast), tf.float32) + recurrent_bias
            (h,), keep = GRURule.step(xw[t], hu, (h,))
            return t + 1, h, states.write(t, h), tuple(a.write(t, k) for a, k in zip(kept, keep, strict=True))

        kept = tuple(tf.TensorArray(tf.float32, steps) for _ in range(GRURule.kept_count))
        _, _, states, kept = tf.while_loop(lambda t, *_: t < steps, body,
                                           (0, initial, tf.TensorArray(tf.float32, steps), kept))
        return states.stack(), tuple(array.stack() for array in kept)

    return tf.function(loop, jit_compile=jit_compile)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=768)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=1, help="TensorFlow's threads (0: its default)")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    units, batch, steps = args.units, args.batch, args.steps
    xw = tf.random.stateless_normal([steps, batch, 3 * units], seed=[0, 1])
    recurrent = tf.random.stateless_normal([units, 3 * units], seed=[0, 2]) * units**-0.5
    recurrent_bias, initial = tf.zeros([3 * units]), tf.zeros([batch, units])
    flops = 2 * batch * units * 3 * units * steps  # the h @ U products alone
    results = {"units": units, "batch": batch, "steps": steps, "threads": args.threads or "default",
               "designs": {}}
    reference = None
    for name, dtype, jit in [("xla_float32", tf.float32, True), ("graph_float32", tf.float32, False),
                             ("graph_bfloat16_product", tf.bfloat16, False),
                             ("xla_bfloat16_product", tf.bfloat16, True)]:
        loop = gru_loop(steps, dtype, jit)
        states = loop(xw, recurrent, recurrent_bias, initial)[0].numpy()  # traced and compiled here
        reference = states if reference is None else reference
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            loop(xw, recurrent, recurrent_bias, initial)[0].numpy()
            seconds.append(time.perf_counter() - start)
        seconds.sort()
        results["designs"][name] = {
            "median_ms": round(1e3 * seconds[len(seconds) // 2], 1), "best_ms": round(1e3 * seconds[0], 1),
            "gflops_at_best": round(flops / seconds[0] / 1e9, 1),
            "max_state_difference_from_xla_float32": float(abs(states - reference).max())}
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
