"""The arithmetic of one step of each recurrent cell, shared by training (textgen.model.fast_recurrent)
and generation (textgen.generate.generator), so that both compute exactly what Keras' layers do.

A step takes the input projection `x @ W + b` and the recurrent one `h @ U + b_u` and returns the
new states; `axis` is the features' axis: -1 for [batch, units] arrays, 0 for the [units, batch]
ones of generation's column layout (textgen.generate.generator). Additive cells (LSTM, SimpleRNN)
use them only through their sum `z`, and also give their derivative from the activations they
keep, which the explicit backward loop reuses.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

State = tuple[tf.Tensor, ...]
CellMath = Callable[..., State]  # (x@W + b, h@U + b_u, states, axis=-1) -> states


def gru_math(xw: tf.Tensor, hu: tf.Tensor, state: State, axis: int = -1) -> State:
    """Keras' GRU with reset_after=True (cuDNN's variant): the reset gate scales h @ U_h + b."""
    (h,) = state
    x_z, x_r, x_h = tf.split(xw, 3, axis=axis)
    h_z, h_r, h_h = tf.split(hu, 3, axis=axis)
    z = tf.sigmoid(x_z + h_z)
    candidate = tf.tanh(x_h + tf.sigmoid(x_r + h_r) * h_h)
    return (z * h + (1.0 - z) * candidate,)


class AnalyticRule:
    """An additive cell's step written with its derivative, so that the backward loop reuses the
    activations the forward kept instead of recomputing them under a tape."""

    kept_count = 1  # how many tensors `step` keeps per step

    @staticmethod
    def step(z: tf.Tensor, state: State, axis: int = -1) -> tuple[State, State]:
        """(z = xw + hu, states) -> (new states, what to keep for the backward pass)."""
        raise NotImplementedError

    @staticmethod
    def gradient(kept: State, state: State, upstream: State) -> tuple[tf.Tensor, State]:
        """(kept, states before the step, gradients of the new states) -> (dz, gradients of the
        states before the step, except the part through h @ U)."""
        raise NotImplementedError


def _gate_lanes(like: tf.Tensor, axis: int, sigmoid: float, tanh: float) -> tf.Tensor:
    """A [4 * units] vector over an LSTM's gates in Keras' order (i, f, g, o): `sigmoid` in the
    lanes of the three sigmoid gates, `tanh` in g's; `units` is `like`'s size along `axis`."""
    units = like.shape[axis] or tf.shape(like)[axis]
    sigmoids, tanhs = tf.fill([units], sigmoid), tf.fill([units], tanh)
    return tf.concat([sigmoids, sigmoids, tanhs, sigmoids], 0)


class LSTMRule(AnalyticRule):
    kept_count = 2

    @staticmethod
    def step(z, state, axis=-1):
        _, c = state
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
        return d_z, (tf.zeros_like(d_h), d_c * f)


class SimpleRule(AnalyticRule):
    @staticmethod
    def step(z, state, axis=-1):
        h = tf.tanh(z)
        return (h,), (h,)

    @staticmethod
    def gradient(kept, state, upstream):
        (d_h,) = upstream
        (h,) = kept
        return d_h * (1.0 - h * h), (tf.zeros_like(d_h),)


def lstm_math(xw: tf.Tensor, hu: tf.Tensor, state: State, axis: int = -1) -> State:
    return LSTMRule.step(xw + hu, state, axis)[0]


def simple_math(xw: tf.Tensor, hu: tf.Tensor, state: State, axis: int = -1) -> State:
    return SimpleRule.step(xw + hu, state, axis)[0]


def cell_math(layer: keras.layers.Layer) -> tuple[CellMath, bool]:
    """The step arithmetic of a Keras LSTM, GRU or SimpleRNN layer (textgen's or Keras' own class,
    with the cuDNN-style settings textgen builds), and whether it is additive."""
    if isinstance(layer, keras.layers.LSTM):
        return lstm_math, True
    if isinstance(layer, keras.layers.GRU):
        return gru_math, False
    return simple_math, True


def weights_split(layer: keras.layers.Layer) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """(kernel, recurrent kernel, input bias, recurrent bias) of a layer, for `cell_math`."""
    cell = layer.cell
    if isinstance(layer, keras.layers.GRU):  # reset_after: the bias holds an input and a recurrent row
        return cell.kernel, cell.recurrent_kernel, cell.bias[0], cell.bias[1]
    return cell.kernel, cell.recurrent_kernel, cell.bias, tf.zeros(cell.bias.shape, layer.compute_dtype)
