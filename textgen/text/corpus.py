"""Where training text comes from: text files, folders of them, or a TensorFlow Datasets dataset.

A corpus is a re-iterable stream of text chunks, so nothing here ever holds a whole corpus in
memory. Bad inputs (missing, empty, binary, wrongly encoded files) are reported as TextgenError
while the stream is read, which training does once, before it writes anything.
"""

from __future__ import annotations

import codecs
import math
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textgen.datasets import bundled_dir
from textgen.errors import TextgenError, TextgenNote
from textgen.text.base import Corpus
from textgen.text.records import RecordCorpus, RecordFormat, reads_records

CHUNK_CHARS = 1 << 20
TFDS_PREFIX = "tfds:"


class OfflineCopyNote(TextgenNote):
    """A `tfds:` dataset's host is unreachable and textgen's bundled copy is used instead."""


@dataclass
class FileCorpus(Corpus):
    """Text files, read in chunks; files are joined with a line break if they lack one."""

    paths: list[Path]
    encoding: str = "utf-8"

    def chunks(self) -> Iterator[str]:
        for path in self.paths:
            yield from _read_chunks(path, self.encoding)

    def describe(self) -> dict[str, Any]:
        return {"kind": "files", "paths": [str(p) for p in self.paths], "encoding": self.encoding,
                "bytes": sum(p.stat().st_size for p in self.paths)}


def _read_chunks(path: Path, encoding: str) -> Iterator[str]:
    hint = "" if encoding.lower().replace("_", "-") not in ("utf-8", "utf8") else (
        "; if it is in another encoding, pass --encoding (e.g. --encoding latin-1)")
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    last = ""
    pending_cr = ""
    try:
        with open(path, "rb") as handle:
            while True:
                raw = handle.read(CHUNK_CHARS)
                if offset == 0 and b"\x00" in raw[:8192] and "16" not in encoding and "32" not in encoding:
                    raise TextgenError(f"{path}: looks like a binary file, not text")
                text = pending_cr + decoder.decode(raw, final=not raw)
                offset += len(raw)
                # Universal newlines, like open(..., newline=None): \r\n and \r become \n.
                pending_cr = "\r" if raw and text.endswith("\r") else ""
                if pending_cr:
                    text = text[:-1]
                if "\r" in text:
                    text = text.replace("\r\n", "\n").replace("\r", "\n")
                if text:
                    last = text[-1]
                    yield text
                if not raw:
                    break
    except UnicodeDecodeError as exc:
        raise TextgenError(
            f"{path}: not valid {encoding} near byte {offset + exc.start}{hint}") from None
    except OSError as exc:
        raise TextgenError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if offset == 0:
        raise TextgenError(f"{path}: file is empty")
    if last and last != "\n":
        yield "\n"


def _expand(path_text: str) -> list[Path]:
    path = Path(path_text).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise TextgenError(f"{path}: folder has no .txt files")
        return files
    if not path.exists():
        raise TextgenError(f"{path}: no such file or folder")
    if not path.is_file():
        raise TextgenError(f"{path}: not a regular file")
    return [path]


@dataclass
class TfdsCorpus(Corpus):
    """The text feature of one split of a TensorFlow Datasets dataset (e.g. tiny_shakespeare)."""

    name: str
    split: str = "train"
    data_dir: str | None = None
    manual_dir: str | None = None
    progress: bool = True
    _builder: Any = field(default=None, repr=False)

    def builder(self) -> Any:
        if self._builder is None:
            self._builder = prepare_tfds(self.name, self.data_dir, self.manual_dir, self.progress)
        return self._builder

    def splits(self) -> list[str]:
        return list(self.builder().info.splits.keys())

    def chunks(self) -> Iterator[str]:
        import tensorflow_datasets as tfds

        builder = self.builder()
        if self.split not in builder.info.splits:
            raise TextgenError(f"tfds:{self.name} has no split {self.split!r} "
                               f"(it has {', '.join(builder.info.splits.keys())})")
        key = _text_feature(builder, self.name)
        for example in tfds.as_numpy(builder.as_dataset(split=self.split, shuffle_files=False)):
            text = example[key].decode("utf-8")
            for start in range(0, len(text), CHUNK_CHARS):
                yield text[start:start + CHUNK_CHARS]
            if text and not text.endswith("\n"):
                yield "\n"

    def describe(self) -> dict[str, Any]:
        return {"kind": "tfds", "name": self.name, "split": self.split}


def _text_feature(builder: Any, name: str) -> str:
    import tensorflow as tf

    features = builder.info.features
    for key, feature in features.items():
        if getattr(feature, "tf_dtype", None) == tf.string and getattr(feature, "shape", None) == ():
            return key
    raise TextgenError(f"tfds:{name} has no text feature to train on")


def prepare_tfds(name: str, data_dir: str | None, manual_dir: str | None, progress: bool = True) -> Any:
    """Build (download if needed) a TFDS dataset; a manual folder makes it work offline."""
    import tensorflow_datasets as tfds

    if not progress:
        tfds.disable_progress_bar()
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as exc:  # TFDS raises several types for unknown names
        raise TextgenError(f"tfds:{name}: unknown TensorFlow Datasets dataset ({_first_line(exc)})") from None
    if not manual_dir and not builder.is_prepared():
        unreachable = _unreachable_hosts(builder)
        bundled = bundled_dir(builder.name)
        if unreachable and bundled is not None:  # still TFDS's own build, checksum included
            warnings.warn(f"offline: using the copy of {builder.name} bundled with textgen", OfflineCopyNote,
                          stacklevel=2)
            manual_dir = str(bundled)
        elif unreachable:  # fail now rather than after TFDS's minutes of retries
            raise TextgenError(
                f"tfds:{name}: cannot reach {', '.join(unreachable)} to download it; offline, put its "
                f"file{_file_names(builder)} in a folder and pass --tfds-manual-dir FOLDER")
        elif progress:
            print(f"Preparing tfds:{name} with TensorFlow Datasets (it downloads)...", flush=True)
    config = tfds.download.DownloadConfig(manual_dir=manual_dir) if manual_dir else None
    try:
        builder.download_and_prepare(download_config=config)
    except Exception as exc:  # network, checksum and file errors all end here
        raise TextgenError(
            f"tfds:{name}: could not prepare the dataset ({_first_line(exc)}); offline, put its "
            "file (for tiny_shakespeare: input.txt) in a folder and pass --tfds-manual-dir FOLDER"
        ) from None
    return builder


def _unreachable_hosts(builder: Any, timeout: float = 5.0) -> list[str]:
    """Hosts of the dataset's recorded download URLs that do not answer (DNS or TCP)."""
    import socket
    from urllib.parse import urlsplit

    hosts = {}
    for url in (getattr(builder, "url_infos", None) or {}):
        parts = urlsplit(url)
        if parts.hostname:
            hosts[parts.hostname] = parts.port or (443 if parts.scheme == "https" else 80)
    unreachable = []
    for host, port in hosts.items():
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError:
            unreachable.append(host)
    return unreachable


def _file_names(builder: Any) -> str:
    names = sorted({info.filename for info in (getattr(builder, "url_infos", None) or {}).values()
                    if getattr(info, "filename", None)})
    return f" ({', '.join(names)})" if names else ""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else exc.__class__.__name__


def open_corpus(sources: Sequence[str], *, encoding: str = "utf-8", tfds_split: str = "train",
                tfds_data_dir: str | None = None, tfds_manual_dir: str | None = None,
                progress: bool = True, records: RecordFormat | None = None) -> Corpus:
    """Turn command-line sources (paths or one `tfds:NAME`) into a corpus: one text, or records
    (CSV, TSV and JSON Lines files always; text files with `records.documents`)."""
    if not sources:
        raise TextgenError("give at least one text file, folder or tfds:NAME to train on")
    tfds_sources = [s for s in sources if s.startswith(TFDS_PREFIX)]
    if tfds_sources:
        if len(sources) != 1:
            raise TextgenError("a tfds: dataset cannot be mixed with other sources")
        name = tfds_sources[0][len(TFDS_PREFIX):]
        if not name:
            raise TextgenError("tfds: needs a dataset name, e.g. tfds:tiny_shakespeare")
        if records is not None and records != RecordFormat():
            raise TextgenError("records (--documents, --text-column, ...) are read from files, not tfds:")
        return TfdsCorpus(name, tfds_split, tfds_data_dir, tfds_manual_dir, progress)
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise TextgenError(f"unknown encoding {encoding!r}") from None
    paths: list[Path] = []
    for source in sources:
        paths.extend(_expand(source))
    if reads_records(paths, records):
        return RecordCorpus(paths, encoding, records or RecordFormat())
    return FileCorpus(paths, encoding)


def sources_bytes(sources: Sequence[str]) -> float:
    """Bytes of the files `sources` name, as open_corpus would read them (a folder's .txt files);
    a tfds:NAME dataset counts as endless, a path that cannot be read as nothing (open_corpus
    reports it)."""
    total = 0
    for source in sources:
        if source.startswith(TFDS_PREFIX):
            return math.inf
        try:
            total += sum(path.stat().st_size for path in _expand(source))
        except TextgenError:
            continue
    return total


@dataclass
class TextCorpus(Corpus):
    """Text already in memory (the Python API's `evaluate(text=...)`)."""

    text: str

    def chunks(self) -> Iterator[str]:
        for start in range(0, len(self.text), CHUNK_CHARS):
            yield self.text[start:start + CHUNK_CHARS]

    def describe(self) -> dict[str, Any]:
        return {"kind": "text", "chars": len(self.text)}
