"""Tokenized corpora kept on disk (`train --cache-ids`), so a re-run on the same files skips the
vocabulary pass and the tokenizing and reads int32 ids instead.

Entries are named by a key: the fingerprint of the corpus files plus either the vocabulary
recipe (level, max-vocab) or the tokenizer itself, so a changed file or vocabulary makes a new
entry rather than reusing a stale one. The fingerprint is each file's path, size, modification
time (ns), encoding and a hash of its first and last MiB: its cost does not grow with the corpus,
and any ordinary edit changes it. A full hash would read the whole corpus on every run, which
for char models is about what the cache saves.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.store import artifacts
from textgen.text.corpus import FileCorpus
from textgen.text.tokenizers import Tokenizer, load_tokenizer, tokenizer_for
from textgen.text.tokens import Stream

CACHE_DIR = ".ids-cache"  # inside the output folder, beside the models
SAMPLE_BYTES = 1 << 20
BLOCK_TOKENS = 1 << 20  # tokens read at a time: plain reads, so memory stays flat (a memmap would not)
ID_DTYPE = np.dtype("<i4")


def fingerprint(corpus: FileCorpus) -> str:
    digest = hashlib.sha256(corpus.encoding.encode())
    for path in corpus.paths:
        stat = path.stat()
        digest.update(f"\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
        with open(path, "rb") as handle:
            digest.update(handle.read(SAMPLE_BYTES))
            handle.seek(max(stat.st_size - SAMPLE_BYTES, 0))
            digest.update(handle.read(SAMPLE_BYTES))
    return digest.hexdigest()


def _temp_file(beside: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{beside.name}.", dir=beside.parent)
    os.close(fd)
    return Path(name)


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


@dataclass(frozen=True)
class CachedIds:
    """A tokenized corpus on disk: ids, and each token's length in characters (word level only)."""

    ids_path: Path
    lengths_path: Path | None  # None: one character per token
    tokens: int
    chars: int

    def stream(self, start: int = 0, stop: int | None = None) -> Stream:
        """Token positions [start, stop) as (ids, lengths) blocks, like `data.token_stream`."""
        stop = self.tokens if stop is None else min(stop, self.tokens)
        for lo in range(start, stop, BLOCK_TOKENS):
            count = min(BLOCK_TOKENS, stop - lo)
            ids = np.fromfile(self.ids_path, ID_DTYPE, count, offset=lo * ID_DTYPE.itemsize)
            lengths = (np.ones(count, np.int32) if self.lengths_path is None else
                       np.fromfile(self.lengths_path, ID_DTYPE, count, offset=lo * ID_DTYPE.itemsize))
            yield ids.astype(np.int32), lengths.astype(np.int32)


@dataclass(frozen=True)
class IdCache:
    """The cache folder's entries for one corpus."""

    folder: Path
    corpus: FileCorpus
    corpus_key: str

    @classmethod
    def open(cls, folder: Path, corpus: FileCorpus) -> IdCache:
        return cls(Path(folder), corpus, fingerprint(corpus))

    def tokenizer(self, level: str, max_vocab: int) -> Tokenizer:
        """The vocabulary fitted on this corpus, fitted now if it is not cached."""
        path = self.folder / f"vocab-{_key(self.corpus_key, level, str(max_vocab))}.json"
        if path.is_file():
            return load_tokenizer(path)
        tokenizer, _ = tokenizer_for(level).fit(self.corpus.chunks(), max_vocab)
        artifacts.write_text_atomic(path, json.dumps(tokenizer.to_dict(), ensure_ascii=False))
        return tokenizer

    def ids(self, tokenizer: Tokenizer) -> CachedIds:
        """The corpus tokenized by `tokenizer`, tokenized and stored now if it is not cached."""
        key = _key(self.corpus_key, json.dumps(tokenizer.to_dict(), ensure_ascii=False))
        manifest = self.folder / f"ids-{key}.json"
        ids_path = self.folder / f"ids-{key}.i32"
        lengths_path = None if tokenizer.level == "char" else self.folder / f"lengths-{key}.i32"
        if manifest.is_file():
            sizes = json.loads(manifest.read_text(encoding="utf-8"))
            return CachedIds(ids_path, lengths_path, sizes["tokens"], sizes["chars"])
        tokens, chars = self._write(tokenizer, ids_path, lengths_path)
        artifacts.write_json_atomic(manifest, {"tokens": tokens, "chars": chars})  # last: the entry is whole
        return CachedIds(ids_path, lengths_path, tokens, chars)

    def _write(self, tokenizer: Tokenizer, ids_path: Path, lengths_path: Path | None) -> tuple[int, int]:
        self.folder.mkdir(parents=True, exist_ok=True)
        targets = [p for p in (ids_path, lengths_path) if p is not None]
        temps = [_temp_file(p) for p in targets]
        tokens = chars = 0
        try:
            with contextlib.ExitStack() as stack:
                handles = [stack.enter_context(open(t, "wb")) for t in temps]
                for ids, lengths in tokenizer.encode_stream(self.corpus.chunks()):
                    handles[0].write(ids.astype(ID_DTYPE).tobytes())
                    if lengths_path is not None:
                        handles[1].write(lengths.astype(ID_DTYPE).tobytes())
                    tokens += len(ids)
                    chars += int(lengths.sum())
            for temp, target in zip(temps, targets, strict=True):
                os.replace(temp, target)
        except BaseException:
            for temp in temps:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
            raise
        return tokens, chars
