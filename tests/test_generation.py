import keras
import numpy as np
import pytest

from textgen.config import ModelConfig
from textgen.generation import Generator
from textgen.models import build_model
from textgen.tokenizers import CharTokenizer


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


def test_compiled_and_plain_generators_draw_the_same_text():
    """The sampling noise is integer arithmetic, so XLA and plain TensorFlow agree bit for bit
    (TensorFlow's own Philox kernels do not), and exports reproduce seeded text."""
    keras.utils.set_random_seed(1)
    tokenizer = CharTokenizer(list("abcdefghijklmnop"))
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, units=8, embedding_dim=4))
    options = {"num_samples": 4, "temperature": 1.3, "top_p": 0.95, "seed": 11}
    compiled = Generator(model, tokenizer, xla=True).generate("ab", 60, **options)
    assert Generator(model, tokenizer, xla=False).generate("ab", 60, **options) == compiled
