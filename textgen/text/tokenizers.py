"""Character and word tokenizers: fit on a stream of text, encode, decode, save as JSON.

Both are lossless on in-vocabulary text: `decode(encode(text)) == text`. The word tokenizer gets
that by keeping a single leading space inside the token that follows it (" the", " ,") and
every other run of spaces, tabs and each line break as tokens of their own, the way GPT-2's
pre-tokenizer does; generated text therefore comes back with natural spacing.
Id 0 is the out-of-vocabulary token in both; generation never emits it.

A model trained on records (textgen.text.records) also has control tokens: <bos> and <eos> around
each record, and one <label:NAME> per label. Their strings can never be a piece of text (a
character is one code point, a word piece never starts with "<" and goes on), so `encode` never
produces them, and `decode` shows them as nothing.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from textgen.errors import TextgenError

TOKENIZER_FORMAT = 1
UNK_ID = 0
BOS, EOS, LABEL_PREFIX = "<bos>", "<eos>", "<label:"
DEFAULT_MAX_VOCAB = 20_000
BMP = 0x10000  # code points below this are counted in a dense array when fitting characters

# CJK ideographs, split into single-character tokens in word mode (as BERT's basic tokenizer does).
CJK_RANGES = (
    (0x3400, 0x4DBF),
    (0x4E00, 0x9FFF),
    (0xF900, 0xFAFF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2CEAF),
    (0x2F800, 0x2FA1F),
)
_CJK = "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in CJK_RANGES)
_WORD_CHAR = rf"[^\W{_CJK}]"  # letters, digits and underscore, but not CJK ideographs
# Alternatives are tried left to right; together they match every character, so the pieces
# of a text always concatenate back to it.
WORD_PATTERN = re.compile(
    rf"\n| ?[{_CJK}]| ?{_WORD_CHAR}+(?:['’]{_WORD_CHAR}+)*| ?\S|[^\S\n]+"
)


def label_token(label: str) -> str:
    return f"{LABEL_PREFIX}{label}>"


def is_control(token: str) -> bool:
    """<bos>, <eos> or a <label:NAME>: a token no text is cut into."""
    return token in (BOS, EOS) or (token.startswith(LABEL_PREFIX) and token.endswith(">")
                                   and len(token) > len(LABEL_PREFIX) + 1)


@dataclass(frozen=True)
class Specials:
    """The ids of a record model's control tokens."""

    bos: int
    eos: int
    labels: dict[str, int]  # label -> its token's id, in vocabulary order

    def label_id(self, label: str) -> int:
        if label not in self.labels:
            known = ", ".join(repr(name) for name in self.labels) or "none: it was trained without labels"
            raise TextgenError(f"unknown label {label!r}; the model knows {known}")
        return self.labels[label]


class Tokenizer:
    """Maps text to int32 ids and back; subclasses define how text is cut into pieces."""

    level: str = ""
    unk_text: str = ""

    def __init__(self, tokens: Iterable[str]):
        self.tokens: list[str] = list(tokens)  # id i + 1 -> tokens[i]; id 0 is UNK
        if len(set(self.tokens)) != len(self.tokens):
            raise TextgenError("tokenizer vocabulary has duplicate tokens")
        self._ids = {tok: i + 1 for i, tok in enumerate(self.tokens) if not is_control(tok)}  # text only
        self._texts = [self.unk_text, *("" if is_control(tok) else tok for tok in self.tokens)]
        control = {tok: i + 1 for i, tok in enumerate(self.tokens) if is_control(tok)}
        labels = {tok[len(LABEL_PREFIX):-1]: i for tok, i in control.items() if tok.startswith(LABEL_PREFIX)}
        self.specials = Specials(control[BOS], control[EOS], labels) if BOS in control else None

    # -- cutting text ---------------------------------------------------------------------
    def split(self, text: str) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def safe_cut(text: str) -> int:
        """Index up to which `text` can be tokenized without knowing what follows it."""
        return len(text)

    def iter_pieces(self, chunks: Iterable[str]) -> Iterator[list[str]]:
        """Split a stream of text chunks into pieces, never cutting a token at a chunk edge."""
        carry = ""
        for chunk in chunks:
            text = carry + chunk
            cut = self.safe_cut(text)
            carry = text[cut:]
            if cut:
                yield self.split(text[:cut])
        if carry:
            yield self.split(carry)

    # -- ids ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self.tokens) + 1

    def encode(self, text: str) -> np.ndarray:
        return self.encode_pieces(self.split(text))

    def encode_pieces(self, pieces: list[str]) -> np.ndarray:
        get = self._ids.get
        return np.fromiter((get(p, UNK_ID) for p in pieces), dtype=np.int32, count=len(pieces))

    def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """One whole text's ids, and each token's length in characters."""
        pieces = self.split(text)
        return self.encode_pieces(pieces), np.fromiter(map(len, pieces), dtype=np.int32, count=len(pieces))

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids, character length of each token) for a stream of text chunks."""
        for pieces in self.iter_pieces(chunks):
            lengths = np.fromiter(map(len, pieces), dtype=np.int32, count=len(pieces))
            yield self.encode_pieces(pieces), lengths

    def decode(self, ids: Iterable[int]) -> str:
        texts = self._texts
        return "".join(texts[int(i)] for i in ids)

    def decode_records(self, ids: Iterable[int], record_break: str = "\n\n") -> str:
        """`decode`, with `record_break` for each <eos>: where generation ran on past a record's end."""
        if self.specials is None:
            return self.decode(ids)
        ids = np.asarray(ids)
        parts = np.split(ids, np.flatnonzero(ids == self.specials.eos))
        return record_break.join(self.decode(part) for part in parts)

    def token_text(self, token_id: int) -> str:
        return self._texts[token_id]

    def unknown_pieces(self, text: str) -> list[str]:
        """Pieces of `text` that are not in the vocabulary (in order, without repeats)."""
        return list(dict.fromkeys(p for p in self.split(text) if p not in self._ids))

    # -- fitting and saving -----------------------------------------------------------------
    @classmethod
    def fit(cls, chunks: Iterable[str], max_vocab: int = DEFAULT_MAX_VOCAB, *,
            separate: bool = False) -> tuple[Tokenizer, int]:
        """Build a vocabulary from a stream; returns the tokenizer and the corpus length in tokens.
        `separate`: each chunk is a text of its own (a record), not a piece of one stream."""
        if max_vocab < 2:
            raise TextgenError("max-vocab must be at least 2")
        counts = cls.count(chunks, separate=separate)
        return cls(cls.order(most_frequent(counts, max_vocab - 1))), sum(counts.values())

    @classmethod
    def count(cls, chunks: Iterable[str], *, separate: bool = False) -> dict[str, int]:
        """How often each piece occurs in a stream of text (or, `separate`, in separate texts)."""
        counts: Counter[str] = Counter()
        cutter = cls([])
        for pieces in (map(cutter.split, chunks) if separate else cutter.iter_pieces(chunks)):
            counts.update(pieces)
        return counts

    def extended(self, tokens: Iterable[str]) -> Tokenizer:
        """This vocabulary with `tokens` appended: the ids of the tokens it has do not change."""
        return type(self)([*self.tokens, *tokens])

    def with_records(self, labels: Iterable[str] = ()) -> Tokenizer:
        """This vocabulary with <bos>, <eos> and the labels' tokens appended where it lacks them."""
        wanted = [BOS, EOS, *(label_token(label) for label in labels)]
        return self.extended(token for token in wanted if token not in self.tokens)

    @staticmethod
    def order(tokens: list[str]) -> list[str]:
        """Order of the saved vocabulary (most frequent first unless a subclass prefers otherwise)."""
        return tokens

    def to_dict(self) -> dict:
        return {"format": TOKENIZER_FORMAT, "level": self.level, "unk": self.unk_text,
                "tokens": self.tokens}

    def save(self, path: Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")


class CharTokenizer(Tokenizer):
    """One token per Unicode code point; line breaks are ordinary tokens."""

    level = "char"
    unk_text = "\ufffd"

    def __init__(self, tokens: Iterable[str]):
        super().__init__(tokens)
        if any(len(t) != 1 for t in self._ids):
            raise TextgenError("a character vocabulary may only hold single characters")
        # Sorted code points and their ids make encoding a vectorised binary search.
        cps = np.array([ord(t) for t in self._ids], dtype=np.uint32)
        ids = np.array(list(self._ids.values()), dtype=np.int32)
        order = np.argsort(cps)
        self._sorted_cps = cps[order]
        self._sorted_ids = ids[order]

    def split(self, text: str) -> list[str]:
        return list(text)

    def encode(self, text: str) -> np.ndarray:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype="<u4")
        if not len(self._sorted_cps):
            return np.zeros(len(cps), dtype=np.int32)
        pos = np.searchsorted(self._sorted_cps, cps)
        pos = np.minimum(pos, len(self._sorted_cps) - 1)
        found = self._sorted_cps[pos] == cps
        return np.where(found, self._sorted_ids[pos], UNK_ID).astype(np.int32)

    def encode_text(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        ids = self.encode(text)
        return ids, np.ones(len(ids), dtype=np.int32)

    def encode_stream(self, chunks: Iterable[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for chunk in chunks:
            if chunk:
                ids = self.encode(chunk)
                yield ids, np.ones(len(ids), dtype=np.int32)

    def iter_pieces(self, chunks: Iterable[str]) -> Iterator[str]:  # type: ignore[override]
        # Counter.update on a string counts its characters: no need to build lists.
        yield from (chunk for chunk in chunks if chunk)

    @classmethod
    def count(cls, chunks: Iterable[str], *, separate: bool = False) -> dict[str, int]:
        """Count code points with numpy: ten times faster than a Counter, which matters at gigabytes.
        (Characters are the same whether texts are separate or one stream.)"""
        plane0 = np.zeros(BMP, dtype=np.int64)  # the Basic Multilingual Plane, counted by bincount
        beyond: Counter[int] = Counter()  # emoji and other rare code points above it
        for chunk in chunks:
            cps = np.frombuffer(chunk.encode("utf-32-le"), dtype="<u4")
            low = cps < BMP
            plane0 += np.bincount(cps[low], minlength=BMP)
            if not low.all():
                beyond.update(cps[~low].tolist())
        counts = {chr(cp): int(plane0[cp]) for cp in np.flatnonzero(plane0)}
        counts.update({chr(cp): n for cp, n in beyond.items()})
        return counts

    @staticmethod
    def order(tokens: list[str]) -> list[str]:
        return sorted(tokens)


class WordTokenizer(Tokenizer):
    """Words, single punctuation marks, CJK characters, line breaks and space runs."""

    level = "word"
    unk_text = "<unk>"

    def split(self, text: str) -> list[str]:
        return WORD_PATTERN.findall(text)

    @staticmethod
    def safe_cut(text: str) -> int:
        # A line break always ends a token; failing that, cut before the last space run.
        cut = text.rfind("\n") + 1
        if cut:
            return cut
        cut = len(text)
        while cut > 0 and not text[cut - 1].isspace():  # the last, maybe unfinished, token
            cut -= 1
        while cut > 0 and text[cut - 1].isspace():  # and the space run before it (\s in the pattern)
            cut -= 1
        return cut


def most_frequent(counts: dict[str, int], limit: int) -> list[str]:
    """The `limit` most frequent pieces, ties in a fixed order (the one fitting uses)."""
    return [tok for tok, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:max(limit, 0)]]


TOKENIZERS: dict[str, type[Tokenizer]] = {"char": CharTokenizer, "word": WordTokenizer}


def tokenizer_for(level: str) -> type[Tokenizer]:
    try:
        return TOKENIZERS[level]
    except KeyError:
        raise TextgenError(f"unknown level {level!r}; choose char or word") from None


def load_tokenizer(path: os.PathLike | str) -> Tokenizer:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if data.get("format") != TOKENIZER_FORMAT:
            raise TextgenError(f"{path}: unsupported tokenizer format {data.get('format')!r}")
        return tokenizer_for(data["level"])(data["tokens"])
    except TextgenError:
        raise
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise TextgenError(f"{path}: not a valid tokenizer file ({exc.__class__.__name__})") from exc
