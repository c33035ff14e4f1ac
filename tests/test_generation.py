import keras
import numpy as np
import pytest
import tensorflow as tf

from textgen.generate import generator as generation
from textgen.generate.generator import MAX_CHUNK_TOKENS, Generator, chunk_sizes
from textgen.model.network import build_model, recurrent_layers
from textgen.store.config import ModelConfig
from textgen.text.tokenizers import CharTokenizer


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_carried_state_matches_rerunning_the_whole_sequence(cell):
    """Greedy generation with carried state equals re-running the full model on the text so far."""
    keras.utils.set_random_seed(3)
    tokenizer = CharTokenizer(list("abcdefghijk"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, units=8,
                                    embedding_dim=4))
    generator = Generator(model, tokenizer)
    generated = np.concatenate(list(generator.stream("abc", 12, temperature=0.0, chunk=5)), axis=1)[0]

    sequence = list(tokenizer.encode("abc"))
    for _ in range(12):
        logits = model.predict(np.array([sequence]), verbose=0)[0, -1]
        logits[0] = -np.inf  # the unknown token is never emitted
        sequence.append(int(np.argmax(logits)))
    assert generated.tolist() == sequence[3:]


def test_same_seed_same_text_whatever_the_chunk_size():
    keras.utils.set_random_seed(0)
    tokenizer = CharTokenizer(list("abcdefgh"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, units=8, embedding_dim=4))
    generator = Generator(model, tokenizer)
    whole = generator.generate("ab", 40, seed=5, num_samples=3, chunk=64)
    pieces = generator.generate("ab", 40, seed=5, num_samples=3, chunk=7)
    assert whole == pieces
    assert len(set(whole)) > 1  # streams in a batch differ
    assert generator.generate("ab", 40, seed=6, num_samples=3) != whole
    assert all("\ufffd" not in text for text in whole)


@pytest.mark.parametrize("parts", [2, 3])
def test_streams_sampled_in_parts_of_the_batch_are_the_text_of_one_loop(parts, monkeypatch):
    """Many streams run as parts of the batch side by side; each row keeps its own noise, so the
    text is the one a single loop over the whole batch draws (and exports draw)."""
    keras.utils.set_random_seed(2)
    tokenizer = CharTokenizer(list("abcdefghijklmnop"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, cell="lstm", units=8, embedding_dim=4))
    options = {"num_samples": generation.PART_MIN_STREAMS * parts + 1, "temperature": 1.2,
               "repetition_penalty": 1.3, "seed": 4, "chunk": 9}
    one_loop = Generator(model, tokenizer, parts=1).generate("ab", 30, **options)
    generator = Generator(model, tokenizer, parts=parts)
    calls = []
    for columns in (False, True):
        monkeypatch.setitem(generator._sample_in_parts, columns, lambda *args, columns=columns:
                            calls.append(1) or generator._sample_parts(*args, columns=columns))
    assert generator.generate("ab", 30, **options) == one_loop and calls
    assert len(set(one_loop)) > 10


def test_compiled_and_plain_generators_draw_the_same_text():
    """The sampling noise is integer arithmetic, so XLA and plain TensorFlow agree bit for bit
    (TensorFlow's own Philox kernels do not), and exports reproduce seeded text."""
    keras.utils.set_random_seed(1)
    tokenizer = CharTokenizer(list("abcdefghijklmnop"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, units=8, embedding_dim=4))
    options = {"num_samples": 4, "temperature": 1.3, "top_p": 0.95, "seed": 11}
    compiled = Generator(model, tokenizer, xla=True).generate("ab", 60, **options)
    assert Generator(model, tokenizer, xla=False).generate("ab", 60, **options) == compiled


def test_chunks_start_small_and_grow_to_a_cap_that_shrinks_with_more_samples():
    assert list(chunk_sizes(100, 1)) == [16, 32, 52]
    one = list(chunk_sizes(20_000, 1))
    assert sum(one) == 20_000 and max(one) == MAX_CHUNK_TOKENS
    many = list(chunk_sizes(2_000, 64))
    assert sum(many) == 2_000 and max(many) == 128  # about the same work per call
    assert list(chunk_sizes(0, 1)) == []


@pytest.mark.parametrize(("cell", "tied"), [("lstm", False), ("gru", False), ("rnn", False), ("lstm", True)])
def test_derived_weights_give_the_text_of_the_plain_step(cell, tied):
    """The sampling loop looks the first layer's input projection up in a table, later layers of
    additive cells multiply by stacked kernels, and a tied model scores by the embedding kept
    transposed; a generator without them (as exports build it) writes the same text, and they
    follow the weights after these change."""
    keras.utils.set_random_seed(4)
    tokenizer = CharTokenizer(list("abcdefghijklmnop"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, units=8,
                                    embedding_dim=8 if tied else 4, tie_weights=tied))
    output = model.get_layer("embedding" if tied else "logits")
    output.set_weights([w * 30 for w in output.get_weights()])  # text that depends on the states
    with_table = Generator(model, tokenizer)
    assert with_table.input_table is not None
    assert (with_table.stacked_kernels[1] is not None) == (cell != "gru")
    assert (with_table.output_kernel is not None) == tied
    options = {"num_samples": 3, "temperature": 1.0, "seed": 2}
    before = with_table.generate("ab", 80, **options)
    assert Generator(model, tokenizer, derived_weights=False).generate("ab", 80, **options) == before
    embedding = model.get_layer("embedding")
    embedding.set_weights([w * 10 for w in embedding.get_weights()])
    second = model.get_layer(f"{cell}_1")
    second.set_weights([w * 3 for w in second.get_weights()])
    with_table.sync_weights()
    after = with_table.generate("ab", 80, **options)
    assert after != before
    assert Generator(model, tokenizer, derived_weights=False).generate("ab", 80, **options) == after


@pytest.mark.parametrize(("cell", "tied", "table"), [("lstm", False, True), ("gru", False, True),
                                                     ("rnn", False, True), ("lstm", True, True),
                                                     ("lstm", False, False), ("gru", False, False)])
def test_loops_of_many_rows_run_in_columns_and_draw_the_text_of_rows(cell, tied, table, monkeypatch):
    """From COLUMNS_MIN_ROWS rows per loop, the sampling loop keeps its states as columns and
    multiplies by transposed copies of the kernels (a faster dot for XLA); it writes the text of
    the row layout, whatever the cell and whichever derived weights it uses."""
    keras.utils.set_random_seed(5)
    if not table:
        monkeypatch.setattr(generation, "TABLE_MAX_FLOATS", 0)
    tokenizer = CharTokenizer(list("abcdefghijklmnop"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, units=8,
                                    embedding_dim=8 if tied else 4, tie_weights=tied))
    output = model.get_layer("embedding" if tied else "logits")
    output.set_weights([w * 30 for w in output.get_weights()])  # text that depends on the states
    for layer in recurrent_layers(model):  # and on the recurrent products
        layer.set_weights([w * 4 for w in layer.get_weights()])
    generator = Generator(model, tokenizer, parts=1)
    assert (generator.input_table is not None) == table
    options = {"num_samples": generation.COLUMNS_MIN_ROWS, "temperature": 1.0, "top_k": 6,
               "repetition_penalty": 1.2, "seed": 3}
    in_columns = generator.generate("ab", 80, **options)
    traced = {columns: function.experimental_get_tracing_count()
              for columns, function in generator._sample.items()}
    assert traced == {False: 0, True: 1}
    monkeypatch.setattr(generation, "COLUMNS_MIN_ROWS", options["num_samples"] + 1)
    assert generator.generate("ab", 80, **options) == in_columns
    assert generator._sample[False].experimental_get_tracing_count() == 1
    assert len(set(in_columns)) > 1


def test_the_grus_first_columns_are_the_table_rows_transposed_exactly():
    """In the column layout the GRU's first layer transposes its table rows by a product with the
    identity (generator._columns_of); compiled by XLA, as in the loop, the numbers stay the rows'."""
    rows = np.random.default_rng(0).normal(0, 10, (32, 96)).astype("float32")
    columns = tf.function(generation._columns_of, jit_compile=True)(tf.constant(rows))
    np.testing.assert_array_equal(columns.numpy(), rows.T)


def test_a_fixed_chunk_longer_than_the_buffer_is_split():
    keras.utils.set_random_seed(0)
    tokenizer = CharTokenizer(list("abcdefgh"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, units=8, embedding_dim=4))
    generator = Generator(model, tokenizer)
    pieces = list(generator.stream("ab", MAX_CHUNK_TOKENS + 10, seed=1, chunk=MAX_CHUNK_TOKENS + 10))
    assert [p.shape[1] for p in pieces] == [MAX_CHUNK_TOKENS, 10]
    assert np.concatenate(pieces, 1).tolist() == [list(generator.tokenizer.encode(
        generator.generate("ab", MAX_CHUNK_TOKENS + 10, seed=1)[0]))]
