"""How much of generated text is copied from a corpus: the longest copied run of tokens, and the
share of generated n-grams that appear in the corpus, so that users can tell learning from
memorizing.

Texts are compared as token ids (characters or words). N-grams are hashed with a 64-bit
polynomial hash in numpy (built by doubling, so any n costs a few passes over the array), and
the corpus is read in blocks that overlap by n - 1 tokens, so any corpus size works; corpora
within the cache limit are tokenized once and kept in memory for the several lengths measured.
For a model of records, the question people ask is simpler: how many generated records are,
whole, records of the training set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from textgen.text.corpus import Corpus
from textgen.text.records import RecordCorpus
from textgen.text.tokenizers import Tokenizer
from textgen.text.tokens import CACHE_MAX_TOKENS, token_stream

BLOCK_TOKENS = 1 << 20
NGRAM_SIZES = {"char": (8, 16, 32), "word": (3, 5, 8)}
_BASE = 0x9E3779B97F4A7C15  # odd, with well-mixed bits


def ngram_hashes(ids: np.ndarray, n: int) -> np.ndarray:
    """uint64 hash of every window of `n` ids (`len(ids) - n + 1` of them; none if too short)."""
    count = len(ids) - n + 1
    if count <= 0 or n <= 0:
        return np.zeros(0, np.uint64)
    spans = ids.astype(np.uint64) + np.uint64(1)  # hashes of windows of `span` ids
    span, covered, result = 1, 0, None
    remaining = n
    while True:
        if remaining & 1:  # append the next `span` ids to each window's hash
            piece = spans[covered:covered + count]
            result = piece.copy() if result is None else result * np.uint64(pow(_BASE, span, 1 << 64)) + piece
            covered += span
        remaining >>= 1
        if not remaining:
            return result
        spans = spans[:-span] * np.uint64(pow(_BASE, span, 1 << 64)) + spans[span:]
        span *= 2


def _blocks_with_overlap(blocks: Iterable[np.ndarray], overlap: int) -> Iterator[np.ndarray]:
    """Re-cut a stream of id arrays into blocks of about BLOCK_TOKENS, each starting with the
    last `overlap` ids of the one before, so that every window of overlap + 1 ids is in a block."""
    carry = np.zeros(0, np.int32)
    pending: list[np.ndarray] = []
    size = 0
    for block in blocks:
        pending.append(block)
        size += len(block)
        if size >= BLOCK_TOKENS:
            joined = np.concatenate([carry, *pending])
            yield joined
            carry, pending, size = joined[max(0, len(joined) - overlap):] if overlap else joined[:0], [], 0
    if pending:
        yield np.concatenate([carry, *pending])


def copied_windows(samples: Sequence[np.ndarray], corpus: Callable[[], Iterable[np.ndarray]],
                   n: int) -> list[np.ndarray]:
    """For each sample, a bool per window of `n` ids: does it appear in the corpus?"""
    hashes = [ngram_hashes(sample, n) for sample in samples]
    found = [np.zeros(len(h), bool) for h in hashes]
    if not any(len(h) for h in hashes):
        return found
    wanted = np.unique(np.concatenate(hashes))
    seen = np.zeros(len(wanted), bool)
    for block in _blocks_with_overlap(corpus(), n - 1):
        seen |= np.isin(wanted, ngram_hashes(block, n))
    present = wanted[seen]
    return [np.isin(h, present) for h in hashes]


@dataclass
class CopyReport:
    longest_copy_tokens: int
    longest_copy_sample: int
    longest_copy_start: int
    copied_ngrams: dict[int, float]  # n -> share of generated n-grams found in the corpus


def copy_report(samples: Sequence[np.ndarray], corpus: Callable[[], Iterable[np.ndarray]],
                sizes: Sequence[int]) -> CopyReport:
    """The longest run of ids any sample shares with the corpus (a binary search over its
    length: a copied run of n ids contains copied runs of every shorter length), and the share
    of copied n-grams for each of `sizes`. `corpus()` yields the corpus ids afresh each call."""
    low, high, where = 0, max((len(s) for s in samples), default=0), (0, 0)
    while low < high:  # invariant: some run of `low` ids is copied; none of `high + 1`
        middle = (low + high + 1) // 2
        hits = [(index, np.flatnonzero(mask)) for index, mask in
                enumerate(copied_windows(samples, corpus, middle)) if mask.any()]
        if hits:
            low, where = middle, (hits[0][0], int(hits[0][1][0]))
        else:
            high = middle - 1
    shares = {}
    for n in sizes:
        masks = copied_windows(samples, corpus, n)
        total = sum(len(m) for m in masks)
        shares[n] = float(sum(int(m.sum()) for m in masks) / total) if total else 0.0
    return CopyReport(low, *where, shares)


def measure_novelty(texts: Sequence[str], tokenizer: Tokenizer, corpus: Corpus, sizes: Sequence[int]) -> dict:
    """`copy_report` of generated `texts` against a corpus, with the longest copy as text. The corpus
    is tokenized once and held when it fits in memory (CACHE_MAX_TOKENS), else read once per pass."""
    samples = [tokenizer.encode(text) for text in texts]

    def read() -> Iterator[np.ndarray]:
        return (ids for ids, _ in token_stream(tokenizer, corpus))

    held: list[np.ndarray] | None = []
    corpus_tokens = 0
    for ids in read():  # one pass: the size, and the ids themselves if they fit in memory
        corpus_tokens += len(ids)
        if held is not None:
            held.append(ids)
            if corpus_tokens > CACHE_MAX_TOKENS:
                held = None
    report = copy_report(samples, (lambda: iter(held)) if held is not None else read, sizes)
    copy = samples[report.longest_copy_sample][
        report.longest_copy_start:report.longest_copy_start + report.longest_copy_tokens]
    result = {"corpus_tokens": corpus_tokens, "longest_copy_tokens": report.longest_copy_tokens,
              "longest_copy": tokenizer.decode(copy),
              "copied_ngrams": {str(n): share for n, share in report.copied_ngrams.items()}}
    if isinstance(corpus, RecordCorpus):
        copies = verbatim_records(texts, corpus.chunks())
        result.update(verbatim_records=copies, verbatim_share=copies / len(texts) if texts else 0.0)
    return result


def verbatim_records(texts: Sequence[str], records: Iterable[str]) -> int:
    """How many of the generated `texts` are, whole, one of the `records` (compared by a 64-bit
    digest, so that any number of records fits in memory)."""
    def digest(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()

    wanted = {digest(text) for text in texts}
    found = {key for key in map(digest, records) if key in wanted}
    return sum(digest(text) in found for text in texts)
