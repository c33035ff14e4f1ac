"""Generate text from a trained model, carrying the recurrent state.

The prime is fed once through the sequence kernels (copies of the recurrent layers that also
return their final states); after that every new token costs one step of the cells, inside a
compiled `tf.while_loop`. The loop's step does the least work per token: the first layer's input
projection of every vocabulary entry is a table computed once (a row lookup instead of a matmul),
and each layer makes one `h @ U` product and its gate arithmetic. Loops of many rows keep their
states as columns ([units, batch]) and multiply W^T @ h^T, which XLA's CPU dot runs faster for
such shapes (`COLUMNS_MIN_ROWS`). Generation always computes in
float32, whatever policy the model was trained under, so models trained with mixed precision on a
GPU sample on any CPU.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from textgen.generate.numpy_sampling import temperature_list
from textgen.generate.priming import fallback_id, prime_ids
from textgen.generate.sampling import apply_repetition_penalty, gumbel_noise, sample_rows
from textgen.model.cells import cell_math, weights_split
from textgen.model.fast_recurrent import batch_parts, loop_parts
from textgen.model.network import TiedEmbedding, output_weights, recurrent_layers
from textgen.text.tokenizers import UNK_ID, Tokenizer

# Tokens per compiled call: the first call is short so that text reaches the screen at once, the
# next ones double, up to MAX_CHUNK_TOKENS or CALL_TOKENS summed over the samples (each call costs
# about a millisecond of Python and TensorFlow overhead, which short calls would pay too often).
FIRST_CHUNK_TOKENS = 16
MAX_CHUNK_TOKENS = 1024
# Streams per part below which a batch is sampled as one loop (one stream never splits): a guess,
# only 64 streams in 2 parts were measured (bench/RESULTS.md, "Loop parts")
PART_MIN_STREAMS = 8
CALL_TOKENS = 8192
# Rows per loop from which the loop runs in the column layout: W^T @ h^T has XLA's CPU dot pick a
# kernel that suits a few columns; below 8 rows the row layout ran faster (bench/RESULTS.md,
# "Column layout")
COLUMNS_MIN_ROWS = 8
TABLE_MAX_FLOATS = 4_000_000  # the first layer's input table is kept when at most 16 MB


def chunk_sizes(length: int, num_samples: int) -> Iterator[int]:
    """How many tokens each compiled call generates, until `length`."""
    cap = max(FIRST_CHUNK_TOKENS, min(MAX_CHUNK_TOKENS, CALL_TOKENS // max(num_samples, 1)))
    size, done = FIRST_CHUNK_TOKENS, 0
    while done < length:
        yield min(size, length - done)
        done += size
        size = min(2 * size, cap)


def _columns_of(rows: tf.Tensor) -> tf.Tensor:
    """rows [batch, n] -> [n, batch], by rows^T @ I. A transpose would be fused by XLA into the GRU's
    first step, which its CPU compiler then emits as scalar code; a product's operand and result
    are arrays of their own. Each entry is one row value times 1 plus zeros: the same numbers, but
    for a -0.0 that may come out +0.0 (bench/RESULTS.md, "GRU by its own rule"; the LSTM's step
    measured no faster so)."""
    return tf.matmul(rows, tf.eye(tf.shape(rows)[0], dtype=rows.dtype), transpose_a=True)


class RowSettings(NamedTuple):
    """How each row samples, and where its noise comes from: one entry per row (stream), so that a
    batch can hold requests with settings of their own. Row r samples token i of a call at
    temperatures[r, (steps[r] + i) % L] with noise drawn from (seeds[r], steps[r] + i, rows[r])."""

    temperatures: tf.Tensor  # [batch, L] float32: a list cycled token by token (L = 1: one value)
    top_k: tf.Tensor  # [batch] int32, 0: off
    top_p: tf.Tensor  # [batch] float32, 1: off
    penalty: tf.Tensor  # [batch] float32 repetition penalty, 1: off
    seeds: tf.Tensor  # [batch] int32
    steps: tf.Tensor  # [batch] int32: tokens the row sampled before this call
    rows: tf.Tensor  # [batch] int32: the row's place among the samples of its request

    @classmethod
    def same(cls, batch: tf.Tensor | int, temperatures: tf.Tensor | Sequence[float], top_k: tf.Tensor | int,
             top_p: tf.Tensor | float, penalty: tf.Tensor | float, seed: tf.Tensor | int,
             step: tf.Tensor | int = 0) -> RowSettings:
        """`batch` rows of one request, all with the same settings (rows 0, 1, ...)."""
        temperatures = tf.cast(temperatures, tf.float32)
        fill = lambda value, dtype: tf.fill([batch], tf.cast(value, dtype))  # noqa: E731
        return cls(tf.tile(temperatures[tf.newaxis, :], [batch, 1]), fill(top_k, tf.int32),
                   fill(top_p, tf.float32), fill(penalty, tf.float32), fill(seed, tf.int32),
                   fill(step, tf.int32), tf.range(batch, dtype=tf.int32))

    @classmethod
    def spec(cls) -> RowSettings:
        return cls(tf.TensorSpec([None, None], tf.float32), *(tf.TensorSpec([None], dtype) for dtype in (
            tf.int32, tf.float32, tf.float32, tf.int32, tf.int32, tf.int32)))

    def rows_between(self, start: tf.Tensor, stop: tf.Tensor) -> RowSettings:
        return RowSettings(*(field[start:stop] for field in self))

    def advanced(self, steps: tf.Tensor | int) -> RowSettings:
        """These settings after every row sampled `steps` more tokens."""
        return self._replace(steps=self.steps + steps)


class Generator:
    """Prime + sample loop over a trained model's weights."""

    def __init__(self, model: keras.Model, tokenizer: Tokenizer, xla: bool = True,
                 derived_weights: bool = True, parts: int | None = None):
        """`derived_weights=False` computes from the model's own weights alone (exports): no input
        table, no stacked kernels. `parts`: loops many streams run in side by side (default: one
        per core, `fast_recurrent.loop_parts`)."""
        self.model = model
        self.tokenizer = tokenizer
        self.embedding = model.get_layer("embedding")
        self.layers = [self._state_returning_copy(layer) for layer in recurrent_layers(model)]
        self.state_counts = [2 if isinstance(layer, keras.layers.LSTM) else 1 for layer in self.layers]
        # Names of the recurrent states in order, as exports expose them: h0 (c0) h1 (c1) ...
        self.state_names = [name for index, count in enumerate(self.state_counts)
                            for name in (f"h{index}", f"c{index}")[:count]]
        self.state_units = [layer.units for layer, count in zip(self.layers, self.state_counts, strict=True)
                            for _ in range(count)]
        banned = np.zeros(tokenizer.vocab_size, dtype=bool)
        banned[UNK_ID] = True
        self.banned = tf.constant(banned)
        self.fallback_id = fallback_id(tokenizer)
        self.arithmetic = [cell_math(layer) for layer in self.layers]
        self.parts = loop_parts() if parts is None else parts
        self._make_derived_weights(derived_weights)
        self.sync_weights()
        self.xla = xla
        self._compile(xla)

    def _make_derived_weights(self, wanted: bool) -> None:
        """Copies of the weights arranged for the least work per token (filled by `sync_weights`)."""
        gates = self.layers[0].cell.kernel.shape[-1]
        vocab = self.tokenizer.vocab_size
        self.input_table = (tf.Variable(tf.zeros([vocab, gates]), trainable=False, name="input_table")
                            if wanted and vocab * gates <= TABLE_MAX_FLOATS else None)
        # Layers after the first of additive cells (LSTM, SimpleRNN) compute x @ W + h @ U as one
        # [x | h] @ [W; U]: one larger matmul a step instead of two small ones.
        self.stacked_kernels = [
            tf.Variable(tf.zeros([layer.cell.kernel.shape[0] + layer.units, layer.cell.kernel.shape[1]]),
                        trainable=False, name=f"stacked_kernel_{index}")
            if wanted and index > 0 and additive else None
            for index, (layer, (_, additive)) in enumerate(zip(self.layers, self.arithmetic, strict=True))]
        # A tied model scores tokens by the embedding's transpose, kept here transposed: XLA's CPU
        # dot multiplies by a transposed operand more slowly
        self.output_kernel = (tf.Variable(tf.zeros(self.embedding.embeddings.shape[::-1]), trainable=False,
                                          name="output_kernel")
                              if wanted and isinstance(self.embedding, TiedEmbedding) else None)
        # The column layout's kernels, transposed once here: a transpose inside the loop would be
        # folded into the dot, which then runs more slowly than either layout
        self.column_kernels = [
            {role: tf.Variable(tf.zeros(weights.shape[::-1]), trainable=False, name=f"{role}_columns_{index}")
             for role, weights in self._row_kernels(index).items()}
            for index in range(len(self.layers))] if wanted else None

    def _row_kernels(self, index: int) -> dict[str, tf.Tensor]:
        """The kernels layer `index` multiplies by in `lean_step`, by role."""
        kernel, recurrent, _, _ = weights_split(self.layers[index])
        if self.stacked_kernels[index] is not None:
            return {"stacked": self.stacked_kernels[index]}
        if index == 0 and self.input_table is not None:
            return {"recurrent": recurrent}
        return {"kernel": kernel, "recurrent": recurrent}

    def _compile(self, xla: bool) -> None:
        """The prime and sampling functions, with fixed signatures: one trace per generator,
        whatever the batch, prime, list or chunk lengths (XLA compiles once per batch size).
        Without autograph: the graphs use tf.while_loop and tf.cond themselves, and converting
        every call they make took about a second of each start-up (bench/RESULTS.md, "Start-up")."""
        states = [tf.TensorSpec([None, units], tf.float32) for units in self.state_units]
        vocab = self.tokenizer.vocab_size
        signature = [tf.TensorSpec([None, vocab], tf.float32), states, tf.TensorSpec([None, vocab], tf.bool),
                     tf.TensorSpec([], tf.int32), RowSettings.spec()]
        ids = tf.TensorSpec([None, None], tf.int32)
        self._prime = tf.function(self.prime_graph, input_signature=[ids], autograph=False)
        # prompts of different lengths in one call: padded on the right, the padding masked
        self._prime_masked = tf.function(self.prime_graph, autograph=False,
                                         input_signature=[ids, tf.TensorSpec([None, None], tf.bool)])
        # Under XLA the tokens go to a buffer of MAX_CHUNK_TOKENS (shapes are compile-time), of
        # which a call fills its first `steps`; one compiled loop serves every chunk size.
        capacity = MAX_CHUNK_TOKENS if xla else None
        # by layout (columns or not); each traced when first used
        self._sample = {columns: tf.function(
            functools.partial(self.sample_graph, capacity=capacity, columns=columns),
            input_signature=signature, jit_compile=xla, autograph=False) for columns in (False, True)}
        # A compiled loop runs on one core: batches of several streams are cut into parts whose
        # loops TensorFlow runs side by side.
        self._sample_in_parts = {columns: tf.function(functools.partial(self._sample_parts, columns=columns),
                                                      input_signature=signature, autograph=False)
                                 for columns in (False, True)}

    @staticmethod
    def _state_returning_copy(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = {**layer.get_config(), "return_state": True, "return_sequences": True,
                  "dtype": "float32", "name": f"{layer.name}_generation"}
        copy = layer.__class__.from_config(config)
        copy.build((None, None, layer.input.shape[-1]))
        return copy

    def sync_weights(self) -> None:
        """Copy the model's current weights (called again after each training epoch)."""
        for source, copy in zip(recurrent_layers(self.model), self.layers, strict=True):
            copy.set_weights(source.get_weights())
        if self.input_table is not None:
            kernel, _, input_bias, _ = weights_split(self.layers[0])
            self.input_table.assign(tf.matmul(self._embed(tf.range(self.tokenizer.vocab_size)), kernel)
                                    + input_bias)
        for layer, stacked in zip(self.layers, self.stacked_kernels, strict=True):
            if stacked is not None:
                kernel, recurrent, _, _ = weights_split(layer)
                stacked.assign(tf.concat([kernel, recurrent], 0))
        if self.output_kernel is not None:
            self.output_kernel.assign(tf.transpose(tf.cast(self.embedding.embeddings, tf.float32)))
        for index, kernels in enumerate(self.column_kernels or []):
            for role, weights in self._row_kernels(index).items():
                kernels[role].assign(tf.transpose(weights))

    # -- graph pieces -------------------------------------------------------------------------
    def _embed(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.gather(self.embedding.embeddings, ids), tf.float32)

    def _logits(self, hidden: tf.Tensor) -> tf.Tensor:
        kernel, bias = output_weights(self.model)  # read here: inside the traced graph, tied or not
        if self.output_kernel is not None:
            kernel = self.output_kernel
        return tf.matmul(hidden, tf.cast(kernel, tf.float32)) + tf.cast(bias, tf.float32)

    def prime_graph(self, ids: tf.Tensor, mask: tf.Tensor | None = None
                    ) -> tuple[tf.Tensor, list[tf.Tensor], tf.Tensor]:
        """Feed [batch, time] ids through the sequence kernels -> next logits, states, seen mask.

        With a mask (rows of different lengths, padded on the right), padded steps carry the
        state unchanged, so each row ends in the state of its own last token.
        """
        x = self._embed(ids)
        states: list[tf.Tensor] = []
        for layer in self.layers:
            x, *layer_states = layer(x, mask=mask)
            states.extend(layer_states)
        last_hidden = states[-self.state_counts[-1]]  # the last layer's h: its output at the last token
        present = tf.one_hot(ids, self.tokenizer.vocab_size, on_value=True, off_value=False)
        if mask is not None:
            present = tf.logical_and(present, mask[:, :, tf.newaxis])
        return self._logits(last_hidden), states, tf.reduce_any(present, axis=1)

    def step(self, ids: tf.Tensor, states: list[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """One token per row through the cells: ids [batch] -> logits [batch, vocab], new states."""
        x = self._embed(ids)
        new_states: list[tf.Tensor] = []
        position = 0
        for layer, count in zip(self.layers, self.state_counts, strict=True):
            x, layer_states = layer.cell(x, states[position:position + count])
            new_states.extend(layer_states)
            position += count
        return self._logits(x), new_states

    def lean_step(self, ids: tf.Tensor, states: list[tf.Tensor], columns: bool = False
                  ) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """`step` with the least work per token, for the sampling loop: the first layer's input
        projection is a row of the input table, the next layers of additive cells one stacked
        matmul each, the others one `h @ U` beside `x @ W`, then the gate arithmetic. With
        `columns`, the states are [units, batch] and each product W^T @ x^T; the logits stay
        [batch, vocab]."""
        axis = 0 if columns else -1
        x = None
        new_states: list[tf.Tensor] = []
        position = 0
        for index, (layer, count, (math, additive), stacked) in enumerate(
                zip(self.layers, self.state_counts, self.arithmetic, self.stacked_kernels, strict=True)):
            _, _, input_bias, recurrent_bias = weights_split(layer)
            if columns:
                input_bias, recurrent_bias = input_bias[:, tf.newaxis], recurrent_bias[:, tf.newaxis]
            state = tuple(states[position:position + count])
            if stacked is not None:  # z = [x | h] @ [W; U] + b: additive cells have no recurrent bias
                z = self._product(tf.concat([x, state[0]], axis), index, "stacked", columns) + input_bias
                layer_states = math(z, 0.0, state, axis)
            else:
                if index == 0 and self.input_table is not None:
                    xw = tf.gather(self.input_table, ids)
                    if columns:  # the GRU's by a product with the identity (exact): see _columns_of
                        xw = tf.transpose(xw) if additive else _columns_of(xw)
                else:
                    inputs = x if index > 0 else self._embed(ids)
                    inputs = tf.transpose(inputs) if columns and index == 0 else inputs
                    xw = self._product(inputs, index, "kernel", columns) + input_bias
                hu = self._product(state[0], index, "recurrent", columns) + recurrent_bias
                layer_states = math(xw + hu, 0.0, state, axis) if additive else math(xw, hu, state, axis)
            x = layer_states[0]
            new_states.extend(layer_states)
            position += count
        return self._logits(tf.transpose(x) if columns else x), new_states

    def _product(self, inputs: tf.Tensor, index: int, role: str, columns: bool) -> tf.Tensor:
        """inputs @ W for layer `index`'s kernel `role` (see `_row_kernels`), or W^T @ inputs."""
        if columns:
            return tf.matmul(self.column_kernels[index][role], inputs)
        return tf.matmul(inputs, self._row_kernels(index)[role])

    def _sample_parts(self, logits, states, seen, steps, settings: RowSettings, columns: bool = False):
        """`_sample` over `self.parts` parts of the batch, each drawing the noise of its rows."""
        parts = [self._sample[columns](logits[a:b], [s[a:b] for s in states], seen[a:b], steps,
                                       settings.rows_between(a, b))
                 for a, b in batch_parts(tf.shape(logits)[0], self.parts)]
        tokens, logits, states, seen = zip(*parts, strict=True)
        return (tf.concat(tokens, 0), tf.concat(logits, 0),
                [tf.concat([part[k] for part in states], 0) for k in range(len(self.state_units))],
                tf.concat(seen, 0))

    def sample_graph(self, logits, states, seen, steps, settings: RowSettings, capacity: int | None = None,
                     columns: bool = False):
        """Sample `steps` tokens in a `tf.while_loop` -> ids [batch, capacity or steps], logits,
        states, seen (with a `capacity`, ids past `steps` are zeros). `columns`: the loop runs in
        the column layout (`lean_step`); states come in and go out as [batch, units] either way.

        Each row draws its noise from its own (seed, step, row) alone (see RowSettings), so its
        text depends neither on how generation is cut into calls nor on what shares the batch.
        """
        batch = tf.shape(logits)[0]
        size = steps if capacity is None else capacity
        tokens = tf.TensorArray(tf.int32, size=size, element_shape=tf.TensorShape([None]))
        penalised = tf.reduce_any(settings.penalty != 1)
        cycle = tf.shape(settings.temperatures)[1]
        vocab = self.tokenizer.vocab_size

        def body(i, logits, states, seen, tokens, noise):
            step = settings.steps + i
            # A list is cycled per token (gather: a slice with a runtime index recompiles under XLA).
            temperature = tf.gather(settings.temperatures, step % cycle, axis=1, batch_dims=1)
            logits = tf.cond(penalised, lambda: apply_repetition_penalty(logits, seen, settings.penalty),
                             lambda: logits)
            ids = sample_rows(logits, temperature, settings.top_k, settings.top_p, settings.seeds, step,
                              settings.rows, self.banned, noise)
            seen = tf.cond(penalised, lambda: tf.logical_or(seen, tf.one_hot(
                ids, vocab, on_value=True, off_value=False)), lambda: seen)
            logits, states = self.lean_step(ids, states, columns)
            # the next token's noise, carried: computed apart from the argmax (see `sample_rows`)
            noise = gumbel_noise(vocab, settings.seeds, step + 1, settings.rows)
            return i + 1, logits, states, seen, tokens.write(i, ids), noise

        if columns:
            states = [tf.transpose(s) for s in states]
        noise = gumbel_noise(vocab, settings.seeds, settings.steps, settings.rows)
        _, logits, states, seen, tokens, _ = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), logits, states, seen, tokens, noise))
        if columns:
            states = [tf.transpose(s) for s in states]
        return tf.reshape(tf.transpose(tokens.stack()), [batch, size]), logits, states, seen

    def sample_chunk(self, logits, states, seen, steps: int, settings: RowSettings):
        """`steps` tokens for every row (at most MAX_CHUNK_TOKENS), compiled: ids [batch, steps] as
        numpy, and the logits, states and seen mask to continue from. Batches of several streams
        run as parts side by side."""
        batch = int(logits.shape[0])
        in_parts = batch >= PART_MIN_STREAMS * self.parts > 1
        rows = -(-batch // self.parts) if in_parts else batch  # per loop
        columns = self.column_kernels is not None and rows >= COLUMNS_MIN_ROWS
        sample = (self._sample_in_parts if in_parts else self._sample)[columns]
        tokens, logits, states, seen = sample(logits, states, seen, tf.constant(steps), settings)
        return tokens.numpy()[:, :steps], logits, states, seen

    # -- public -----------------------------------------------------------------------------

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0, label: str | None = None,
               chunk: int | None = None) -> Iterator[np.ndarray]:
        """Yield [num_samples, n] arrays of new token ids, chunk by chunk, until `length` tokens.

        Chunks grow from FIRST_CHUNK_TOKENS (see `chunk_sizes`) unless `chunk` fixes their size.
        A list of temperatures is cycled token by token, as textgenrnn does.
        """
        ids = np.tile(prime_ids(self.tokenizer, prime, label)[np.newaxis, :], (num_samples, 1))
        logits, states, seen = self._prime(tf.constant(ids, tf.int32))
        settings = RowSettings.same(num_samples, temperature_list(temperature), top_k, top_p,
                                    repetition_penalty, seed)
        sizes = chunk_sizes(length, num_samples) if chunk is None else (
            min(chunk, length - done) for done in range(0, length, chunk))
        for size in sizes:
            for part in range(0, size, MAX_CHUNK_TOKENS):  # a fixed chunk may exceed the buffer
                steps = min(MAX_CHUNK_TOKENS, size - part)
                tokens, logits, states, seen = self.sample_chunk(logits, states, seen, steps, settings)
                settings = settings.advanced(steps)
                yield tokens

    def generate(self, prime: str = "", length: int = 200, **options) -> list[str]:
        """Whole continuations (without the prime), one string per sample; a model of records runs on
        past a record's end, shown as a blank line."""
        parts = list(self.stream(prime, length, **options))
        ids = np.concatenate(parts, axis=1) if parts else np.zeros((options.get("num_samples", 1), 0))
        return [self.tokenizer.decode_records(row) for row in ids]
