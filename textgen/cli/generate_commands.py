"""`textgen sample` (and its interactive loop) and `textgen evaluate`: load a model, call its API."""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from textgen.cli import interactive
from textgen.cli.params import (
    NON_NEGATIVE,
    POSITIVE,
    TemperatureList,
    hide_native_logs,
    start_tensorflow,
    unescape,
)
from textgen.errors import TextgenError
from textgen.store.artifacts import is_export, is_export_folder, write_text_atomic
from textgen.text.corpus import sources_bytes

CHECKPOINT = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                          show_default=True)
LOOKUP = click.option("--output-dir", default="saved_models", show_default=True,
                      help="Where model names are looked up.")


def load(model: str, checkpoint: str, output_dir: str) -> Any:
    start_tensorflow()
    from textgen.api import load as load_model

    return load_model(model, checkpoint=checkpoint, output_dir=output_dir)


# `--engine auto` samples a model folder in numpy while that is the quicker: its start-up is a fraction
# of a second against seconds for TensorFlow's, but its loop is slower, and more so the more streams
# share it (the compiled loop's products cost about as much for a few rows as for one). Up to this
# --length for one stream, fewer for more (`numpy_is_quicker`; where they break even:
# bench/RESULTS.md, "Start-up")
NUMPY_MAX_LENGTH = 20_000
# Up to this much held-out text, `evaluate --engine auto` measures a model folder in numpy: TensorFlow's
# start-up is not won back below it (bench/RESULTS.md, "Evaluation in numpy")
EVALUATE_NUMPY_MAX_BYTES = 1_000_000


def numpy_is_quicker(length: int, streams: int) -> bool:
    """Whether `streams` samples of `length` tokens end sooner in numpy than in the compiled loop:
    one stream broke even near 26,000 tokens, 4 near 14,000, 16 near 11,000, 64 near 8,000, about
    as the streams' count to the power -0.3; the limit keeps below that."""
    return length * streams ** 0.3 <= NUMPY_MAX_LENGTH


def load_for_engine(model: str, checkpoint: str, output_dir: str, engine: str, short: bool) -> Any:
    """Without TensorFlow to import: a model folder's network in numpy for short jobs (`short`, under
    `--engine auto`), a `.tflite` file through LiteRT. Otherwise the compiled generator and Keras'
    network, or a SavedModel through TensorFlow."""
    candidate = Path(model).expanduser()
    tflite = candidate.suffix == ".tflite"
    if not tflite and (is_export(candidate) or is_export_folder(candidate)):
        return load(model, checkpoint, output_dir)
    if not tflite and (engine == "compiled" or (engine == "auto" and not short)):
        return load(model, checkpoint, output_dir)
    from textgen.sampling_model import load_sampler

    hide_native_logs()
    return load_sampler(model, checkpoint=checkpoint, output_dir=output_dir)


@click.command()
@click.argument("model")
@click.option("--prime", default="", help="Text to start from (echoed at the start of the output).")
@click.option("--length", type=POSITIVE, default=500, show_default=True, help="Tokens to generate.")
@click.option("--temperature", type=TemperatureList(), default="0.8", show_default=True,
              help="0 is greedy; higher is more adventurous. A comma-separated list is cycled "
                   "token by token.")
@click.option("--top-k", type=NON_NEGATIVE, default=0, show_default=True,
              help="Sample only among the k likeliest tokens (0: off).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Sample only among the likeliest tokens holding this much probability.")
@click.option("--num-samples", type=POSITIVE, default=1, show_default=True,
              help="Samples generated together as one batch.")
@click.option("--stop", multiple=True,
              help="End a sample where this text appears (not included; repeatable; \\n is a line break).")
@click.option("--repetition-penalty", type=click.FloatRange(min=1.0), default=1.0, show_default=True,
              help="Above 1, tokens already in the text get less likely (for word models).")
@click.option("--seed", type=int, default=None, help="Same seed, same text.")
@click.option("--label", default=None,
              help="A model trained on labelled records: generate records of this label.")
@click.option("--stop-at-end/--no-stop-at-end", default=True, show_default=True,
              help="A model trained on records: end each sample where its record ends (--length stays "
                   "the cap), or run on into further records, each after a blank line.")
@click.option("--jsonl", is_flag=True, help="One JSON object per sample and line: {\"text\", \"label\"}.")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the text to this file instead of the screen.")
@click.option("--engine", type=click.Choice(["auto", "numpy", "compiled"]), default="auto", show_default=True,
              help="A model folder: numpy starts at once (no TensorFlow); compiled (TensorFlow, XLA) takes "
                   f"seconds to start and then runs faster; auto: numpy up to --length {NUMPY_MAX_LENGTH:,} "
                   "for one sample, less for more. "
                   "The same seed gives the same text. (A .tflite runs in LiteRT, a SavedModel in "
                   "TensorFlow.)")
@CHECKPOINT
@click.option("--interactive", "-i", "prompt_loop", is_flag=True,
              help="A prompt loop: type a prime, get a continuation; :help lists commands.")
@LOOKUP
def sample(model, prime, length, temperature, top_k, top_p, num_samples, stop, repetition_penalty,
           seed, label, stop_at_end, jsonl, output, engine, checkpoint, prompt_loop, output_dir) -> None:
    """Generate text from a trained model; from a model trained on records, whole records (each
    ends where the model ends it), separated by blank lines.

    \b
    Example:
      textgen sample tinyshakespeare-char --prime "ROMEO:" --length 300 --seed 1
      textgen sample recipes --label dessert --num-samples 5
    """
    text_model = load_for_engine(model, checkpoint, output_dir, engine,
                                 numpy_is_quicker(length, num_samples))
    stops = [unescape(s) for s in stop]
    if prompt_loop:
        _prompt_loop(text_model, interactive.Settings(length, temperature, top_k, top_p, repetition_penalty,
                                                      seed, stops, label, stop_at_end))
        return
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "stop": stops, "seed": seed, "label": label,
               "stop_at_end": stop_at_end}
    records = text_model.tokenizer.specials is not None
    layout = Layout(prime, label, jsonl, records)
    if output is None and (num_samples == 1 or records or jsonl):  # stream to the screen
        rows = text_model.stream_rows(prime, length, num_samples=num_samples, **options)
        layout.stream(rows, num_samples, lambda text: click.echo(text, nl=False))
        return
    texts = text_model.generate_many(prime, length, num_samples=num_samples, **options)
    body = "".join(layout.sample(i, text, num_samples) for i, text in enumerate(texts))
    if output is None:
        click.echo(body, nl=False)
    else:
        write_text_atomic(Path(output), body)
        click.echo(f"Wrote {num_samples} sample(s) to {output}", err=True)


class Layout:
    """How samples are shown: as text (records after a blank line each; samples of one long text
    under a heading each), or one JSON object per line."""

    def __init__(self, prime: str, label: str | None, jsonl: bool, records: bool):
        self.prime, self.label, self.jsonl, self.records = prime, label, jsonl, records

    def header(self, index: int, count: int) -> str:
        if self.jsonl or (count == 1 and not self.records):
            return ""
        if self.records:
            return "\n" if index else ""
        return f"=== sample {index + 1} ===\n"

    def sample(self, index: int, text: str, count: int) -> str:
        """A whole sample (the prime included) as it is written."""
        if self.jsonl:
            return json.dumps({"text": text, "label": self.label}, ensure_ascii=False) + "\n"
        return self.header(index, count) + text + "\n"

    def stream(self, rows: Iterator[tuple[list[str], list[bool]]], count: int,
               write: Callable[[str], None]) -> None:
        """Write samples in order while they are generated: the first unfinished one as its text
        comes, each later one (what it has so far, then as it comes) once those before it end."""
        texts, head, written = [self.prime] * count, 0, -1  # written: of texts[head]; -1: not begun

        def show() -> None:
            nonlocal written
            if self.jsonl:
                return
            if written < 0:
                write(self.header(head, count))
                written = 0
            write(texts[head][written:])
            written = len(texts[head])

        def end() -> None:
            nonlocal head, written
            write(self.sample(head, texts[head], count) if self.jsonl else "\n")
            head, written = head + 1, -1

        for pieces, finished in rows:
            texts = [text + piece for text, piece in zip(texts, pieces, strict=True)]
            while head < count:
                show()
                if not finished[head]:
                    break
                end()
        while head < count:  # generation ended: so has every sample
            show()
            end()


def _prompt_loop(text_model: Any, settings: interactive.Settings) -> None:
    def write(text: str) -> None:
        click.echo(text, nl=False)
        sys.stdout.flush()

    def read_line() -> str | None:
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            return None
        return line or None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown prime pieces are simply skipped here
        try:
            interactive.run(text_model, settings, read_line, write)
        except KeyboardInterrupt:  # Ctrl-C while generating ends the session cleanly
            write("\n")


@click.command()
@click.argument("model")
@click.argument("files", nargs=-1)
@click.option("--novelty", "novelty_sources", multiple=True, metavar="CORPUS",
              help="Also measure how much generated text is copied from this corpus (the training "
                   "text: files, folders or tfds:NAME; repeatable).")
@click.option("--samples", type=POSITIVE, default=5, show_default=True,
              help="Samples for --novelty (records, for a model trained on records).")
@click.option("--length", type=POSITIVE, default=500, show_default=True,
              help="Tokens per sample for --novelty (the cap, for records).")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.8, show_default=True,
              help="Sampling temperature for --novelty.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed for --novelty.")
@click.option("--seq-len", type=POSITIVE, default=None,
              help="Tokens per window, each read from a zero state (default: the training windows'); "
                   "compare models at the same --seq-len.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--engine", type=click.Choice(["auto", "numpy", "compiled"]), default="auto", show_default=True,
              help="A model folder: numpy starts at once (no TensorFlow); compiled (Keras' network in "
                   "TensorFlow) takes seconds to start, then runs about as fast (faster for large "
                   "vocabularies); auto: numpy up to "
                   f"{EVALUATE_NUMPY_MAX_BYTES:,} bytes of held-out text (and --length "
                   f"{NUMPY_MAX_LENGTH:,} for one --novelty sample, less for more). Losses agree to about "
                   "1e-6; --novelty's samples are the same text. (A .tflite runs in LiteRT, a SavedModel "
                   "in TensorFlow.)")
@CHECKPOINT
@LOOKUP
def evaluate(model, files, novelty_sources, samples, length, temperature, seed, seq_len, as_json, encoding,
             engine, checkpoint, output_dir) -> None:
    """Measure loss, perplexity and bits per character on held-out text, and with --novelty how
    much of the model's text is copied from its training corpus.

    \b
    Example:
      textgen evaluate tinyshakespeare-char held_out.txt --json
      textgen evaluate tinyshakespeare-char --novelty tinyshakespeare.txt
    """
    if not files and not novelty_sources:
        raise TextgenError("give held-out text files to measure, or --novelty CORPUS")
    short = (sources_bytes(files) <= EVALUATE_NUMPY_MAX_BYTES
             and (not novelty_sources or numpy_is_quicker(length, samples)))
    text_model = load_for_engine(model, checkpoint, output_dir, engine, short)
    result = text_model.evaluate(files, encoding=encoding, seq_len=seq_len) if files else {}
    if novelty_sources:
        result["novelty"] = text_model.novelty(novelty_sources, num_samples=samples, length=length,
                                               temperature=temperature, seed=seed, encoding=encoding)
    if as_json:
        click.echo(json.dumps(result))
        return
    unit = "char" if text_model.config.level == "char" else "word"
    if files:
        click.echo(f"loss          {result['loss']:.4f} nats/{unit}")
        click.echo(f"perplexity    {result['perplexity']:.3f}")
        click.echo(f"bits per char {result['bits_per_char']:.4f}")
        click.echo(f"tokens        {result['tokens']:,} ({result['chars']:,} characters)")
        if "records" in result:
            click.echo(f"per record    {result['loss_per_record']:.3f} nats over {result['records']:,} "
                       "records (bits per char count the text's tokens only)")
    if novelty_sources:
        report = result["novelty"]
        click.echo(f"novelty of {samples} samples of {length} {unit}s (temperature {temperature}, "
                   f"seed {seed}) against {report['corpus_tokens']:,} {unit}s of corpus:")
        click.echo(f"longest copied run  {report['longest_copy_tokens']} {unit}s: {report['longest_copy']!r}")
        for n, share in report["copied_ngrams"].items():
            click.echo(f"copied {n}-{unit} runs {share:7.1%} of the generated ones appear in the corpus")
        if "verbatim_records" in report:
            click.echo(f"verbatim records    {report['verbatim_records']} of {samples} "
                       f"({report['verbatim_share']:.0%}) are records of the corpus, whole")

