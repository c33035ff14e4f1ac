"""`textgen sample` (and its interactive loop) and `textgen evaluate`: load a model, call its API."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import click

from textgen.cli import interactive
from textgen.cli.params import NON_NEGATIVE, POSITIVE, TemperatureList, start_tensorflow, unescape
from textgen.errors import TextgenError
from textgen.store.artifacts import write_text_atomic

CHECKPOINT = click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best",
                          show_default=True)
LOOKUP = click.option("--output-dir", default="saved_models", show_default=True,
                      help="Where model names are looked up.")


def load(model: str, checkpoint: str, output_dir: str) -> Any:
    start_tensorflow()
    from textgen.api import load as load_model

    return load_model(model, checkpoint=checkpoint, output_dir=output_dir)


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
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the text to this file instead of the screen.")
@CHECKPOINT
@click.option("--interactive", "-i", "prompt_loop", is_flag=True,
              help="A prompt loop: type a prime, get a continuation; :help lists commands.")
@LOOKUP
def sample(model, prime, length, temperature, top_k, top_p, num_samples, stop, repetition_penalty,
           seed, output, checkpoint, prompt_loop, output_dir) -> None:
    """Generate text from a trained model.

    \b
    Example:
      textgen sample tinyshakespeare-char --prime "ROMEO:" --length 300 --seed 1
    """
    text_model = load(model, checkpoint, output_dir)
    stops = [unescape(s) for s in stop]
    if prompt_loop:
        _prompt_loop(text_model, interactive.Settings(length, temperature, top_k, top_p, repetition_penalty,
                                                      seed, stops))
        return
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "stop": stops, "seed": seed}
    if num_samples == 1 and output is None:  # stream to the screen as it is generated
        stream = text_model.stream(prime, length, **options)
        click.echo(prime + next(stream)[0], nl=False)
        for pieces in stream:
            click.echo(pieces[0], nl=False)
        click.echo()
        return
    texts = text_model.generate_many(prime, length, num_samples=num_samples, **options)
    body = texts[0] if num_samples == 1 else "".join(
        f"=== sample {i + 1} ===\n{text}\n" for i, text in enumerate(texts))
    if output is None:
        click.echo(body)
    else:
        write_text_atomic(Path(output), body if body.endswith("\n") else body + "\n")
        click.echo(f"Wrote {num_samples} sample(s) to {output}", err=True)


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
@click.option("--samples", type=POSITIVE, default=5, show_default=True, help="Samples for --novelty.")
@click.option("--length", type=POSITIVE, default=500, show_default=True,
              help="Tokens per sample for --novelty.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.8, show_default=True,
              help="Sampling temperature for --novelty.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed for --novelty.")
@click.option("--seq-len", type=POSITIVE, default=None,
              help="Tokens per window, each read from a zero state (default: the training windows'); "
                   "compare models at the same --seq-len.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--encoding", default="utf-8", show_default=True)
@CHECKPOINT
@LOOKUP
def evaluate(model, files, novelty_sources, samples, length, temperature, seed, seq_len, as_json, encoding,
             checkpoint, output_dir) -> None:
    """Measure loss, perplexity and bits per character on held-out text, and with --novelty how
    much of the model's text is copied from its training corpus.

    \b
    Example:
      textgen evaluate tinyshakespeare-char held_out.txt --json
      textgen evaluate tinyshakespeare-char --novelty tinyshakespeare.txt
    """
    if not files and not novelty_sources:
        raise TextgenError("give held-out text files to measure, or --novelty CORPUS")
    text_model = load(model, checkpoint, output_dir)
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
    if novelty_sources:
        report = result["novelty"]
        click.echo(f"novelty of {samples} samples of {length} {unit}s (temperature {temperature}, "
                   f"seed {seed}) against {report['corpus_tokens']:,} {unit}s of corpus:")
        click.echo(f"longest copied run  {report['longest_copy_tokens']} {unit}s: {report['longest_copy']!r}")
        for n, share in report["copied_ngrams"].items():
            click.echo(f"copied {n}-{unit} runs {share:7.1%} of the generated ones appear in the corpus")
