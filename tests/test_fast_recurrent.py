"""The CPU training path of textgen's recurrent layers computes the stock Keras layers' function."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.model import fast_recurrent

CELLS = {  # textgen's layer, Keras' layer, number of states
    "lstm": (fast_recurrent.LSTM, keras.layers.LSTM, 2),
    "gru": (fast_recurrent.GRU, keras.layers.GRU, 1),
    "rnn": (fast_recurrent.SimpleRNN, keras.layers.SimpleRNN, 1),
}


def twins(cell, units=6, features=5, scale=0.5, **settings):
    """A textgen layer and a stock Keras layer holding the same (random, non-trivial) weights."""
    fast_class, stock_class, states = CELLS[cell]
    fast, stock = fast_class(units, **settings), stock_class(units, **settings)
    for layer in (fast, stock):
        layer.build((None, None, features))
    rng = np.random.default_rng(3)
    for fast_weight, stock_weight in zip(fast.weights, stock.weights, strict=True):
        value = rng.normal(0, scale, fast_weight.shape).astype("float32")  # biases too, GRU's two rows
        fast_weight.assign(value)
        stock_weight.assign(value)
    return fast, stock, states


def outputs_and_gradients(layer, inputs, initial, training):
    with tf.GradientTape() as tape:
        tape.watch([inputs, *initial])
        result = layer(inputs, initial_state=initial, training=training)
        outputs = result if isinstance(result, tf.Tensor) else result[0]
        # weigh every output and final state differently, so every gradient path counts
        flat = [tf.convert_to_tensor(r) for r in (result if isinstance(result, list | tuple) else [result])]
        loss = sum(tf.reduce_sum(tf.sin(r * (k + 1.3))) for k, r in enumerate(flat))
    gradients = tape.gradient(loss, [inputs, *initial, *layer.trainable_weights])
    return [tf.convert_to_tensor(r).numpy() for r in flat], [g.numpy() for g in gradients], outputs


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize(("return_sequences", "return_state"), [(True, False), (False, True), (True, True)])
def test_same_outputs_and_gradients_as_the_stock_layer(cell, return_sequences, return_state):
    fast, stock, states = twins(cell, return_sequences=return_sequences, return_state=return_state)
    rng = np.random.default_rng(7)
    inputs = tf.constant(rng.normal(0, 1, (4, 9, 5)).astype("float32"))
    initial = [tf.constant(rng.normal(0, 0.5, (4, 6)).astype("float32")) for _ in range(states)]
    assert fast.explicit_bptt_applies(None, True)
    fast_out, fast_grads, _ = outputs_and_gradients(fast, inputs, initial, training=True)
    stock_out, stock_grads, _ = outputs_and_gradients(stock, inputs, initial, training=True)
    for ours, theirs in zip(fast_out + fast_grads, stock_out + stock_grads, strict=True):
        assert ours.shape == theirs.shape
        # float32 sums in another order: equal to 1e-5 of each array's own scale
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max(), np.abs(ours - theirs).max()


@pytest.mark.parametrize(("cell", "units"), [("lstm", 128), ("gru", 171), ("rnn", 512)])
def test_gradients_of_wide_gates_padded_with_zero_columns_match_the_stock_layer(cell, units):
    """From 512 gates the backward loop pads the gates' gradients (fast_recurrent.gradient_padding)."""
    gates = units * {"lstm": 4, "gru": 3, "rnn": 1}[cell]
    assert fast_recurrent.gradient_padding(gates) > 0
    fast, stock, states = twins(cell, units, scale=0.1, return_sequences=True, return_state=True)
    rng = np.random.default_rng(8)
    inputs = tf.constant(rng.normal(0, 1, (4, 9, 5)).astype("float32"))
    initial = [tf.constant(rng.normal(0, 0.5, (4, units)).astype("float32")) for _ in range(states)]
    fast_out, fast_grads, _ = outputs_and_gradients(fast, inputs, initial, training=True)
    stock_out, stock_grads, _ = outputs_and_gradients(stock, inputs, initial, training=True)
    for ours, theirs in zip(fast_out + fast_grads, stock_out + stock_grads, strict=True):
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-5 * np.abs(theirs).max(), np.abs(ours - theirs).max()


def test_narrow_gates_are_not_padded():
    assert fast_recurrent.gradient_padding(256) == 0
    assert fast_recurrent.gradient_padding(None) == 0
    assert fast_recurrent.gradient_padding(1024) == fast_recurrent.GRADIENT_PADDING


@pytest.mark.parametrize("cell", CELLS)
def test_bf16_products_keep_outputs_and_gradients_within_bfloat16_rounding(cell):
    """The products outside the loops round their operands to bfloat16 (8 bits of mantissa): a
    relative error of a few 1e-3, and not none at all, which would mean they stayed float32."""
    fast, _, states = twins(cell, return_sequences=True, return_state=True)
    rng = np.random.default_rng(7)
    inputs = tf.constant(rng.normal(0, 1, (4, 9, 5)).astype("float32"))
    initial = [tf.constant(rng.normal(0, 0.5, (4, 6)).astype("float32")) for _ in range(states)]
    exact_out, exact_grads, _ = outputs_and_gradients(fast, inputs, initial, training=True)
    with fast_recurrent.bf16_products(True):
        bf16_out, bf16_grads, _ = outputs_and_gradients(fast, inputs, initial, training=True)
    errors = [np.abs(ours - exact).max() / np.abs(exact).max()
              for ours, exact in zip(bf16_out + bf16_grads, exact_out + exact_grads, strict=True)]
    assert max(errors) < 3e-2 and min(errors) > 0, errors


@pytest.mark.parametrize("cell", CELLS)
def test_a_training_step_in_a_compiled_model_matches_the_stock_layer(cell):
    """Inside `fit` (a traced train step, default zero states, two layers), losses stay equal."""
    fast_class, stock_class, _ = CELLS[cell]
    losses = []
    for layer_class in (fast_class, stock_class):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([
            keras.Input((None,), dtype="int32"), keras.layers.Embedding(12, 4),
            layer_class(8, return_sequences=True), layer_class(8, return_sequences=True),
            keras.layers.Dense(12)])
        model.compile(optimizer=keras.optimizers.Adam(0.01),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ids = np.random.default_rng(1).integers(0, 12, (16, 11)).astype("int32")
        losses.append(model.fit(ids[:, :-1], ids[:, 1:], batch_size=8, epochs=3, shuffle=False,
                                verbose=0).history["loss"])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)


def test_the_stock_path_is_kept_where_the_explicit_loops_do_not_apply(monkeypatch):
    layer, _, _ = twins("lstm")
    assert layer.explicit_bptt_applies(None, True)
    assert not layer.explicit_bptt_applies(None, False)  # inference: any prompt length, no XLA compiles
    assert not layer.explicit_bptt_applies(tf.ones((4, 9), bool), True)  # masks
    assert not twins("lstm", recurrent_dropout=0.1)[0].explicit_bptt_applies(None, True)
    assert not twins("gru", reset_after=False)[0].explicit_bptt_applies(None, True)
    assert not twins("rnn", activation="relu")[0].explicit_bptt_applies(None, True)
    monkeypatch.setattr(fast_recurrent, "_gpu_visible", lambda: True)
    assert not layer.explicit_bptt_applies(None, True)  # GPUs keep cuDNN's fused kernels


def test_saves_and_loads_as_a_keras_layer(tmp_path):
    layer, _, _ = twins("gru", return_sequences=True)
    model = keras.Sequential([keras.Input((None, 5)), layer])
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert isinstance(loaded.layers[0], fast_recurrent.GRU)
    x = np.random.default_rng(0).normal(size=(2, 3, 5)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("gpu_path", [False, True], ids=["explicit-loops", "keras-path"])
def test_carried_training_batches_continue_the_previous_batch(cell, gpu_path, monkeypatch):
    """Two carried training calls compute what one call over the joined sequence does; inference
    and saved files know nothing of the carried states."""
    monkeypatch.setattr(fast_recurrent, "_gpu_visible", lambda: gpu_path)  # True: the path GPUs take
    fast_class, _, _ = CELLS[cell]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 5)), fast_class(6, return_sequences=True),
                              fast_class(7, return_sequences=True)])
    x = np.random.default_rng(2).normal(0, 1, (3, 8, 5)).astype("float32")
    whole = model(x, training=False).numpy()
    weights_before = len(model.weights)
    fast_recurrent.carry_states(model, batch_size=3)
    assert model.layers[0].explicit_bptt_applies(None, True) is not gpu_path
    first = model(x[:, :5], training=True).numpy()
    second = model(x[:, 5:], training=True).numpy()
    np.testing.assert_allclose(np.concatenate([first, second], 1), whole, atol=1e-5)
    np.testing.assert_allclose(model(x[:, 5:], training=False), model(x[:, 5:], training=False))
    np.testing.assert_allclose(model(x[:, :5], training=False), whole[:, :5], atol=1e-5)  # from zeros
    assert len(model.weights) == weights_before  # carried states are not weights: never saved
    fast_recurrent.carry_states(model, None)
    np.testing.assert_allclose(model(x[:, :5], training=True), whole[:, :5], atol=1e-5)


def test_no_gradient_flows_into_the_batch_before():
    """Truncated BPTT: a carried batch's gradient is the one it has from its carried start state."""
    keras.utils.set_random_seed(0)
    layer = fast_recurrent.LSTM(6, return_sequences=True)
    model = keras.Sequential([keras.Input((None, 5)), layer])
    x = np.random.default_rng(2).normal(0, 1, (3, 8, 5)).astype("float32")
    fast_recurrent.carry_states(model, batch_size=3)
    model(x[:, :5], training=True)
    carried = [tf.identity(v) for v in layer._carried.states]
    with tf.GradientTape() as tape:
        carried_loss = tf.reduce_sum(tf.sin(model(x[:, 5:], training=True)))
    carried_gradients = tape.gradient(carried_loss, model.trainable_weights)
    fast_recurrent.carry_states(model, None)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.sin(layer(x[:, 5:], initial_state=carried, training=True)))
    for ours, expected in zip(carried_gradients, tape.gradient(loss, model.trainable_weights), strict=True):
        np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell", CELLS)
def test_loops_over_parts_of_the_batch_compute_the_same(cell, monkeypatch):
    """The batch cut into parts run side by side (an empty one too: 3 rows in 4 parts) gives the
    outputs and gradients of one loop over the whole batch."""
    rng = np.random.default_rng(5)
    inputs = tf.constant(rng.normal(0, 1, (3, 9, 5)).astype("float32"))
    initial = [tf.constant(rng.normal(0, 0.5, (3, 6)).astype("float32")) for _ in range(CELLS[cell][2])]
    results = []
    for parts in (1, 4):
        monkeypatch.setattr(fast_recurrent, "loop_parts", lambda parts=parts: parts)
        fast, _, _ = twins(cell, return_sequences=True, return_state=True)
        results.append(outputs_and_gradients(fast, inputs, initial, training=True)[:2])
    for ours, theirs in zip(results[1][0] + results[1][1], results[0][0] + results[0][1], strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
