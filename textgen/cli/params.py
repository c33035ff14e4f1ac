"""What the commands share: option types, the options `train` and `tune` both take (declared
once), and starting TensorFlow quietly."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from textgen import compile_cache
from textgen.model.machine import memory_bytes
from textgen.store.config import LEVELS, PRECISIONS, TrainConfig

POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


class TemperatureList(click.ParamType):
    """`0.8` or a comma-separated list such as `0.5,1.0,0.2`, cycled token by token."""

    name = "T[,T...]"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            temperatures = [float(part) for part in str(value).split(",")]
        except ValueError:
            self.fail(f"{value!r} is not a number or a comma-separated list of numbers", param, ctx)
        if any(t < 0 for t in temperatures):
            self.fail(f"{value!r}: temperatures must be 0 (greedy) or more", param, ctx)
        return temperatures


class Span(click.ParamType):
    """`MIN:MAX`, or one number that fixes the value (`--layers 2`)."""

    name = "MIN[:MAX]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            numbers = tuple(float(part) for part in str(value).split(":"))
        except ValueError:
            numbers = ()
        if len(numbers) not in (1, 2) or not all(math.isfinite(number) for number in numbers):
            self.fail(f"{value!r} is not a number or a range MIN:MAX", param, ctx)
        return numbers if len(numbers) == 2 else numbers * 2


def unescape(text: str) -> str:
    """Let `--stop '\\n\\n'` mean two line breaks, as users type it in a shell."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def given(ctx: click.Context, name: str) -> bool:
    """Whether the user set an option, rather than leaving it to its default (or a default map)."""
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT,
                                                  click.core.ParameterSource.DEFAULT_MAP)


def hide_native_logs() -> bool:
    """Unless --verbose, ask native libraries (TensorFlow, LiteRT) to keep their start-up lines to
    themselves (textgen.quiet); whether they were asked."""
    ctx = click.get_current_context(silent=True)
    if ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"):
        return False
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return True


# Training's CPU tensors from TensorFlow's BFC allocator rather than malloc, which as an AVX2 CPU
# handed the large temporaries back to the kernel and faulted them in again: 2.3 M page faults in
# 100 steps of the LSTM benchmark against 0.24 M, LSTM +5.6% and GRU +2.8% tokens/s; natively the
# same faults and speed, and generation about 5% slower with it, so training commands only
# (bench/RESULTS.md, "CPUID without AVX-512"). A value the user set is kept.
TRAINING_ALLOCATOR = ("TF_CPU_ALLOCATOR_USE_BFC", "true")
BFC_LIMIT = "TF_CPU_BFC_MEM_LIMIT_IN_MB"  # TensorFlow's default: 64 GB, where malloc has none


def bfc_limit_mb() -> int:
    """The BFC allocator's limit: the machine's memory, or TensorFlow's 64 GB if that is more."""
    return max(1 << 16, (memory_bytes() or 0) >> 20)


def start_tensorflow(training: bool = False) -> None:
    """Import TensorFlow, with XLA's compiled code kept between runs (textgen.compile_cache), hiding
    its C++ start-up chatter unless --verbose, and out of the garbage collector's way. For
    `training` commands, CPU tensors come from TensorFlow's BFC allocator (TRAINING_ALLOCATOR).

    TensorFlow writes those lines straight to file descriptor 2 while it is imported, before any
    log setting applies, so stderr is pointed at /dev/null for the import only. Python
    exceptions are raised after it is restored, so a broken install still shows its error.
    """
    quiet = hide_native_logs()
    if "tensorflow" in sys.modules:
        return
    compile_cache.enable()
    if training and os.environ.setdefault(*TRAINING_ALLOCATOR) == TRAINING_ALLOCATOR[1]:
        os.environ.setdefault(BFC_LIMIT, str(bfc_limit_mb()))
    from textgen.quiet import native_stderr_silenced

    with _collector_paused(), native_stderr_silenced(quiet):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    if quiet:
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. TFDS's notes about its cache folders


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cycle collector off for the block, and what the block made frozen out of its sight.

    Importing TensorFlow and Keras makes about 570,000 objects that live as long as the process;
    every full collection walks all of them (about 130 ms each), and loading a model and tracing
    its functions set off several: 7 in a `textgen sample --engine compiled`, half a second in
    all. Frozen (gc.freeze), they are never walked again; the garbage the import leaves in cycles
    (about 2 MB) stays with them. Start-up figures: bench/RESULTS.md, "Start-up".
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def options(*decorators: Callable) -> Callable:
    """Several click options as one decorator, in the order they are listed."""
    def apply(function: Callable) -> Callable:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


# The text, windows and run folder options `train` and `tune` share (their network, optimizer and
# budget options differ and are their own).
text_options = options(
    click.option("--level", type=click.Choice(LEVELS), default="char", show_default=True,
                 help="Tokens are characters or words (words keep punctuation and line breaks)."),
    click.option("--max-vocab", type=click.IntRange(min=2), default=20_000, show_default=True,
                 help="Largest vocabulary; rarer tokens become <unk>."),
    click.option("--seq-len", type=POSITIVE, default=None,
                 help="Tokens per training window. [default: 100 for char, 35 for word]"),
    click.option("--batch-size", type=POSITIVE, default=None,
                 help="Windows per training step. [default: 64 for char, 20 for word]"),
    click.option("--epochs", type=POSITIVE, default=TrainConfig.epochs, show_default=True,
                 help="Most passes over the text (a run also stops early when validation stops improving)."),
    click.option("--seed", type=int, default=TrainConfig.seed, show_default=True,
                 help="Seeds the weights, the shuffling, dropout (and tune's choice of trials)."),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 default=TrainConfig.val_fraction, show_default=True,
                 help="Tail of the corpus held out for validation."),
    click.option("--val-file", type=click.Path(dir_okay=False), default=None,
                 help="Validate on this file instead of a held-out tail."),
    click.option("--encoding", default="utf-8", show_default=True, help="Encoding of the text files."),
    click.option("--documents", default="none", show_default=True,
                 metavar="none|lines|blank-lines|separator:TEXT",
                 help="Read text files as records, each a document the model learns to start and end: "
                      "every line, every paragraph, or what lies between lines equal to TEXT (fortune "
                      "files: separator:%). CSV, TSV and JSON Lines files are always records."),
    click.option("--text-column", default=None, help="The CSV/TSV column holding the text [default: the only "
                                                       "column besides the label]."),
    click.option("--label-column", default=None,
                 help="A CSV/TSV column whose values label the records; `sample --label` asks for one."),
    click.option("--text-key", default=None, help="The JSON Lines key holding the text."),
    click.option("--label-key", default=None, help="The JSON Lines key holding the label."),
    click.option("--skip-bad-records", is_flag=True,
                 help="Skip rows that cannot be read (and count them) instead of stopping at the first."),
    click.option("--precision", type=click.Choice(PRECISIONS), default=TrainConfig.precision,
                 show_default=True,
                 help="auto: mixed_float16 on CUDA GPUs with tensor cores, float32_bf16_matmul on CPUs that "
                      "multiply bfloat16 matrices fast (AMX), float32 elsewhere."),
    click.option("--output-dir", default="saved_models", show_default=True, type=click.Path(file_okay=False)),
    click.option("--tfds-data-dir", default=None, help="TensorFlow Datasets data folder."),
    click.option("--tfds-manual-dir", default=None,
                 help="Folder holding the dataset's files, for machines without internet "
                      "(tiny_shakespeare: input.txt; textgen ships that one)."),
    click.option("--cache-ids", is_flag=True,
                 help="Keep the vocabulary and the tokenized text files in OUTPUT_DIR/.ids-cache, so "
                      "re-runs on the same files skip tokenizing (4 bytes per token, 8 for word level)."),
    click.option("--quiet", is_flag=True, help="No progress output."),
)


def text_settings(values: dict[str, Any]) -> dict[str, Any]:
    """`text_options`' values as the API's keyword arguments (`quiet` becomes `verbose`)."""
    names = ("level", "max_vocab", "seq_len", "batch_size", "epochs", "seed", "val_fraction", "val_file",
             "encoding", "precision", "output_dir", "tfds_data_dir", "tfds_manual_dir", "cache_ids",
             "documents", "text_column", "label_column", "text_key", "label_key", "skip_bad_records")
    settings = {name: values.pop(name) for name in names}
    settings["verbose"] = 0 if values.pop("quiet") else 1
    return settings
