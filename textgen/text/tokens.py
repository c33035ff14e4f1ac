"""Corpus + tokenizer -> token streams and windows, in numpy: what training, evaluation and
novelty read, and what textgen.text.pipeline turns into tf.data datasets.

Tokens are streamed chunk by chunk from the corpus and cut into windows of `seq_len + 1` ids
(inputs are the first `seq_len`, targets the same window shifted by one). No TensorFlow here, so
that evaluating a model in numpy does not import it.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from textgen.errors import TextgenError
from textgen.text.corpus import Corpus
from textgen.text.records import RecordCorpus
from textgen.text.tokenizers import Tokenizer

Stream = Iterator[tuple[np.ndarray, np.ndarray]]  # (ids, character length of each token)
Streams = Callable[[int, int | None], Stream]  # token positions [start, stop) -> their stream
CACHE_MAX_TOKENS = 50_000_000  # corpora up to this size keep their windows in memory


def token_stream(tokenizer: Tokenizer, corpus: Corpus, start: int = 0, stop: int | None = None) -> Stream:
    """The corpus as (ids, lengths) chunks, restricted to token positions [start, stop); a corpus of
    records as <bos> [<label>] text <eos> per record."""
    position = 0
    if isinstance(corpus, RecordCorpus):
        blocks = corpus.token_blocks(tokenizer)
    else:
        chunks: Iterator[str] = corpus.chunks()
        if tokenizer.level == "char":  # a token per character: whole chunks before `start` need no encoding
            for chunk in chunks:
                if position + len(chunk) > start:
                    chunks = itertools.chain([chunk], chunks)
                    break
                position += len(chunk)
        blocks = tokenizer.encode_stream(chunks)
    for ids, lengths in blocks:
        end = position + len(ids)
        lo, hi = max(start - position, 0), len(ids) if stop is None else min(stop - position, len(ids))
        if lo < hi:
            yield ids[lo:hi], lengths[lo:hi]
        position = end
        if stop is not None and position >= stop:
            return


def count_tokens(stream: Stream) -> tuple[int, int]:
    """Tokens and characters in a stream."""
    tokens = chars = 0
    for ids, lengths in stream:
        tokens += len(ids)
        chars += int(lengths.sum())
    return tokens, chars


def window_blocks(stream: Stream, width: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Cut a stream into consecutive, non-overlapping windows of `width` tokens."""
    carry_ids = np.zeros(0, np.int32)
    carry_lengths = np.zeros(0, np.int32)
    for ids, lengths in stream:
        ids = np.concatenate([carry_ids, ids])
        lengths = np.concatenate([carry_lengths, lengths])
        count = len(ids) // width
        if count:
            yield (ids[: count * width].reshape(count, width),
                   lengths[: count * width].reshape(count, width))
        carry_ids, carry_lengths = ids[count * width:], lengths[count * width:]


@dataclass(frozen=True)
class TokenSource:
    """A re-readable token range: a function making the stream, and its size."""

    make_stream: Callable[[], Stream]
    tokens: int
    chars: int | None  # None where nobody needed it counted
    description: str

    def windows(self, seq_len: int) -> int:
        return self.tokens // (seq_len + 1)

    def batches(self, seq_len: int, batch_size: int) -> int:
        """Batches in one pass over the text (the last one may be short)."""
        return -(-self.windows(seq_len) // batch_size)


def corpus_streams(tokenizer: Tokenizer, corpus: Corpus) -> Streams:
    """Token ranges of a corpus, tokenized as they are read."""
    return lambda start, stop: token_stream(tokenizer, corpus, start, stop)


def measured_source(tokenizer: Tokenizer, corpus: Corpus, description: str) -> TokenSource:
    """A whole corpus as a token source; one pass to count its tokens and characters."""
    tokens, chars = count_tokens(token_stream(tokenizer, corpus))
    return TokenSource(lambda: token_stream(tokenizer, corpus), tokens, chars, description)


def split_tail(streams: Streams, level: str, total_tokens: int, val_fraction: float, max_val_tokens: int,
               record_starts: np.ndarray | None = None) -> tuple[TokenSource, TokenSource]:
    """Hold out a contiguous tail of the corpus for validation (capped for huge corpora): for records,
    the last `val_fraction` of the records, whole (at least one)."""
    if record_starts is None:
        val_tokens = min(int(total_tokens * val_fraction), max_val_tokens)
    else:
        records = len(record_starts) - 1
        first = records - max(1, int(records * val_fraction))
        within_cap = int(np.searchsorted(record_starts, total_tokens - max_val_tokens))
        val_tokens = int(total_tokens - record_starts[min(max(first, within_cap), records - 1)])
    cut = total_tokens - val_tokens
    train = TokenSource(lambda: streams(0, cut), cut, None, f"first {cut:,} tokens")
    # a character is a token, except in records, whose control tokens stand for none
    plain_chars = level == "char" and record_starts is None
    val_chars = val_tokens if plain_chars else count_tokens(streams(cut, None))[1]
    val = TokenSource(lambda: streams(cut, None), val_tokens, val_chars, f"last {val_tokens:,} tokens")
    return train, val


def require_windows(source: TokenSource, seq_len: int, what: str) -> None:
    if source.windows(seq_len) < 1:
        raise TextgenError(
            f"{what} has {source.tokens:,} tokens, fewer than one window of seq-len + 1 = "
            f"{seq_len + 1}; use more text or a smaller --seq-len")


def window_batches(source: TokenSource, seq_len: int, batch_size: int) -> Stream:
    """The windows of `source` (ids and character lengths, [batch, seq_len + 1] each) in corpus
    order, `batch_size` at a time; the last batch may be short."""
    width = seq_len + 1
    carry_ids = carry_lengths = np.zeros((0, width), np.int32)
    for ids, lengths in window_blocks(source.make_stream(), width):
        ids, lengths = np.concatenate([carry_ids, ids]), np.concatenate([carry_lengths, lengths])
        whole = len(ids) // batch_size * batch_size
        for start in range(0, whole, batch_size):
            yield ids[start:start + batch_size], lengths[start:start + batch_size]
        carry_ids, carry_lengths = ids[whole:], lengths[whole:]
    if len(carry_ids):
        yield carry_ids, carry_lengths
