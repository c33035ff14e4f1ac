"""A model file's network in numpy, one token per row per call: what `textgen sample` runs, because
importing TensorFlow alone takes seconds and a few hundred characters take milliseconds.

It reads the `.keras` archive itself (its Keras config and its weights file, through h5py) and
computes what textgen.model.cells computes, in float32 as the compiled generator does: the first
layer's input projection as a table of every vocabulary entry, then each layer's `h @ U` and its
gates. Tests hold its logits against Keras' for every cell.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

from textgen.errors import TextgenError
from textgen.generate.step_generator import States

RECURRENT = {"LSTM": "lstm", "GRU": "gru", "SimpleRNN": "rnn"}


def _sigmoid_in_place(x: np.ndarray) -> None:
    """x <- 0.5 * tanh(0.5 * x) + 0.5, the sigmoid textgen.model.cells computes."""
    x *= np.float32(0.5)
    np.tanh(x, out=x)
    x *= np.float32(0.5)
    x += np.float32(0.5)


class _Recurrent:
    """One layer's weights: kernel W, recurrent kernel U, input bias b (and GRU's recurrent bias b_u).

    Its step works in place on few arrays: on one row each numpy call costs about a microsecond
    whatever its size, on 64 rows each pass over the gates about ten. The operations are the cells'
    own, in their order (a sum's operands may swap: float addition commutes), so the numbers are too.
    """

    def __init__(self, cell: str, variables: list[np.ndarray]):
        self.cell = cell
        self.kernel, self.recurrent = variables[0], variables[1]
        units = self.recurrent.shape[0]
        if cell == "gru":  # reset_after: the bias holds an input row and a recurrent row
            self.bias, self.recurrent_bias = variables[2][0], variables[2][1]
        else:
            self.bias = variables[2]
        self.state_count = 2 if cell == "lstm" else 1
        self.units = units
        if cell == "lstm":  # one tanh for the gates i f g o: sigmoid(x) = 0.5 * tanh(0.5 * x) + 0.5
            sigmoid_columns = np.ones(4 * units, bool)
            sigmoid_columns[2 * units:3 * units] = False
            self.tanh_scale = np.where(sigmoid_columns, np.float32(0.5), np.float32(1)).astype(np.float32)
            self.tanh_shift = np.where(sigmoid_columns, np.float32(0.5), np.float32(0)).astype(np.float32)

    def step(self, xw: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        """(x @ W + b, states) -> new states (Keras' gate order: LSTM i f g o, GRU z r h)."""
        u, h = self.units, state[0]
        if self.cell == "gru":
            hu = h @ self.recurrent
            hu += self.recurrent_bias
            gates = xw[:, :2 * u] + hu[:, :2 * u]
            _sigmoid_in_place(gates)  # z and r
            z = gates[:, :u]
            candidate = gates[:, u:] * hu[:, 2 * u:]
            candidate += xw[:, 2 * u:]
            np.tanh(candidate, out=candidate)
            kept = np.float32(1) - z
            kept *= candidate
            new = z * h
            new += kept
            return [new]
        gates = h @ self.recurrent
        gates += xw
        if self.cell == "lstm":
            gates *= self.tanh_scale
            np.tanh(gates, out=gates)
            gates *= self.tanh_scale  # sigmoid's 0.5 * tanh + 0.5 on i f o; g stays tanh (* 1 + 0)
            gates += self.tanh_shift
            c = gates[:, u:2 * u] * state[1]
            c += gates[:, :u] * gates[:, 2 * u:3 * u]
            new_h = np.tanh(c)
            new_h *= gates[:, 3 * u:]
            return [new_h, c]
        np.tanh(gates, out=gates)
        return [gates]


class NumpyNetwork:
    """ids [batch] and states -> logits [batch, vocab] and new states (a step runner, like an
    export's `step` signature); states are named as exports name them: h0 (c0) h1 (c1) ..."""

    def __init__(self, path: Path):
        layers = _read_layers(path)
        recurrent = [_Recurrent(RECURRENT[kind], variables) for kind, variables in layers
                     if kind in RECURRENT]
        embedding = next(variables for kind, variables in layers if kind in ("Embedding", "TiedEmbedding"))
        tied = any(kind == "TiedEmbedding" for kind, _ in layers)
        if not recurrent:
            raise TextgenError(f"{path}: no recurrent layer in this model file")
        first = recurrent[0]
        self.table = embedding[0] @ first.kernel + first.bias  # x @ W + b for every token
        if tied:
            self.output_kernel, self.output_bias = np.ascontiguousarray(embedding[0].T), embedding[1]
        else:
            self.output_kernel, self.output_bias = next(v for kind, v in layers if kind == "Dense")
        self.layers = recurrent
        self.state_sizes = {}
        for index, layer in enumerate(recurrent):
            self.state_sizes[f"h{index}"] = layer.units
            if layer.state_count == 2:
                self.state_sizes[f"c{index}"] = layer.units

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        new_states: States = {}
        x = None
        for index, layer in enumerate(self.layers):
            names = [f"h{index}", f"c{index}"][:layer.state_count]
            if x is None:
                xw = self.table[ids]
            else:
                xw = x @ layer.kernel
                xw += layer.bias
            new = layer.step(xw, [states[name] for name in names])
            new_states.update(zip(names, new, strict=True))
            x = new[0]
        logits = x @ self.output_kernel
        logits += self.output_bias
        return logits, new_states


def _snake_case(name: str) -> str:
    """Keras' naming.to_snake_case: the key a layer's weights have in the weights file."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _read_layers(path: Path) -> list[tuple[str, list[np.ndarray]]]:
    """(class name, float32 variables) of each layer of a `.keras` archive, in the model's order.

    Keras keys a model's layers in the weights file by their class name in snake case, numbered
    from the second of a kind (`gru`, `gru_1`); a recurrent layer's variables are its cell's.
    """
    import h5py  # Keras' own dependency; imported here so that the CLI's help does not pay for it

    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
            weights = io.BytesIO(archive.read("model.weights.h5"))
        layers: list[tuple[str, list[np.ndarray]]] = []
        used: Counter[str] = Counter()
        with h5py.File(weights, "r") as store:
            for layer in config["config"]["layers"]:
                kind = layer["class_name"]
                name = _snake_case(kind)
                key = name if used[name] == 0 else f"{name}_{used[name]}"
                used[name] += 1
                group = store["layers"][key]
                variables = group.get("cell", group)["vars"]
                layers.append((kind, [np.asarray(variables[str(i)], np.float32)
                                      for i in range(len(variables))]))
        return layers
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise TextgenError(f"{path}: cannot be read, the file is corrupt or not a textgen model "
                           f"({exc.__class__.__name__})") from None
