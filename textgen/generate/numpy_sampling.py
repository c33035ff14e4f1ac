"""textgen.generate.sampling in numpy, for generation that runs without TensorFlow (a model file's
network in numpy, a `.tflite` file through LiteRT): the same filters, the same hashed noise, in
float32, so that the same seed draws the same tokens (tests hold the two against each other).
Importing TensorFlow takes seconds; this module imports numpy only.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

NEG_INF = np.float32(-1e9)
BELOW_ONE = np.float32(1.0 - 2.0**-24)


def temperature_list(temperature: float | Sequence[float]) -> list[float]:
    """One temperature or several (cycled token by token), as a list."""
    return [temperature] if isinstance(temperature, (int, float)) else list(temperature)


def _mix32(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint32(16))) * np.uint32(0x85EBCA6B)
    x = (x ^ (x >> np.uint32(13))) * np.uint32(0xC2B2AE35)
    return x ^ (x >> np.uint32(16))


@functools.lru_cache(maxsize=4)  # a few MB at most: 64 rows of a 20,000-word vocabulary are 5 MB
def _mixed_counters(vocab: int, rows: bytes) -> np.ndarray:
    """The hashed counters (row * vocab + column) of `rows` (int32 bytes): the same at every step
    of a stream, so hashed once, not once per token."""
    counter = np.frombuffer(rows, np.int32).astype(np.int64)[:, None] * vocab + np.arange(vocab)[None, :]
    mixed = _mix32(counter.astype(np.uint32))
    mixed.flags.writeable = False
    return mixed


def row_noise(vocab: int, seeds: np.ndarray, steps: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Uniform numbers in (0, 1), [batch, vocab]: sampling.row_noise's hash of (seed, step, row).
    `seeds` and `steps` may be [steps, batch] as well: then [steps, batch, vocab], several
    tokens' noise in one pass."""
    mixed_seeds = _mix32(seeds.astype(np.uint32) + np.uint32(0x9E3779B9))
    key = _mix32(mixed_seeds ^ steps.astype(np.uint32))
    bits = _mix32(_mixed_counters(vocab, rows.astype(np.int32).tobytes()) ^ key[..., None])
    uniform = (bits >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24) + np.float32(2.0**-25)
    return np.minimum(uniform, BELOW_ONE)  # 1 - 2**-25 rounds to 1: see sampling.row_noise


def gumbel_noise(vocab: int, seeds: np.ndarray, steps: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Gumbel noise of each row's (seed, step, row): -log(-log(`row_noise`)), of its shape."""
    noise = row_noise(vocab, seeds, steps, rows)
    np.log(noise, out=noise)
    np.negative(noise, out=noise)
    np.log(noise, out=noise)
    np.negative(noise, out=noise)
    return noise


class NoiseAhead:
    """The Gumbel noise of a run of rows, computed for several tokens at once: on one row, numpy's
    calls cost more than their arithmetic, so a token's noise alone took a third of its sampling.
    Each call of `at` must be for the next step of every row (`steps` one more than before);
    otherwise the block starts again from there. `horizon`: the tokens still to come, if fewer."""

    BLOCK_FLOATS = 1 << 18  # 1 MB of noise at most: a block fits in cache

    def __init__(self, vocab: int, seeds: np.ndarray, rows: np.ndarray, horizon: int = 64):
        self.vocab, self.seeds, self.rows = vocab, seeds, rows
        self.tokens = max(1, min(64, horizon, self.BLOCK_FLOATS // (vocab * len(rows))))
        self.block = np.empty((0, len(rows), vocab), np.float32)
        self.first = np.zeros(len(rows), np.int64)

    def at(self, steps: np.ndarray) -> np.ndarray:
        """Noise [batch, vocab] for `steps` [batch]."""
        offset = steps - self.first
        index = int(offset[0]) if len(offset) else 0
        if not 0 <= index < len(self.block) or (offset != index).any():
            ahead = steps[None, :] + np.arange(self.tokens, dtype=steps.dtype)[:, None]
            self.block = gumbel_noise(self.vocab, np.broadcast_to(self.seeds, ahead.shape), ahead, self.rows)
            self.first, index = steps.astype(np.int64), 0
        return self.block[index]


def _filter_top_k(logits: np.ndarray, top_k: np.ndarray) -> np.ndarray:
    vocab = logits.shape[-1]
    k = np.where(top_k > 0, np.minimum(top_k, vocab), vocab)
    ordered = -np.sort(-logits, axis=-1)
    kth = np.take_along_axis(ordered, (k - 1)[:, None], axis=-1)
    return np.where(logits < kth, NEG_INF, logits)


def _filter_top_p(logits: np.ndarray, top_p: np.ndarray) -> np.ndarray:
    p = top_p[:, None]
    sorted_logits = -np.sort(-logits, axis=-1)
    exp = np.exp(sorted_logits - sorted_logits[:, :1])
    probs = exp / exp.sum(axis=-1, keepdims=True, dtype=np.float32)
    before = np.zeros_like(probs)  # the mass before each token (an exclusive sum)
    np.cumsum(probs[:, :-1], axis=-1, dtype=np.float32, out=before[:, 1:])
    keep = (before < p) | (np.arange(logits.shape[-1]) == 0)[None, :]
    kept = np.where(keep, sorted_logits, sorted_logits.max(axis=-1, keepdims=True))
    cutoff = kept.min(axis=-1, keepdims=True)
    filtered = np.where(logits < cutoff, NEG_INF, logits)
    return np.where(p < 1, filtered, logits)


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Tokens already in the text (`seen`, [batch, vocab] bool) less likely; `penalty` per row."""
    penalty = penalty.astype(np.float32)[:, None]
    return np.where(seen, np.where(logits > 0, logits / penalty, logits * penalty), logits)


def sample_rows(logits: np.ndarray, temperature: np.ndarray, top_k: np.ndarray, top_p: np.ndarray,
                seeds: np.ndarray, steps: np.ndarray, rows: np.ndarray,
                banned: np.ndarray | None = None, noise: np.ndarray | None = None) -> np.ndarray:
    """logits [batch, vocab] -> ids [batch], every setting one per row: sampling.sample_rows.
    `noise`, if given, is the rows' `gumbel_noise` (a `NoiseAhead` block's)."""
    logits = logits.astype(np.float32, copy=False)
    if banned is not None:
        logits = np.where(banned[None, :], NEG_INF, logits)
    temperature = temperature.astype(np.float32)
    greedy = logits.argmax(axis=-1)
    if not (temperature > 0).any():
        return greedy.astype(np.int32)
    scaled = logits / np.maximum(temperature, np.float32(1e-6))[:, None]
    if (top_k > 0).any():
        scaled = _filter_top_k(scaled, top_k)
    if (top_p < 1).any():
        scaled = _filter_top_p(scaled, top_p.astype(np.float32))
    if noise is None:
        noise = gumbel_noise(logits.shape[-1], seeds, steps, rows)
    scaled += noise
    sampled = scaled.argmax(axis=-1)
    return np.where(temperature > 0, sampled, greedy).astype(np.int32)


def sample_plain(logits: np.ndarray, temperature: np.float32, noise: np.ndarray,
                 banned: np.ndarray) -> np.ndarray:
    """`sample_rows` for rows without top-k or top-p that share one temperature, given their noise:
    the same arithmetic in a third of the numpy calls, each of which costs about a microsecond on
    one row, more than a char model's arithmetic."""
    logits = np.where(banned[None, :], NEG_INF, logits.astype(np.float32, copy=False))
    if not temperature > 0:
        return logits.argmax(axis=-1).astype(np.int32)
    scaled = logits / np.maximum(temperature, np.float32(1e-6))
    scaled += noise
    return scaled.argmax(axis=-1).astype(np.int32)
