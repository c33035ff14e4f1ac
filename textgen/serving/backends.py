"""What the engine drives for each kind of model: a trained model's compiled generator, or an
export's step model (a `.tflite` file through LiteRT, a SavedModel's `step` signature)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import tensorflow as tf

from textgen.generate.generator import Generator, RowSettings
from textgen.generate.numpy_sampling import NoiseAhead
from textgen.generate.priming import prime_ids
from textgen.generate.step_generator import StepGenerator
from textgen.text.tokenizers import Tokenizer


class Primed(NamedTuple):
    """A prompt's rows after its prime: numpy arrays, one row per choice."""

    logits: np.ndarray  # [n, vocab]
    states: list[np.ndarray]  # each [n, units]
    seen: np.ndarray  # [n, vocab]
    prompt_tokens: int


class _Texts:
    """Decoding shared by both backends."""

    tokenizer: Tokenizer

    @property
    def eos(self) -> int | None:
        specials = self.tokenizer.specials
        return None if specials is None else specials.eos

    def decode(self, ids: np.ndarray) -> str:
        return self.tokenizer.decode(ids)

    def token_lengths(self, ids: np.ndarray) -> np.ndarray:
        return np.fromiter((len(self.tokenizer.token_text(int(i))) for i in ids), np.int64, len(ids))


class GeneratorBackend(_Texts):
    """A trained model: the prompt through the sequence kernels, then `Generator.sample_chunk` —
    the very loop `textgen sample` runs."""

    def __init__(self, generator: Generator):
        self.generator = generator
        self.tokenizer = generator.tokenizer

    def prime(self, prompts: list[tuple[str, int, str | None]]) -> list[Primed]:
        """Every prompt's rows through the sequence kernels in one call (padded on the right and
        masked), at least two rows: see engine.bucket."""
        ids = [prime_ids(self.tokenizer, prompt, label) for prompt, _, label in prompts]
        rows = [row for row, (_, n, _) in zip(ids, prompts, strict=True) for _ in range(n)]
        rows += rows[:1] * max(0, 2 - len(rows))
        width = max(len(row) for row in rows)
        padded = np.zeros((len(rows), width), np.int32)
        mask = np.zeros((len(rows), width), bool)
        for position, row in enumerate(rows):
            padded[position, :len(row)], mask[position, :len(row)] = row, True
        logits, states, seen = self.generator._prime_masked(tf.constant(padded), tf.constant(mask))
        logits, seen, states = logits.numpy(), seen.numpy(), [s.numpy() for s in states]
        primed, start = [], 0
        for row, (_, n, _) in zip(ids, prompts, strict=True):
            part = slice(start, start + n)
            primed.append(Primed(logits[part], [s[part] for s in states], seen[part], len(row)))
            start += n
        return primed

    def sample(self, logits: Any, states: list[Any], seen: Any, steps: int,
               settings: dict[str, np.ndarray]) -> tuple[np.ndarray, Any, list[Any], Any]:
        row_settings = RowSettings(**{name: tf.constant(value) for name, value in settings.items()})
        tensors = [tf.convert_to_tensor(s) for s in states]
        return self.generator.sample_chunk(tf.convert_to_tensor(logits), tensors, tf.convert_to_tensor(seen),
                                           steps, row_settings)

    def warm_up(self, sizes: list[int]) -> None:
        """Compile the loop for every batch size the engine uses, before the first request waits for it."""
        warm_up(self, sizes)


class StepBackend(_Texts):
    """An export: its step model fed token by token for the prompt and for every new token, each
    token chosen by the step generator's per-row sampler (one call per token for the whole batch)."""

    def __init__(self, sampler: StepGenerator):
        self.sampler = sampler
        self.tokenizer = sampler.tokenizer

    def prime(self, prompts: list[tuple[str, int, str | None]]) -> list[Primed]:
        primed = []
        for prompt, n, label in prompts:
            logits, states, seen = self.sampler.prime(prompt, n, label)
            primed.append(Primed(logits, [states[name] for name in self.sampler.state_names], seen,
                                 len(prime_ids(self.tokenizer, prompt, label))))
        return primed

    def sample(self, logits: Any, states: list[Any], seen: Any, steps: int,
               settings: dict[str, np.ndarray]) -> tuple[np.ndarray, Any, list[Any], Any]:
        named = dict(zip(self.sampler.state_names, (np.asarray(s) for s in states), strict=True))
        logits, seen = np.asarray(logits), np.asarray(seen)
        fixed = [settings[name] for name in ("top_k", "top_p", "penalty", "seeds")]
        cycle = settings["temperatures"].shape[1]
        noise = NoiseAhead(self.tokenizer.vocab_size, settings["seeds"], settings["rows"], steps)
        tokens = []
        for i in range(steps):
            step = settings["steps"] + i
            temperature = settings["temperatures"][np.arange(len(step)), step % cycle]
            ids, seen = self.sampler.choose(logits, seen, temperature, *fixed, step, settings["rows"], noise)
            tokens.append(ids)
            logits, named = self.sampler.runner(ids, named)
        return np.stack(tokens, axis=1), logits, list(named.values()), seen

    def warm_up(self, sizes: list[int]) -> None:
        warm_up(self, sizes)


def warm_up(backend: GeneratorBackend | StepBackend, sizes: list[int]) -> None:
    """One token at every batch size the engine uses (and a prime), so that none is first compiled
    while a request waits for it."""
    (primed,) = backend.prime([("", 1, None)])
    for size in sizes:
        states = [np.repeat(s[:1], size, 0) for s in primed.states]
        backend.sample(np.repeat(primed.logits[:1], size, 0), states, np.repeat(primed.seen[:1], size, 0), 1,
                       _neutral_settings(size))


def _neutral_settings(size: int) -> dict[str, np.ndarray]:
    return {"temperatures": np.ones((size, 1), np.float32), "top_k": np.zeros(size, np.int32),
            "top_p": np.ones(size, np.float32), "penalty": np.ones(size, np.float32),
            "seeds": np.zeros(size, np.int32), "steps": np.zeros(size, np.int32),
            "rows": np.arange(size, dtype=np.int32)}
