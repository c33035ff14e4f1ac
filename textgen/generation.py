"""Generate text from a trained model, carrying the recurrent state.

The prime is fed once through the sequence kernels (copies of the recurrent layers that also
return their final states); after that every new token costs one step of the cells, inside a
compiled `tf.while_loop`. Generation always computes in float32, whatever policy the model was
trained under, so models trained with mixed precision on a GPU sample on any CPU.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf

from textgen.models import recurrent_layers
from textgen.sampling import apply_repetition_penalty, sample_next, temperature_list
from textgen.tokenizers import UNK_ID, Tokenizer

CHUNK_TOKENS = 64  # tokens per compiled call: how often text reaches the screen


def fallback_id(tokenizer: Tokenizer) -> int:
    """What an empty prime starts from: a line break, or id 1 if the vocabulary has none."""
    newline = tokenizer.encode("\n")
    return int(newline[0]) if len(newline) and newline[0] != UNK_ID else 1


def prime_ids(tokenizer: Tokenizer, prime: str) -> np.ndarray:
    """Ids of the prime's known pieces; the fallback token if none."""
    ids = tokenizer.encode(prime)
    ids = ids[ids != UNK_ID]
    return ids if len(ids) else np.array([fallback_id(tokenizer)], np.int32)


class Generator:
    """Prime + sample loop over a trained model's weights."""

    def __init__(self, model: keras.Model, tokenizer: Tokenizer, xla: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.embedding = model.get_layer("embedding")
        self.output_layer = model.get_layer("logits")
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
        self.sync_weights()
        self.xla = xla
        # Fixed signatures: one trace per generator, whatever the batch, prime or list lengths.
        states = [tf.TensorSpec([None, units], tf.float32) for units in self.state_units]
        vocab = tokenizer.vocab_size
        scalar = tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.float32)
        self._steps_signature = [
            tf.TensorSpec([None, vocab], tf.float32), states, tf.TensorSpec([None, vocab], tf.bool),
            tf.TensorSpec([None], tf.float32), scalar[0], scalar[1], scalar[1], scalar[0], scalar[0]]
        self._prime = tf.function(self.prime_graph,
                                  input_signature=[tf.TensorSpec([None, None], tf.int32)])
        self._compiled_steps: dict[int, tf.types.experimental.PolymorphicFunction] = {}

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

    # -- graph pieces -------------------------------------------------------------------------
    def _embed(self, ids: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.gather(self.embedding.embeddings, ids), tf.float32)

    def _logits(self, hidden: tf.Tensor) -> tf.Tensor:
        return tf.matmul(hidden, tf.cast(self.output_layer.kernel, tf.float32)) + tf.cast(
            self.output_layer.bias, tf.float32)

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

    def _steps_function(self, steps: int):
        """The compiled loop for `steps` tokens (a constant, so that XLA compiles it once)."""
        if steps not in self._compiled_steps:
            def run(logits, states, seen, temperatures, top_k, top_p, penalty, seed, offset):
                return self.sample_graph(logits, states, seen, steps, temperatures, top_k, top_p,
                                         penalty, seed, offset)

            self._compiled_steps[steps] = tf.function(run, input_signature=self._steps_signature,
                                                      jit_compile=self.xla)
        return self._compiled_steps[steps]

    def sample_graph(self, logits, states, seen, steps, temperatures, top_k, top_p, penalty, seed,
                     offset):
        """Sample `steps` tokens in a `tf.while_loop` -> ids [batch, steps], logits, states, seen.

        Token i of a call draws its noise from (seed, offset + i) alone, so text does not
        depend on how generation is cut into calls.
        """
        batch = tf.shape(logits)[0]
        tokens = tf.TensorArray(tf.int32, size=steps, element_shape=tf.TensorShape([None]))

        def body(i, logits, states, seen, tokens):
            step = offset + i
            # A list is cycled per token (gather: a slice with a runtime index recompiles under XLA).
            temperature = tf.gather(temperatures, step % tf.size(temperatures))
            penalised = penalty != 1
            logits = tf.cond(penalised, lambda: apply_repetition_penalty(logits, seen, penalty),
                             lambda: logits)
            ids = sample_next(logits, temperature, top_k, top_p, tf.stack([seed, step]), self.banned)
            seen = tf.cond(penalised, lambda: tf.logical_or(seen, tf.one_hot(
                ids, self.tokenizer.vocab_size, on_value=True, off_value=False)), lambda: seen)
            logits, states = self.step(ids, states)
            return i + 1, logits, states, seen, tokens.write(i, ids)

        _, logits, states, seen, tokens = tf.while_loop(
            lambda i, *_: i < steps, body, (tf.constant(0), logits, states, seen, tokens))
        return tf.reshape(tf.transpose(tokens.stack()), [batch, steps]), logits, states, seen

    # -- public -----------------------------------------------------------------------------

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0,
               chunk: int = CHUNK_TOKENS) -> Iterator[np.ndarray]:
        """Yield [num_samples, n] arrays of new token ids, chunk by chunk, until `length` tokens.

        A list of temperatures is cycled token by token, as textgenrnn does.
        """
        temperatures = temperature_list(temperature)
        ids = np.tile(prime_ids(self.tokenizer, prime)[np.newaxis, :], (num_samples, 1))
        logits, states, seen = self._prime(tf.constant(ids, tf.int32))
        steps_function = self._steps_function(chunk)
        settings = (tf.constant(temperatures, tf.float32), tf.constant(int(top_k)),
                    tf.constant(float(top_p)), tf.constant(float(repetition_penalty)),
                    tf.constant(int(seed)))
        done = 0
        while done < length:
            # Always a whole chunk (one compiled shape); the last one's surplus is dropped. Each
            # token depends only on the seed and its position, so the text is the same either way.
            tokens, logits, states, seen = steps_function(logits, states, seen, *settings,
                                                          tf.constant(done))
            yield tokens.numpy()[:, :length - done]
            done += chunk

    def generate(self, prime: str = "", length: int = 200, **options) -> list[str]:
        """Whole continuations (without the prime), one string per sample."""
        parts = list(self.stream(prime, length, **options))
        ids = np.concatenate(parts, axis=1) if parts else np.zeros((options.get("num_samples", 1), 0))
        return [self.tokenizer.decode(row) for row in ids]
