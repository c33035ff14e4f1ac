"""Sources -> a fitted tokenizer and the training and validation token ranges, read before anything
is written, so that a bad input ends the run with nothing on disk."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from textgen.errors import TextgenError
from textgen.store.config import TrainConfig
from textgen.store.ids_cache import IdCache
from textgen.text.corpus import Corpus, FileCorpus, TfdsCorpus, open_corpus
from textgen.text.records import RecordCorpus
from textgen.text.tokenizers import Tokenizer, tokenizer_for
from textgen.text.tokens import (
    Streams,
    TokenSource,
    corpus_streams,
    count_tokens,
    measured_source,
    require_windows,
    split_tail,
    token_stream,
)
from textgen.training.options import DataOptions, Log


@dataclass(frozen=True)
class PreparedData:
    tokenizer: Tokenizer
    train: TokenSource
    val: TokenSource
    description: dict[str, Any]  # config.json's "corpus"


def default_name(sources: Sequence[str], level: str) -> str:
    first = sources[0]
    stem = first.split(":", 1)[1] if first.startswith("tfds:") else Path(first.rstrip("/")).stem
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in stem) or "model"
    return f"{stem}-{level}"


def model_name(name: str) -> str:
    """A model folder's name, checked: a name inside the output folder, never a path."""
    if not name or "/" in name or name.startswith("."):
        raise TextgenError(f"invalid model name {name!r}")
    return name


def open_sources(options: DataOptions, progress: bool = True) -> Corpus:
    return open_corpus(options.sources, encoding=options.encoding, tfds_data_dir=options.tfds_data_dir,
                       tfds_manual_dir=options.tfds_manual_dir, progress=progress, records=options.records)


def prepare_data(options: DataOptions, train_config: TrainConfig, tokenizer: Tokenizer | None,
                 log: Log, progress: bool = True) -> PreparedData:
    """Fit (or reuse) the tokenizer, then describe the train and validation token ranges."""
    corpus = open_sources(options, progress)
    if options.cache_dir is not None and not isinstance(corpus, FileCorpus):
        raise TextgenError("--cache-ids caches text files; TensorFlow Datasets and records are read as they "
                           "are")
    val_corpus: Corpus | None = None
    if options.val_file:
        val_corpus = open_corpus([options.val_file], encoding=options.encoding, records=options.records)
    elif isinstance(corpus, TfdsCorpus) and "validation" in corpus.splits():
        val_corpus = dataclasses.replace(corpus, split="validation")
    if isinstance(corpus, RecordCorpus) != isinstance(val_corpus or corpus, RecordCorpus):
        raise TextgenError("the validation file must be records as the corpus is (or text as it is)")

    labels: Counter[str] = Counter()  # records per label: the vocabulary's order and the description
    if isinstance(corpus, RecordCorpus):
        log("Reading the records...")
        labels = corpus.labels()
    tokenizer, total, streams, starts = _tokens(options, corpus, tokenizer, labels, log)
    if total == 0:
        raise TextgenError("the corpus holds no text")
    if val_corpus is None:
        train, val = split_tail(streams, tokenizer.level, total, train_config.val_fraction,
                                train_config.max_val_tokens, starts)
    else:
        train = TokenSource(lambda: streams(0, None), total, None, "all tokens")
        val = measured_source(tokenizer, val_corpus, "validation corpus")
    require_windows(train, train_config.seq_len, "the training text")
    require_windows(val, train_config.seq_len, "the validation text")
    description = {**corpus.describe(), "tokens": total, "train_tokens": train.tokens,
                   "val_tokens": val.tokens, "validation": val_corpus.describe() if val_corpus
                   else f"last {train_config.val_fraction:.0%} of the "
                        f"{'records' if starts is not None else 'corpus'} (capped at "
                        f"{train_config.max_val_tokens:,} tokens)"}
    if isinstance(corpus, RecordCorpus):
        description.update(records=len(starts) - 1, skipped_records=corpus.skipped,
                           labels=dict(labels.most_common()))
    return PreparedData(tokenizer, train, val, description)


def _tokens(options: DataOptions, corpus: Corpus, tokenizer: Tokenizer | None, labels: Counter[str],
            log: Log) -> tuple[Tokenizer, int, Streams, np.ndarray | None]:
    """The tokenizer (fitted unless given), the corpus's length in tokens, its token ranges (from
    the ids cache with `cache_dir`, else tokenized as they are read), and for records where each
    starts (`RecordCorpus.record_starts`, whose last entry is the length: one tokenizing pass)."""
    if options.cache_dir is not None and isinstance(corpus, FileCorpus):
        cache = IdCache.open(Path(options.cache_dir), corpus)
        if tokenizer is None:
            log("Building the vocabulary (or reading it from the cache)...")
            tokenizer = cache.tokenizer(options.level, options.max_vocab)
        log("Tokenizing (or reading the tokens from the cache)...")
        cached = cache.ids(tokenizer)
        return tokenizer, cached.tokens, cached.stream, None
    if isinstance(corpus, RecordCorpus):
        if tokenizer is None:
            log("Building the vocabulary...")
            tokenizer = record_tokenizer(options.level, corpus, labels, options.max_vocab)
        starts = corpus.record_starts(tokenizer)
        return tokenizer, int(starts[-1]), corpus_streams(tokenizer, corpus), starts
    if tokenizer is None:
        log("Building the vocabulary...")
        tokenizer, total = tokenizer_for(options.level).fit(corpus.chunks(), options.max_vocab)
    else:
        total = count_tokens(token_stream(tokenizer, corpus))[0]
    return tokenizer, total, corpus_streams(tokenizer, corpus), None


def record_tokenizer(level: str, corpus: RecordCorpus, label_counts: Counter[str],
                     max_vocab: int) -> Tokenizer:
    """The records' vocabulary, then <bos>, <eos> and a token per label (the most frequent first), all
    within `max_vocab`."""
    labels = [label for label, _ in sorted(label_counts.items(), key=lambda item: (-item[1], item[0]))]
    room = max_vocab - 2 - len(labels)
    if room < 2:
        raise TextgenError(f"--max-vocab {max_vocab:,} leaves no room for text beside <bos>, <eos> and "
                           f"{len(labels):,} labels")
    tokenizer, _ = tokenizer_for(level).fit(corpus.chunks(), room, separate=True)
    return tokenizer.with_records(labels)
