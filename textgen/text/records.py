"""Corpora of records instead of one long text: names, titles, recipes, quotes, each one document.

    --documents lines              each non-empty line of a text file is a record
    --documents blank-lines        paragraphs: records between blank lines
    --documents separator:TEXT     records between lines equal to TEXT (fortune files use %)
    file.csv, file.tsv             a record per row: --text-column (default: the only column besides
                                   the label), --label-column
    file.jsonl                     a record per line (a JSON object): --text-key, --label-key

Parsed with the standard library (quoted fields, embedded line breaks, byte order marks). The
model reads each record as <bos> [<label:NAME>] text <eos>, so it learns where records start and
end, and what a label's records look like. A row that cannot be read is one error naming its file
and line, or, with `skip_bad`, skipped and counted.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from textgen.errors import TextgenError
from textgen.text.base import Corpus
from textgen.text.tokenizers import Tokenizer

RECORD_SUFFIXES = {".csv": ",", ".tsv": "\t", ".jsonl": None}
TEXT_MODES = ("lines", "blank-lines")  # and separator:TEXT
BLOCK_TOKENS = 1 << 20


@dataclass(frozen=True, kw_only=True)
class RecordFormat:
    """How records are read from the sources (saved with the model, so evaluation reads alike)."""

    documents: str = "none"  # none | lines | blank-lines | separator:TEXT: how text files split
    text_column: str | None = None  # CSV / TSV
    label_column: str | None = None
    text_key: str | None = None  # JSON Lines
    label_key: str | None = None
    skip_bad: bool = False  # skip unreadable rows (counted) instead of stopping at the first

    def __post_init__(self) -> None:
        if self.documents not in ("none", *TEXT_MODES) and not (
                self.documents.startswith("separator:") and len(self.documents) > len("separator:")):
            raise TextgenError(f"unknown --documents {self.documents!r}; choose none, lines, blank-lines or "
                               "separator:TEXT")

    def to_dict(self) -> dict[str, Any]:
        """The settings that differ from the defaults."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v != getattr(RecordFormat, k)}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RecordFormat | None:
        return None if data is None else cls(**data)


def reads_records(paths: list[Path], fmt: RecordFormat | None) -> bool:
    """Whether these files are read as records (CSV, TSV, JSON Lines, or text with --documents)."""
    kinds = {path.suffix.lower() in RECORD_SUFFIXES for path in paths}
    if len(kinds) > 1:
        raise TextgenError("CSV, TSV or JSON Lines files cannot be mixed with text files in one corpus")
    tabular = kinds == {True}
    fields_given = fmt is not None and any((fmt.text_column, fmt.text_key, fmt.label_column, fmt.label_key))
    if fields_given and not tabular:
        raise TextgenError("--text-column, --label-column, --text-key and --label-key are for .csv, .tsv and "
                           ".jsonl files")
    return tabular or (fmt is not None and fmt.documents != "none")


@dataclass(frozen=True)
class Record:
    text: str
    label: str | None


@dataclass
class RecordCorpus(Corpus):
    """Records from files; read again on every pass, never held whole."""

    paths: list[Path]
    encoding: str = "utf-8"
    format: RecordFormat = field(default_factory=RecordFormat)
    skipped: int = 0  # rows skipped by the last full pass (with skip_bad)

    def records(self) -> Iterator[Record]:
        skipped = 0
        for path in self.paths:
            reader = _reader(path, self.format)
            try:
                for record in reader(path, self.encoding, self.format):
                    if isinstance(record, _Bad):
                        if not self.format.skip_bad:
                            raise TextgenError(f"{path}:{record.line}: {record.problem}{_SKIP_HINT}")
                        skipped += 1
                        continue
                    yield record
            except UnicodeDecodeError as exc:
                raise TextgenError(f"{path}: not valid {self.encoding} ({exc.reason}); if it is in another "
                                   "encoding, pass --encoding") from None
            except OSError as exc:
                raise TextgenError(f"{path}: cannot read ({exc.strerror or exc})") from None
        self.skipped = skipped

    def chunks(self) -> Iterator[str]:
        """Each record's text, a chunk of its own (fit the vocabulary with `separate=True`)."""
        for record in self.records():
            yield record.text

    def labels(self) -> Counter[str]:
        """How many records each label has (records without a label are not counted)."""
        return Counter(record.label for record in self.records() if record.label is not None)

    def token_blocks(self, tokenizer: Tokenizer) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """<bos> [<label>] text <eos> for every record, as (ids, character lengths) blocks; control
        tokens stand for no characters."""
        specials = tokenizer.specials
        if specials is None:
            raise TextgenError("this model was not trained on records (it has no <bos> and <eos>)")
        ids: list[np.ndarray] = []
        lengths: list[np.ndarray] = []
        size = 0
        for record in self.records():
            head = [specials.bos] if record.label is None else [specials.bos, specials.label_id(record.label)]
            text_ids, text_lengths = tokenizer.encode_text(record.text)
            ids += [np.array(head, np.int32), text_ids, np.array([specials.eos], np.int32)]
            lengths += [np.zeros(len(head), np.int32), text_lengths, np.zeros(1, np.int32)]
            size += len(head) + len(text_ids) + 1
            if size >= BLOCK_TOKENS:
                yield np.concatenate(ids), np.concatenate(lengths)
                ids, lengths, size = [], [], 0
        if size:
            yield np.concatenate(ids), np.concatenate(lengths)

    def record_starts(self, tokenizer: Tokenizer) -> np.ndarray:
        """The token position at which each record starts, and the total at the end (one pass)."""
        sizes = [0]
        for record in self.records():
            head = 1 if record.label is None else 2
            sizes.append(head + len(tokenizer.encode_text(record.text)[0]) + 1)
        return np.cumsum(np.array(sizes, np.int64))

    def describe(self) -> dict[str, Any]:
        return {"kind": "records", "paths": [str(p) for p in self.paths], "encoding": self.encoding,
                "bytes": sum(p.stat().st_size for p in self.paths), "documents": self.format.to_dict()}


_SKIP_HINT = " (--skip-bad-records skips such rows)"


@dataclass(frozen=True)
class _Bad:
    line: int
    problem: str


def _reader(path: Path, fmt: RecordFormat) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return _json_lines
    if suffix in (".csv", ".tsv"):
        return _table
    if fmt.documents == "none":
        raise TextgenError(f"{path}: a text file in a corpus of records needs --documents lines, blank-lines "
                           "or separator:TEXT")
    return _text_records


def _open(path: Path, encoding: str, newline: str | None = None) -> Any:
    """The file as text (line breaks as universal newlines unless `newline`); a UTF-8 byte order mark
    is dropped."""
    if codecs.lookup(encoding).name == "utf-8":
        encoding = "utf-8-sig"
    return open(path, encoding=encoding, errors="strict", newline=newline)


def _text_records(path: Path, encoding: str, fmt: RecordFormat) -> Iterator[Record | _Bad]:
    with _open(path, encoding) as handle:
        if fmt.documents == "lines":
            for line in handle:
                text = line.rstrip("\n")
                if text.strip():
                    yield Record(text, None)
            return
        separator = fmt.documents.split(":", 1)[1] if fmt.documents.startswith("separator:") else None
        lines: list[str] = []
        for line in handle:
            line = line.rstrip("\n")
            ends = line.strip() == "" if separator is None else line == separator
            if ends:
                if text := "\n".join(lines).strip("\n"):
                    yield Record(text, None)
                lines = []
            else:
                lines.append(line)
        if text := "\n".join(lines).strip("\n"):
            yield Record(text, None)


def _pick(name: str | None, fields: list[str], label: str | None, what: str, option: str, where: str) -> str:
    """The field holding the text: the one given, or the only one besides the label."""
    if name is not None:
        if name not in fields:
            raise TextgenError(f"{where}: no {what} {name!r}; it has {', '.join(map(repr, fields))}")
        return name
    others = [f for f in fields if f != label]
    if len(others) == 1:
        return others[0]
    raise TextgenError(f"{where}: which {what} holds the text? give {option} "
                       f"(it has {', '.join(map(repr, fields))})")


def _table(path: Path, encoding: str, fmt: RecordFormat) -> Iterator[Record | _Bad]:
    with _open(path, encoding, newline="") as handle:  # the csv module reads line breaks itself
        reader = csv.reader(handle, delimiter=RECORD_SUFFIXES[path.suffix.lower()], strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            raise TextgenError(f"{path}:{reader.line_num}: malformed CSV header ({exc})") from None
        if not header:
            raise TextgenError(f"{path}: file is empty (a CSV file starts with a header row)")
        label = fmt.label_column
        if label is not None and label not in header:
            raise TextgenError(f"{path}: no column {label!r}; it has {', '.join(map(repr, header))}")
        text = _pick(fmt.text_column, header, label, "column", "--text-column", str(path))
        text_at, label_at = header.index(text), header.index(label) if label is not None else None
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield _Bad(reader.line_num, f"malformed CSV ({exc})")
                continue
            if not row:  # a blank line
                continue
            if len(row) != len(header):
                yield _Bad(reader.line_num, f"{len(row)} fields where the header has {len(header)}")
            elif not row[text_at].strip():
                yield _Bad(reader.line_num, f"empty record (column {text!r} is empty)")
            else:
                yield Record(row[text_at], (row[label_at] or None) if label_at is not None else None)


def _json_lines(path: Path, encoding: str, fmt: RecordFormat) -> Iterator[Record | _Bad]:
    text_key = fmt.text_key
    with _open(path, encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                yield _Bad(number, f"not valid JSON ({exc.msg})")
                continue
            if not isinstance(item, dict):
                yield _Bad(number, "not a JSON object")
                continue
            if text_key is None:  # from the first object: its only key besides the label
                text_key = _pick(None, list(item), fmt.label_key, "key", "--text-key", f"{path}:{number}")

            text, label = item.get(text_key), item.get(fmt.label_key) if fmt.label_key else None
            if not isinstance(text, str):
                yield _Bad(number, f"no text under {text_key!r}" if text is None else
                           f"{text_key!r} holds {type(text).__name__}, not text")
            elif not text.strip():
                yield _Bad(number, f"empty record ({text_key!r} is empty)")
            elif label is not None and not isinstance(label, str | int | float):
                yield _Bad(number, f"the label under {fmt.label_key!r} is not a string")
            else:
                yield Record(text, None if label in (None, "") else str(label))
