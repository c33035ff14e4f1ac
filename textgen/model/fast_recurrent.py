"""LSTM, GRU and SimpleRNN layers that train fast on CPUs, by explicit backpropagation through time.

On a GPU, Keras' recurrent layers run cuDNN's fused kernels, and these subclasses leave that
path alone. On a CPU, Keras falls back to a generic loop whose gradient TensorFlow derives
step by step: a while loop of small matrix products for every weight at every time step. When
training on a CPU, these layers replace that loop with the classic hand-written formulation:

- the input projection of every time step is one large matmul, before the loop;
- the forward loop computes only `h @ U` and the gate arithmetic, compiled with XLA, and keeps
  what the backward pass needs (LSTM: the activated gates and tanh(c); SimpleRNN: the output;
  GRU: the gates, the candidate and its part of h @ U);
  the batch is cut into parts whose loops run side by side, one per core (`loop_parts`);
- the backward loop runs back through time once: one `dz @ U^T` per step and the derivatives of
  the (elementwise) gate arithmetic, written out from the kept activations
  (textgen.model.cells); also compiled with XLA;
- the weight gradients are one large matmul each, after the loop.

Same weights, same function, same saved files (tests check outputs and gradients against the
stock layers). Inference (`training=False`) keeps Keras' own path: it takes prompts of any
length, which XLA would recompile for, and is not where training time goes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import keras
import tensorflow as tf

from textgen.model.cells import CellRule, GRURule, LSTMRule, SimpleRule, State, weights_split
from textgen.model.machine import cpu_cores

# Zero columns after the gates' gradients, so that their rows are not a multiple of 256 floats
# apart: with 1,024 gates (a 256-unit LSTM) TensorFlow's product for the weights' gradient,
# [x | h | 1]^T @ dz, ran at half the rate on AVX2 CPUs. From 512 gates on, where that product
# gained most; a 256-unit SimpleRNN trained no faster with them (bench/RESULTS.md, "The
# gradient's stride")
GRADIENT_PADDING = 8
MIN_PADDED_GATES = 512


def gradient_padding(gates: int | None) -> int:
    """How many zero columns follow `gates` columns of gate gradients (none if unknown)."""
    return GRADIENT_PADDING if (gates or 0) >= MIN_PADDED_GATES else 0


class _TimeLoops:
    """The forward and backward loops over time of one cell's rule, compiled with XLA.

    `additive` cells (LSTM, SimpleRNN) use xw and hu only through their sum z, so the gradients
    of xw and hu are the same tensor (one array, one weight-gradient matmul).
    """

    def __init__(self, rule: type[CellRule]):
        self.rule = rule
        self.forward = tf.function(self._forward, jit_compile=True)
        self.backward = tf.function(self._backward, jit_compile=True)

    def _forward(self, xw: tf.Tensor, recurrent: tf.Tensor, recurrent_bias: tf.Tensor,
                 initial: State) -> tuple[State, State]:
        """xw [time, batch, gates] -> every state at every step [time, batch, units] each, and what
        the rule keeps of each step for the backward pass."""
        steps = tf.shape(xw)[0]

        def body(t, state, sequences, kept):
            hu = tf.matmul(state[0], recurrent) + recurrent_bias
            state, keep = self.rule.step(xw[t], hu, state)
            return (t + 1, state, tuple(seq.write(t, s) for seq, s in zip(sequences, state, strict=True)),
                    tuple(array.write(t, k) for array, k in zip(kept, keep, strict=True)))

        arrays = tuple(tf.TensorArray(xw.dtype, steps) for _ in initial)
        kept = tuple(tf.TensorArray(xw.dtype, steps) for _ in range(self.rule.kept_count))
        _, _, sequences, kept = tf.while_loop(lambda t, *_: t < steps, body,
                                              (0, tuple(initial), arrays, kept))
        return tuple(seq.stack() for seq in sequences), tuple(array.stack() for array in kept)

    def _backward(self, d_outputs: tf.Tensor, d_final: State, kept: State, previous: State,
                  recurrent_t: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, State]:
        """Gradients of xw and of h @ U + b_u at every step, each followed by `gradient_padding`
        zero columns, and of the initial states.

        `previous[k][t]` is state k before step t; `d_outputs[t]` the gradient of h after step t.
        `recurrent_t` is U transposed by the caller: XLA's CPU dot multiplies by a transposed
        operand about twice as slowly, and inside the compiled loop it would fold the transpose
        back into the dot.
        """
        steps = tf.shape(d_outputs)[0]
        padding = [[0, 0], [0, gradient_padding(recurrent_t.shape[0])]]

        def body(k, d_state, d_xw, d_hu):
            t = steps - 1 - k
            upstream = (d_state[0] + d_outputs[t], *d_state[1:])
            g_xw, g_hu, g_state = self.rule.gradient(tuple(k[t] for k in kept), tuple(p[t] for p in previous),
                                                     upstream)
            g_state = (g_state[0] + tf.matmul(g_hu, recurrent_t), *g_state[1:])
            d_xw = d_xw.write(t, tf.pad(g_xw, padding))
            return k + 1, g_state, d_xw, d_hu if self.rule.additive else d_hu.write(t, tf.pad(g_hu, padding))

        dtype = d_outputs.dtype
        arrays = (tf.TensorArray(dtype, steps), tf.TensorArray(dtype, 0 if self.rule.additive else steps))
        _, d_initial, d_xw, d_hu = tf.while_loop(lambda k, *_: k < steps, body, (0, tuple(d_final), *arrays))
        d_xw = d_xw.stack()
        return d_xw, d_xw if self.rule.additive else d_hu.stack(), d_initial


_bf16_products = False  # inside `bf16_products(True)`


@contextlib.contextmanager
def bf16_products(on: bool) -> Iterator[None]:
    """Within the block, training's large matrix products outside the time loops (input
    projections and weight gradients) take bfloat16 operands, summed in float32 and rounded to
    bfloat16, then cast back to float32. CPUs with AMX run them about 4 times as fast; the loops
    stay float32 (XLA's CPU dot gains nothing from bfloat16), as do the weights and the states.
    Read when a training step is traced, which `fit` does inside the block."""
    global _bf16_products
    previous, _bf16_products = _bf16_products, on
    try:
        yield
    finally:
        _bf16_products = previous


def _product(a: tf.Tensor, b: tf.Tensor, **kwargs) -> tf.Tensor:
    """tf.matmul(a, b, **kwargs) in float32, from bfloat16 operands inside bf16_products(True)."""
    if not _bf16_products:
        return tf.matmul(a, b, **kwargs)
    return tf.cast(tf.matmul(tf.cast(a, tf.bfloat16), tf.cast(b, tf.bfloat16), **kwargs), a.dtype)


MAX_LOOP_PARTS = 4  # machines with more cores were not available to measure thinner parts on


def loop_parts() -> int:
    """Parts of the batch whose loops run side by side: one per core this process may use, at most
    MAX_LOOP_PARTS. An XLA time loop runs on one core (its small per-step matmuls do not spread
    over threads), so training and sampling cut the batch into this many parts, each with loops
    of its own (two parts on 2 cores: bench/RESULTS.md, "loop parts"). Read when a step is
    traced or a generator is made, not at import."""
    return min(cpu_cores(), MAX_LOOP_PARTS)


def batch_parts(batch: tf.Tensor, parts: int) -> list[tuple[tf.Tensor, tf.Tensor]]:
    """[start, stop) rows of each part (the last ones may be empty for tiny batches)."""
    size = (batch + parts - 1) // parts
    return [(tf.minimum(p * size, batch), tf.minimum((p + 1) * size, batch)) for p in range(parts)]


def _explicit_bptt_in_parts(loops: _TimeLoops, sequences: tf.Tensor, initial: Sequence[tf.Tensor],
                            *weights: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """`_explicit_bptt` over `loop_parts()` parts of the batch, which TensorFlow runs side by side.

    Rows of a batch are independent, so each part is a whole forward and backward of its own;
    the weights' gradients of the parts add up (TensorFlow sums the gradients of a tensor used
    several times). Parts are cut on the batch axis of [batch, time, features] tensors, where
    each is one contiguous block: no time-major copy is sliced or joined. They are cut by
    `tf.split`, whose gradient joins the parts' gradients in one copy; a slice's gradient would
    pad each part's to the whole batch with zeros and add them up.
    """
    parts = loop_parts()
    if parts == 1:
        return _explicit_bptt(loops, sequences, initial, *weights)
    sizes = tf.stack([b - a for a, b in batch_parts(tf.shape(sequences)[0], parts)])
    pieces = [tf.split(tensor, sizes, num=parts) for tensor in (sequences, *initial)]
    results = [_explicit_bptt(loops, part[0], list(part[1:]), *weights) for part in zip(*pieces, strict=True)]
    return (tf.concat([outputs for outputs, _ in results], 0),
            [tf.concat([final[k] for _, final in results], 0) for k in range(len(initial))])


def _explicit_bptt(loops: _TimeLoops, sequences: tf.Tensor, initial: Sequence[tf.Tensor], kernel: tf.Tensor,
                   recurrent: tf.Tensor, input_bias: tf.Tensor,
                   recurrent_bias: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
    """sequences [batch, time, features] -> (outputs [batch, time, units], final states)."""

    @tf.custom_gradient
    def run(x, kernel, recurrent, input_bias, recurrent_bias, *initial):
        batch, steps, features = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
        flat_x = tf.reshape(tf.transpose(x, [1, 0, 2]), [-1, features])  # [time * batch, features]
        gates, units = tf.shape(kernel)[1], tf.shape(recurrent)[0]  # explicit: a part may be empty
        xw = tf.reshape(_product(flat_x, kernel) + input_bias, [steps, batch, gates])
        # stop_gradient: the gradient is ours; without it an eager GradientTape would ask
        # TensorFlow to differentiate the compiled loop as well, which XLA cannot
        sequences, kept = loops.forward(*tf.nest.map_structure(tf.stop_gradient, (
            xw, recurrent, recurrent_bias, initial)))
        previous = tuple(tf.concat([s0[None], seq[:-1]], 0)  # the states before each step
                         for s0, seq in zip(initial, sequences, strict=True))

        def gradient(d_outputs, *d_final):
            d_final = tuple(tf.zeros_like(s0) if d is None else d
                            for d, s0 in zip(d_final, initial, strict=True))
            d_xw, d_hu, d_initial = loops.backward(tf.transpose(d_outputs, [1, 0, 2]), d_final, kept,
                                                   previous, tf.transpose(recurrent))
            padded = tf.shape(d_xw)[-1]  # the gates and the backward loop's zero columns
            d_xw = tf.reshape(d_xw, [steps * batch, padded])
            flat_h = tf.reshape(previous[0], [steps * batch, units])
            padded_kernel = tf.pad(kernel, [[0, 0], [0, padded - gates]])  # zeros meet the zero columns
            d_x = tf.reshape(_product(d_xw, padded_kernel, transpose_b=True), [steps, batch, features])
            d_x = tf.transpose(d_x, [1, 0, 2])
            if loops.rule.additive:  # both weight gradients and the bias in one matmul: [x | h | 1]^T @ dz
                ones = tf.ones([steps * batch, 1], flat_x.dtype)  # the bias gradient: the sum of dz's rows
                d_weights = _product(tf.concat([flat_x, flat_h, ones], 1), d_xw, transpose_a=True)[:, :gates]
                d_kernel, d_recurrent = d_weights[:features], d_weights[features:features + units]
                d_input_bias = d_recurrent_bias = d_weights[-1]
            else:
                d_hu = tf.reshape(d_hu, [steps * batch, padded])
                d_kernel = _product(flat_x, d_xw, transpose_a=True)[:, :gates]
                d_recurrent = _product(flat_h, d_hu, transpose_a=True)[:, :gates]
                d_input_bias = tf.reduce_sum(d_xw, 0)[:gates]
                d_recurrent_bias = tf.reduce_sum(d_hu, 0)[:gates]
            return (d_x, d_kernel, d_recurrent, d_input_bias, d_recurrent_bias, *d_initial)

        return (tf.transpose(sequences[0], [1, 0, 2]), *(seq[-1] for seq in sequences)), gradient

    outputs, *final = run(sequences, kernel, recurrent, input_bias, recurrent_bias, *initial)
    return outputs, final


def _gpu_visible() -> bool:
    return bool(tf.config.list_logical_devices("GPU"))


class _ExplicitBPTT:
    """Mixin: the CPU training path of a Keras recurrent layer. Subclasses name their loops."""

    loops: _TimeLoops
    _carried: _CarriedStates | None = None  # set by carry_states

    def explicit_bptt_applies(self, mask, training) -> bool:
        """Whether this call trains on the CPU with settings the explicit loops implement."""
        cell = self.cell
        settings_fit = (
            cell.use_bias and not cell.dropout and not cell.recurrent_dropout
            and cell.activation is keras.activations.tanh
            and getattr(cell, "recurrent_activation", keras.activations.sigmoid) is keras.activations.sigmoid
            and getattr(cell, "reset_after", True)
            and not (self.go_backwards or self.unroll or self.stateful) and self.compute_dtype == "float32")
        return bool(training and settings_fit and mask is None and keras.backend.backend() == "tensorflow"
                    and not _gpu_visible())

    def inner_loop(self, sequences, initial_state, mask, training=False):
        carried = self._carried if training else None
        if carried is not None:  # truncated BPTT: start where the previous batch ended, no gradient back
            initial_state = [tf.stop_gradient(tf.cast(v, sequences.dtype)) for v in carried.states]
        if self.explicit_bptt_applies(mask, training):
            initial = list(initial_state) if isinstance(initial_state, list | tuple) else [initial_state]
            kernel, recurrent, input_bias, recurrent_bias = weights_split(self)
            weights = [tf.convert_to_tensor(w) for w in (kernel, recurrent, input_bias, recurrent_bias)]
            outputs, final = _explicit_bptt_in_parts(self.loops, sequences, initial, *weights)
            last = final[0]
        else:
            last, outputs, final = super().inner_loop(sequences, initial_state, mask, training=training)
        if carried is not None:
            for variable, state in zip(carried.states, tf.nest.flatten(final), strict=True):
                variable.assign(tf.cast(state, variable.dtype))
        return last, outputs, final


class _CarriedStates:
    """A layer's states at the end of the last training batch (a plain holder, so that Keras
    neither saves them with the weights nor counts them as the model's variables)."""

    def __init__(self, states: list[tf.Variable]):
        self.states = states


def carry_states(model: keras.Model, batch_size: int | None) -> None:
    """Make training batches continue each other's recurrent state (truncated backpropagation
    through time, as char-rnn trains): row b of a batch must then be the text that follows row b
    of the batch before (textgen.text.pipeline.carried_training_dataset). None stops carrying.

    Only training calls carry; validation, evaluation and generation start from zeros as before.
    """
    for layer in model.layers:
        if not isinstance(layer, _ExplicitBPTT):
            continue
        if batch_size is None:
            layer._carried = None
            continue
        sizes = tf.nest.flatten(layer.cell.state_size)
        layer._carried = _CarriedStates([tf.Variable(tf.zeros([batch_size, size]), trainable=False,
                                                     name=f"{layer.name}_carried_{k}")
                                         for k, size in enumerate(sizes)])


@keras.saving.register_keras_serializable(package="textgen")
class LSTM(_ExplicitBPTT, keras.layers.LSTM):
    """keras.layers.LSTM, trained on CPUs by explicit backpropagation through time."""

    loops = _TimeLoops(LSTMRule)


@keras.saving.register_keras_serializable(package="textgen")
class GRU(_ExplicitBPTT, keras.layers.GRU):
    """keras.layers.GRU, trained on CPUs by explicit backpropagation through time."""

    loops = _TimeLoops(GRURule)


@keras.saving.register_keras_serializable(package="textgen")
class SimpleRNN(_ExplicitBPTT, keras.layers.SimpleRNN):
    """keras.layers.SimpleRNN, trained on CPUs by explicit backpropagation through time."""

    loops = _TimeLoops(SimpleRule)
