"""Generation one token per call of a step runner: a model file's network in numpy
(textgen.generate.numpy_network), or an export's `step` signature through LiteRT or TensorFlow.

The prime is fed token by token (a step runner has no sequence kernel), then each new token costs
one call of the runner and one of the numpy sampler, whose draws are the compiled generator's for
the same seed. No TensorFlow here: `textgen sample` starts in a fraction of a second this way.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np

from textgen.generate.numpy_sampling import (
    NoiseAhead,
    apply_repetition_penalty,
    sample_plain,
    sample_rows,
    temperature_list,
)
from textgen.generate.priming import prime_ids
from textgen.text.tokenizers import UNK_ID, Tokenizer

States = dict[str, np.ndarray]
FIRST_CHUNK_TOKENS = 16  # the first block is short so that text reaches the screen at once
CHUNK_TOKENS = 64


def zero_states(state_sizes: dict[str, int], batch: int) -> States:
    """Every named state, zero, for `batch` rows."""
    return {name: np.zeros((batch, size), np.float32) for name, size in state_sizes.items()}


class StepRunner(Protocol):
    """One token per row: ids [batch] and states -> logits [batch, vocab] and new states."""

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]: ...


def logits_after_each(runner: StepRunner, state_sizes: dict[str, int],
                      ids: np.ndarray) -> Iterator[np.ndarray]:
    """The logits [batch, vocab] after each token of `ids` [batch, time], fed one step at a time
    from zero states."""
    states = zero_states(state_sizes, ids.shape[0])
    for t in range(ids.shape[1]):
        logits, states = runner(ids[:, t], states)
        yield logits


class StepGenerator:
    """Prime and sample over a step runner whose states are named `state_sizes`' keys."""

    def __init__(self, runner: StepRunner, tokenizer: Tokenizer, state_sizes: dict[str, int]):
        self.runner = runner
        self.tokenizer = tokenizer
        self.state_sizes = dict(state_sizes)
        self.banned = np.zeros(tokenizer.vocab_size, bool)
        self.banned[UNK_ID] = True

    @property
    def state_names(self) -> list[str]:
        return list(self.state_sizes)

    def choose(self, logits: np.ndarray, seen: np.ndarray, temperature: np.ndarray, top_k: np.ndarray,
               top_p: np.ndarray, penalty: np.ndarray, seeds: np.ndarray, steps: np.ndarray,
               rows: np.ndarray, noise: NoiseAhead | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One token per row, each with its own settings and noise (`noise`'s, if given, for these
        seeds and rows); and the seen mask, kept only while a row has a penalty (as the compiled
        loop keeps it)."""
        penalised = (penalty != 1).any()
        if penalised:
            logits = apply_repetition_penalty(logits, seen, penalty)
        ids = sample_rows(logits, temperature, top_k, top_p, seeds, steps, rows, self.banned,
                          None if noise is None else noise.at(steps))
        if penalised:
            seen = seen.copy()
            seen[np.arange(len(ids)), ids] = True
        return ids, seen

    def choose_plain(self, logits: np.ndarray, temperature: np.float32, noise: np.ndarray) -> np.ndarray:
        """`choose` for rows without top-k, top-p or penalty that share one temperature, given their
        noise (`sample_plain`)."""
        return sample_plain(logits, temperature, noise, self.banned)

    def prime(self, prime: str, num_samples: int,
              label: str | None = None) -> tuple[np.ndarray, States, np.ndarray]:
        """Feed the prime token by token: logits after its last token, states, and seen mask."""
        ids = prime_ids(self.tokenizer, prime, label)
        states = zero_states(self.state_sizes, num_samples)
        seen = np.zeros((num_samples, self.tokenizer.vocab_size), bool)
        seen[:, ids] = True
        for token in ids:
            logits, states = self.runner(np.full(num_samples, token, np.int32), states)
        return logits, states, seen

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0,
               label: str | None = None) -> Iterator[np.ndarray]:
        """Blocks of new ids [num_samples, tokens], the first short, until `length` tokens."""
        temperatures = temperature_list(temperature)
        logits, states, seen = self.prime(prime, num_samples, label)
        full = lambda value, dtype: np.full(num_samples, value, dtype)  # noqa: E731
        fixed = (full(top_k, np.int32), full(top_p, np.float32), full(repetition_penalty, np.float32),
                 full(seed, np.int32))
        rows = np.arange(num_samples, dtype=np.int32)
        noise = NoiseAhead(self.tokenizer.vocab_size, fixed[3], rows, length)
        block: list[np.ndarray] = []
        size = FIRST_CHUNK_TOKENS
        cycle = [full(t, np.float32) for t in temperatures]
        plain = top_k == 0 and top_p >= 1 and repetition_penalty == 1
        for step in range(length):
            temperature_now = cycle[step % len(cycle)]
            if plain:
                new = self.choose_plain(logits, temperature_now[0], noise.at(full(step, np.int32)))
            else:
                new, seen = self.choose(logits, seen, temperature_now, *fixed, full(step, np.int32), rows,
                                        noise)
            block.append(new)
            if len(block) == size or step == length - 1:
                yield np.stack(block, axis=1)
                block, size = [], CHUNK_TOKENS
            if step < length - 1:
                logits, states = self.runner(new, states)
