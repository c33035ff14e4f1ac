import keras
import numpy as np
import pytest
from keras import layers

from textgen.errors import TextgenWarning
from textgen.model import precision
from textgen.model.network import build_model, output_weights, recurrent_layers
from textgen.model.precision import bf16_speedup, resolve_precision
from textgen.store.config import ModelConfig


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_every_recurrent_layer_meets_the_cudnn_conditions(cell):
    model = build_model(ModelConfig(vocab_size=10, cell=cell, layers=3, units=4, dropout=0.2))
    layers = recurrent_layers(model)
    assert len(layers) == 3
    for layer in layers:
        assert cudnn_problems(layer) == []


def test_cudnn_check_catches_bad_settings():
    assert "recurrent_dropout is not 0" in cudnn_problems(keras.layers.LSTM(4, recurrent_dropout=0.1))
    assert "reset_after is off" in cudnn_problems(keras.layers.GRU(4, reset_after=False))
    assert "activation is not tanh" in cudnn_problems(keras.layers.GRU(4, activation="relu"))


def never_measured() -> float:
    raise AssertionError("the bfloat16 speed-up was measured on a GPU machine")


def test_precision_auto_picks_float16_only_on_tensor_core_gpus():
    assert resolve_precision("auto", [(8, 0)], never_measured) == "mixed_float16"
    assert resolve_precision("auto", [(6, 1)], never_measured) == "float32"
    with pytest.warns(TextgenWarning, match="no GPU was found"):
        assert resolve_precision("mixed_bfloat16", []) == "mixed_bfloat16"


def test_precision_auto_takes_bf16_products_on_cpus_that_multiply_bfloat16_fast():
    assert resolve_precision("auto", [], lambda: 4.3) == "float32_bf16_matmul"  # AMX, measured
    assert resolve_precision("auto", [], lambda: 1.76) == "float32_bf16_matmul"  # Zen 4's slowest
    assert resolve_precision("auto", [], lambda: 1.2) == "float32"
    assert resolve_precision("auto", [], lambda: 0.05) == "float32"  # emulated bfloat16
    assert resolve_precision("float32", [], never_measured) == "float32"


def test_bf16_speedup_is_a_measured_ratio():
    assert 0 < bf16_speedup() < 100


def test_a_onednn_limit_without_bfloat16_means_float32(monkeypatch):
    """Emulating an AVX2 CPU (ONEDNN_MAX_CPU_ISA=AVX2): oneDNN would abort on a bfloat16 matmul."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")
    assert bf16_speedup() == 0.0 and resolve_precision("auto", capabilities=[]) == "float32"


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_logits_and_variables_float32(policy):
    with precision.applied(policy):
        model = build_model(ModelConfig(vocab_size=10, units=8, embedding_dim=4))
        model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x = np.random.default_rng(0).integers(0, 10, (4, 6)).astype("int32")
        assert model(x).dtype == "float32"
        assert model.get_layer("gru_0").compute_dtype == policy.split("_")[1]
        assert all(v.dtype == "float32" for v in model.trainable_variables)
        is_scaled = isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert is_scaled == (policy == "mixed_float16")
        history = model.fit(x, np.roll(x, -1, axis=1), epochs=2, verbose=0)
        assert np.isfinite(history.history["loss"]).all()
    assert keras.mixed_precision.global_policy().name == "float32"  # the policy ends with the block


@pytest.mark.parametrize("tie_weights", [False, True])
def test_output_weights_start_at_the_fan_in_scale_whatever_the_vocabulary(tie_weights):
    """A logit starts with the variance of its `units` inputs, for 100 tokens as for 16,000: at
    Glorot's scale (or Keras' ±0.05 embedding, tied) 16k-word models sat near the unigram loss."""
    limit = np.sqrt(3 / 64)
    for vocab_size in (100, 16_000):
        model = build_model(ModelConfig(vocab_size=vocab_size, units=64, embedding_dim=64, layers=1,
                                        tie_weights=tie_weights))
        kernel = np.asarray(output_weights(model)[0])
        assert kernel.shape == (64, vocab_size)
        assert 0.9 * limit < np.abs(kernel).max() <= limit
        assert np.std(kernel) == pytest.approx(limit / np.sqrt(3), rel=0.05)


def cudnn_problems(layer: keras.layers.Layer) -> list[str]:
    """Why a recurrent layer would miss TensorFlow's cuDNN kernel (empty list: it will use it)."""
    problems = []
    if isinstance(layer, layers.SimpleRNN):
        return problems  # SimpleRNN has no cuDNN kernel in Keras; nothing to keep
    cell = layer.cell
    if cell.activation is not keras.activations.tanh:
        problems.append("activation is not tanh")
    if cell.recurrent_activation is not keras.activations.sigmoid:
        problems.append("recurrent_activation is not sigmoid")
    if cell.recurrent_dropout:
        problems.append("recurrent_dropout is not 0")
    if layer.unroll:
        problems.append("unroll is on")
    if not cell.use_bias:
        problems.append("use_bias is off")
    if getattr(layer, "use_cudnn", "auto") is False:
        problems.append("use_cudnn is False")
    if isinstance(layer, layers.GRU) and not cell.reset_after:
        problems.append("reset_after is off")
    return problems
