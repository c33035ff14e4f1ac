"""What is in a models folder, and what one model is: read from JSON, never importing TensorFlow."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textgen.errors import TextgenError
from textgen.store import artifacts
from textgen.store.config import RunConfig


@dataclass(frozen=True)
class ModelSummary:
    """One model folder as `textgen list` and `textgen info` show it."""

    path: Path
    config: RunConfig
    history: dict[str, list]
    size_bytes: int
    modified: dt.datetime

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def best_val_loss(self) -> float | None:
        values = [v for v in self.history.get("val_loss", []) if v is not None]
        return min(values) if values else None

    @property
    def architecture(self) -> str:
        m = self.config.model
        return f"{m.cell.upper()} {m.layers}x{m.units}"


def summarize(path: Path) -> ModelSummary:
    config = RunConfig.load(path / artifacts.CONFIG_FILE)
    history = artifacts.read_history(path)
    size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    modified = dt.datetime.fromtimestamp((path / artifacts.CONFIG_FILE).stat().st_mtime)
    return ModelSummary(path, config, history, size, modified)


def list_models(folder: Path) -> tuple[list[ModelSummary], list[str], list[str]]:
    """Models in `folder`, names of unfinished runs (resumable), and folders that could not be read."""
    if not folder.is_dir():
        raise TextgenError(f"{folder}: no such folder")
    artifacts.recover_all(folder)
    models, unfinished, unreadable = [], [], []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") and entry.name.endswith(".training"):
            unfinished.append(entry.name[1:-len(".training")])
        elif entry.is_dir() and not entry.name.startswith(".") and (entry / artifacts.CONFIG_FILE).is_file():
            try:
                models.append(summarize(entry))
            except TextgenError:
                unreadable.append(entry.name)
    return models, unfinished, unreadable


def human_size(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GB"  # pragma: no cover


def human_share(part: int, whole: int) -> str:
    """A percentage that does not round a few tokens in millions down to 0.00%."""
    share = part / whole if whole else 0.0
    return "<0.01%" if 0 < share < 0.0001 else f"{share:.2%}"


def list_table(models: list[ModelSummary], unfinished: list[str]) -> list[str]:
    rows = [("NAME", "LEVEL", "MODEL", "PARAMS", "SIZE", "VAL LOSS", "DATE", "STATUS")]
    for m in models:
        params = m.config.result.get("parameters")
        loss = m.best_val_loss
        status = m.config.result.get("stopped", "?").replace("_", " ")
        rows.append((m.name, m.config.level, m.architecture, f"{params:,}" if params else "-",
                     human_size(m.size_bytes), f"{loss:.4f}" if loss is not None else "-",
                     m.modified.strftime("%Y-%m-%d %H:%M"),
                     f"{status}, resumable" if m.name in unfinished else status))
    return aligned(rows)


def aligned(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows of cells as lines of left-aligned columns (the first row is usually the header)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in rows]


def info_lines(summary: ModelSummary) -> list[str]:
    """A readable description of one model."""
    c, m, t, r = summary.config, summary.config.model, summary.config.train, summary.config.result
    lines = [
        f"model        {summary.path}",
        f"architecture {summary.architecture}, embedding {m.embedding_dim}, dropout {m.dropout:g}"
        + (f" (embeddings {m.embedding_dropout:g})" if m.embedding_dropout else "")
        + (", tied embedding and output" if m.tie_weights else ""),
        *([f"preset       {c.preset['description']}"] if c.preset.get("description") else []),
        f"parameters   {r['parameters']:,}" if r.get("parameters") else "parameters   -",
        f"vocabulary   {m.vocab_size:,} {c.level} tokens (id 0 is the unknown token)",
        f"corpus       {_describe_corpus(c.corpus)}",
        *_describe_records(c.corpus),
        *([f"fine-tuned   {_describe_base(c.init_from)}"] if c.init_from else []),
        f"training     seq-len {t.seq_len}, batch {t.batch_size}, lr {t.lr:g} ({t.lr_schedule}), "
        + (f"sgd, global clipnorm {t.clipnorm or 'off'}" if t.optimizer == "sgd"
           else f"clipnorm {t.clipnorm or 'off'}, weight decay {t.weight_decay:g}")
        + f", seed {t.seed}, {c.precision_used}"
        + (f", epochs of {t.steps_per_epoch:,} steps" if t.steps_per_epoch else ""),
    ]
    if c.strategy_used != "one-device":
        workers = f" on {c.workers} workers" if c.workers > 1 else ""
        lines.append(f"strategy     {c.strategy_used}, {c.replicas} replicas{workers} (batch {t.batch_size} "
                     "shared among them)")
    if r:
        minutes = r.get("train_seconds", 0) / 60
        lines.append(f"run          {r.get('epochs', 0)} epoch(s), {r.get('steps', 0):,} steps, "
                     f"{minutes:.1f} min, stopped: {r.get('stopped', '?').replace('_', ' ')}")
    speeds = sorted(v for v in summary.history.get("tokens_per_second", []) if v)
    if speeds:
        lines.append(f"speed        {speeds[len(speeds) // 2]:,.0f} tokens/s (median epoch)")
    best = summary.best_val_loss
    if best is not None:
        index = summary.history["val_loss"].index(best)
        bpc = summary.history.get("val_bits_per_char", [None] * (index + 1))[index]
        ppl = summary.history.get("val_perplexity", [None] * (index + 1))[index]
        lines.append(f"best         val_loss {best:.4f} (epoch {index + 1})"
                     + (f", perplexity {ppl:.3f}" if ppl else "")
                     + (f", {bpc:.4f} bits/char" if bpc else ""))
    exports = sorted(p.name for p in (summary.path / "export").glob("*")) \
        if (summary.path / "export").is_dir() else []
    lines.append(f"exports      {', '.join(exports) if exports else 'none'}")
    lines.append(f"size         {human_size(summary.size_bytes)}, saved {summary.modified:%Y-%m-%d %H:%M}")
    return lines


def _describe_base(init_from: dict[str, Any]) -> str:
    """Where a fine-tuned model started: the base, its val_loss on this run's validation text (what
    fine-tuning gained is the difference to the best line), and what became of the vocabulary."""
    base_loss = init_from.get("base_val_loss")
    added, unknown, tokens = (init_from.get(key, 0) for key in
                              ("added_tokens", "unknown_tokens", "corpus_tokens"))
    vocabulary = (f"vocabulary extended by {added:,} tokens" if added else "vocabulary reused") + \
        (f", {human_share(unknown, tokens)} of the corpus unknown" if unknown else "")
    return (f"from {init_from.get('path')} ({init_from.get('checkpoint', 'best')} checkpoint)"
            + (f", val_loss {base_loss:.4f} before the first step" if base_loss is not None else "")
            + f"; {vocabulary}")


def _describe_records(corpus: dict[str, Any]) -> list[str]:
    """How records were read, and the labels with their records (a model of one text: nothing)."""
    if corpus.get("kind") != "records":
        return []
    read = ", ".join(f"{key.replace('_', '-')} {value}" for key, value in corpus.get("documents", {}).items())
    skipped = corpus.get("skipped_records", 0)
    lines = [f"records      <bos> record <eos>; {read or 'a record per row'}"
             + (f"; {skipped:,} unreadable rows skipped" if skipped else "")]
    labels = corpus.get("labels", {})
    if labels:
        lines.append(f"labels       {len(labels):,}: " + ", ".join(f"{name} ({count:,})" for name, count in
                                                              list(labels.items())[:20])
                     + (", ..." if len(labels) > 20 else ""))
    return lines


def _describe_corpus(corpus: dict[str, Any]) -> str:
    if corpus.get("kind") == "files":
        paths = corpus.get("paths", [])
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files"
        text = f"{where} ({human_size(corpus.get('bytes', 0))})"
    elif corpus.get("kind") == "records":
        paths = corpus.get("paths", [])
        where = paths[0] if len(paths) == 1 else f"{len(paths)} files"
        text = f"{corpus.get('records', 0):,} records from {where} ({human_size(corpus.get('bytes', 0))})"
    elif corpus.get("kind") == "tfds":
        text = f"tfds:{corpus.get('name')} ({corpus.get('split')} split)"
    else:
        text = str(corpus.get("kind", "?"))
    if "tokens" in corpus:
        text += f", {corpus['tokens']:,} tokens; {corpus.get('train_tokens', 0):,} train, " \
                f"{corpus.get('val_tokens', 0):,} validation"
    return text
