"""The arithmetic of one step of each recurrent cell, shared by training (textgen.model.fast_recurrent)
and generation (textgen.generate.generator), so that both compute exactly what Keras' layers do.

A step takes the input projection `x @ W + b` and the recurrent one `h @ U + b_u` and returns the
new states; `axis` is the features' axis: -1 for [batch, units] arrays, 0 for the [units, batch]
ones of generation's column layout (textgen.generate.generator). Each cell's rule also keeps
some of its activations and gives the step's derivative from them, which training's explicit
backward loop uses instead of recomputing the step under a tape.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

State = tuple[tf.Tensor, ...]
CellMath = Callable[..., State]  # (x@W + b, h@U + b_u, states, axis=-1) -> states


class CellRule:
    """A cell's step written with its derivative."""

    additive = True  # uses x@W + b and h@U + b_u only through their sum (LSTM, SimpleRNN)
    kept_count = 1  # how many tensors `step` keeps per step

    @staticmethod
    def step(xw: tf.Tensor, hu: tf.Tensor, state: State, axis: int = -1) -> tuple[State, State]:
        """(x@W + b, h@U + b_u, states) -> (new states, what to keep for the backward pass)."""
        raise NotImplementedError

    @staticmethod
    def gradient(kept: State, state: State, upstream: State) -> tuple[tf.Tensor, tf.Tensor, State]:
        """(kept, states before the step, gradients of the new states) -> (gradients of x@W + b
        and of h@U + b_u, gradients of the states before the step except the part through h@U).
        Additive cells return one tensor for both."""
        raise NotImplementedError


def _gate_lanes(like: tf.Tensor, axis: int, sigmoid: float, tanh: float) -> tf.Tensor:
    """A [4 * units] vector over an LSTM's gates in Keras' order (i, f, g, o): `sigmoid` in the
    lanes of the three sigmoid gates, `tanh` in g's; `units` is `like`'s size along `axis`."""
    units = like.shape[axis] or tf.shape(like)[axis]
    sigmoids, tanhs = tf.fill([units], sigmoid), tf.fill([units], tanh)
    return tf.concat([sigmoids, sigmoids, tanhs, sigmoids], 0)


class LSTMRule(CellRule):
    kept_count = 2

    @staticmethod
    def step(xw, hu, state, axis=-1):
        z, (_, c) = xw + hu, state
        # sigmoid(x) = (1 + tanh(x / 2)) / 2: one tanh over all four gates (Keras' order i, f, g, o)
        # instead of three sigmoids and a tanh on slices, the gates' costliest arithmetic
        scale, shift = _gate_lanes(c, axis, 0.5, 1.0), _gate_lanes(c, axis, 0.5, 0.0)
        if axis == 0:  # broadcast down the columns
            scale, shift = scale[:, tf.newaxis], shift[:, tf.newaxis]
        gates = tf.tanh(z * scale) * scale + shift
        i, f, g, o = tf.split(gates, 4, axis=axis)
        c = f * c + i * g
        tanh_c = tf.tanh(c)
        return (o * tanh_c, c), (gates, tanh_c)  # kept apart: a concat is a copy XLA does not vectorize

    @staticmethod
    def gradient(kept, state, upstream):
        _, c_before = state
        d_h, d_c = upstream
        gates, tanh_c = kept
        i, f, g, o = tf.split(gates, 4, axis=-1)
        d_c = d_c + d_h * o * (1.0 - tanh_c * tanh_c)
        # dz = upstream * partner * the activation's slope (s(1 - s), or 1 - g² for g), each written
        # over all four gates at once: per gate, XLA recomputed d_c in four fusions and then joined
        # them by a copy (bench/RESULTS.md, "Where LSTM training's time goes")
        slope = _gate_lanes(tanh_c, -1, 0.0, 1.0) + gates * (_gate_lanes(tanh_c, -1, 1.0, 0.0) - gates)
        d_z = tf.concat([d_c, d_c, d_c, d_h], -1) * tf.concat([g, c_before, i, tanh_c], -1) * slope
        return d_z, d_z, (tf.zeros_like(d_h), d_c * f)


class GRURule(CellRule):
    """Keras' GRU with reset_after=True (cuDNN's variant): the reset gate scales h @ U_h + b.

    It keeps its gates, the candidate and h @ U_h + b for the backward pass. Besides sparing
    the backward a tape, keeping them changes how XLA compiles the forward step: computed whole
    from x@W + b and h@U + b_u into the state, the step had come out as scalar code, and with
    the gates also written out it is vector code (bench/RESULTS.md, "GRU by its own rule").
    """

    additive = False
    kept_count = 3

    @staticmethod
    def step(xw, hu, state, axis=-1):
        (h,) = state
        units = h.shape[axis] or tf.shape(h)[axis]
        x_zr, x_h = tf.split(xw, [2 * units, units], axis=axis)
        h_zr, h_h = tf.split(hu, [2 * units, units], axis=axis)
        zr = tf.sigmoid(x_zr + h_zr)  # the update and reset gates, in one array
        z, r = tf.split(zr, 2, axis=axis)
        candidate = tf.tanh(x_h + r * h_h)
        return (z * h + (1.0 - z) * candidate,), (zr, candidate, h_h)

    @staticmethod
    def gradient(kept, state, upstream):
        (h,) = state
        (d_h,) = upstream
        zr, candidate, h_h = kept
        z, r = tf.split(zr, 2, axis=-1)
        d_x_h = d_h * (1.0 - z) * (1.0 - candidate * candidate)  # the candidate's pre-activation
        d_zr = tf.concat([d_h * (h - candidate), d_x_h * h_h], -1) * zr * (1.0 - zr)
        return tf.concat([d_zr, d_x_h], -1), tf.concat([d_zr, d_x_h * r], -1), (d_h * z,)


class SimpleRule(CellRule):
    @staticmethod
    def step(xw, hu, state, axis=-1):
        h = tf.tanh(xw + hu)
        return (h,), (h,)

    @staticmethod
    def gradient(kept, state, upstream):
        (d_h,) = upstream
        (h,) = kept
        d_z = d_h * (1.0 - h * h)
        return d_z, d_z, (tf.zeros_like(d_h),)


def cell_rule(layer: keras.layers.Layer) -> type[CellRule]:
    """The rule of a Keras LSTM, GRU or SimpleRNN layer (textgen's or Keras' own class, with the
    cuDNN-style settings textgen builds)."""
    if isinstance(layer, keras.layers.LSTM):
        return LSTMRule
    if isinstance(layer, keras.layers.GRU):
        return GRURule
    return SimpleRule


def cell_math(layer: keras.layers.Layer) -> tuple[CellMath, bool]:
    """The step arithmetic of a layer (its rule's step without what it keeps), and whether it is
    additive."""
    rule = cell_rule(layer)

    def math(xw: tf.Tensor, hu: tf.Tensor, state: State, axis: int = -1) -> State:
        return rule.step(xw, hu, state, axis)[0]

    return math, rule.additive


def weights_split(layer: keras.layers.Layer) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(kernel, recurrent kernel, input bias, recurrent bias) of a layer, for `cell_math`."""
    cell = layer.cell
    if isinstance(layer, keras.layers.GRU):  # reset_after: the bias holds an input and a recurrent row
        return cell.kernel, cell.recurrent_kernel, cell.bias[0], cell.bias[1]
    return cell.kernel, cell.recurrent_kernel, cell.bias, tf.zeros(cell.bias.shape, layer.compute_dtype)
