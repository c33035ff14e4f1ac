"""The network: token ids -> embedding -> recurrent layers -> logits, built from a ModelConfig, and
read back from a `.keras` file in safe mode."""

from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops

from textgen.errors import TextgenError
from textgen.model import fast_recurrent
from textgen.store.config import ModelConfig

# Keras' layers, with a faster CPU training path (fast_recurrent); cuDNN on GPUs is untouched
RECURRENT_LAYERS: dict[str, type[keras.layers.Layer]] = {
    "lstm": fast_recurrent.LSTM,
    "gru": fast_recurrent.GRU,
    "rnn": fast_recurrent.SimpleRNN,
}


def recurrent_layer(config: ModelConfig, index: int) -> keras.layers.Layer:
    """One recurrent layer with the settings cuDNN needs (tanh/sigmoid, no recurrent dropout,
    reset_after for GRU), so the same model runs the fused kernel on a GPU."""
    kwargs = {"units": config.units, "return_sequences": True, "name": f"{config.cell}_{index}"}
    if config.cell == "gru":
        kwargs["reset_after"] = True
    return RECURRENT_LAYERS[config.cell](**kwargs)


@keras.saving.register_keras_serializable(package="textgen")
class TiedEmbedding(layers.Layer):
    """Token embeddings that also score the next token: logits = h @ E^T + b (Press & Wolf, 2017).

    One matrix instead of two: for word models, whose vocabularies make the embedding and the
    output layer most of the parameters, that halves the model and regularizes it. Called on ids
    it embeds them; called with `logits=True` on hidden states it gives float32 logits.
    """

    def __init__(self, vocab_size: int, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.vocab_size = vocab_size
        self.dim = dim

    def build(self, input_shape=None):
        # The scale the untied output layer has (LeCun's, over the `dim` inputs of a logit):
        # Keras' default ±0.05 left word models stuck near the unigram loss (see build_model)
        scale = keras.initializers.VarianceScaling(1.0, mode="fan_out", distribution="uniform")
        self.embeddings = self.add_weight(shape=(self.vocab_size, self.dim), name="embeddings",
                                          initializer=scale)
        self.bias = self.add_weight(shape=(self.vocab_size,), name="bias", initializer="zeros")

    def call(self, inputs, logits: bool = False):
        if not logits:
            return ops.cast(ops.take(self.embeddings, ops.cast(inputs, "int32"), axis=0), self.compute_dtype)
        return ops.matmul(ops.cast(inputs, "float32"), ops.transpose(ops.cast(self.embeddings, "float32"))) \
            + ops.cast(self.bias, "float32")

    def compute_output_spec(self, inputs, logits: bool = False):
        if logits:
            return keras.KerasTensor((*inputs.shape[:-1], self.vocab_size), dtype="float32")
        return keras.KerasTensor((*inputs.shape, self.dim), dtype=self.compute_dtype)

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size, "dim": self.dim}


def build_model(config: ModelConfig) -> keras.Model:
    """token ids [batch, time] -> logits [batch, time, vocab]; logits are float32 under any policy."""
    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    if config.tie_weights:
        embedding = TiedEmbedding(config.vocab_size, config.embedding_dim, name="embedding")
    else:
        embedding = layers.Embedding(config.vocab_size, config.embedding_dim, name="embedding")
    x = embedding(token_ids)
    if config.embedding_dropout:  # as PyTorch's word_language_model does: word models overfit without it
        x = layers.Dropout(config.embedding_dropout, name="dropout_embedding")(x)
    for index in range(config.layers):
        x = recurrent_layer(config, index)(x)
        if config.dropout:
            x = layers.Dropout(config.dropout, name=f"dropout_{index}")(x)
    if config.tie_weights:
        logits = embedding(x, logits=True)
    else:  # fan-in scale: Glorot's shrinks with the vocabulary (±0.019 for 16k words), and word
        # models that start with such small logits stay near the unigram loss for hundreds of steps
        logits = layers.Dense(config.vocab_size, dtype="float32", name="logits",
                              kernel_initializer="lecun_uniform")(x)
    return keras.Model(token_ids, logits, name="textgen")


def output_weights(model: keras.Model) -> tuple[keras.Variable | keras.KerasTensor, keras.Variable]:
    """(kernel [units, vocab], bias [vocab]) of the layer scoring the next token, tied or not."""
    embedding = model.get_layer("embedding")
    if isinstance(embedding, TiedEmbedding):
        return ops.transpose(embedding.embeddings), embedding.bias
    output = model.get_layer("logits")
    return output.kernel, output.bias


def recurrent_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The model's recurrent layers (Keras' own classes too: models saved before fast_recurrent)."""
    return [layer for layer in model.layers if isinstance(layer, layers.LSTM | layers.GRU | layers.SimpleRNN)]


def load_network(path: Path) -> keras.Model:
    """A saved network, in safe mode (a model file can never run code). textgen's own layer classes
    are registered with Keras by this module's imports, so any `.keras` file textgen wrote loads."""
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:  # Keras raises many types for broken archives
        raise TextgenError(f"{path}: cannot be loaded, the file is corrupt or not a textgen "
                           f"model ({exc.__class__.__name__})") from None
