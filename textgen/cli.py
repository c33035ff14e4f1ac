"""The `textgen` command line: each command parses its options, calls the library, reports.

TensorFlow is imported inside the commands, never at module level, so `--help` and argument
errors answer at once. User mistakes become one `textgen: error: ...` line and exit code 2.
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from pathlib import Path

import click

from textgen.config import CELLS, LEVELS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, ModelConfig, TrainConfig
from textgen.errors import TextgenError, TextgenNote, TextgenWarning
from textgen.presets import CHOICES as PRESET_CHOICES

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

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


def _unescape(text: str) -> str:
    """Let `--stop '\n\n'` mean two line breaks, as users type it in a shell."""
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _start_tensorflow() -> None:
    """Import TensorFlow, hiding its C++ start-up chatter unless --verbose.

    TensorFlow writes those lines straight to file descriptor 2 while it is imported, before any
    log setting applies, so stderr is pointed at /dev/null for the import only. Python
    exceptions are raised after it is restored, so a broken install still shows its error.
    """
    ctx = click.get_current_context(silent=True)
    verbose = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
    if verbose or "tensorflow" in sys.modules:
        import tensorflow
        return
    from textgen.quiet import native_stderr_silenced

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with native_stderr_silenced():
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    from absl import logging as absl_logging

    absl_logging.set_verbosity(absl_logging.ERROR)  # e.g. TFDS's notes about its cache folders


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log messages.")
@click.version_option(package_name="keras-textgen", prog_name="textgen")
@click.pass_context
def cli(ctx: click.Context, verbose: bool) -> None:
    """Train recurrent language models on your own text and generate from them.

    \b
    Example:
      textgen train corpus.txt --epochs 10
      textgen sample corpus-char --prime "ROMEO:" --temperature 0.8
      textgen evaluate corpus-char held_out.txt
    """
    ctx.obj = {"verbose": verbose}


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--level", type=click.Choice(["char", "word"]), default="char", show_default=True,
              help="Tokens are characters or words (words keep punctuation and line breaks).")
@click.option("--preset", type=click.Choice(PRESET_CHOICES), default="auto", show_default=True,
              help="Network size and learning rate: tiny, small, medium, large, xlarge (see the README for "
                   "what each reaches), or auto: the largest that --time-limit lets read the text "
                   "often enough (small without a time limit). Options marked 'preset' override it.")
@click.option("--cell", type=click.Choice(["lstm", "gru", "rnn"]), default=None,
              help="Recurrent layer type (Keras LSTM, GRU, SimpleRNN). [default: preset]")
@click.option("--layers", type=POSITIVE, default=None, help="[default: preset]")
@click.option("--units", type=POSITIVE, default=None, help="Units per layer. [default: preset]")
@click.option("--embedding-dim", type=POSITIVE, default=None, help="[default: preset]")
@click.option("--dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Dropout after each recurrent layer. [default: preset]")
@click.option("--embedding-dropout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Dropout on the embedded tokens (as PyTorch's word_language_model). [default: 0]")
@click.option("--tie-weights/--no-tie-weights", default=None,
              help="Score tokens with the embedding matrix (needs --embedding-dim equal to --units). "
                   "[default: preset: on for word models]")
@click.option("--seq-len", type=POSITIVE, default=None,
              help="Tokens per training window. [default: 100 for char, 35 for word]")
@click.option("--batch-size", type=POSITIVE, default=None,
              help="Windows per training step. [default: 64 for char, 20 for word]")
@click.option("--epochs", type=POSITIVE, default=20, show_default=True)
@click.option("--steps-per-epoch", type=POSITIVE, default=None,
              help="An epoch is this many steps over the text repeated endlessly (default: one pass).")
@click.option("--carry-state/--no-carry-state", default=TrainConfig.carry_state, show_default=True,
              help="Each batch continues the text of the one before and starts from its final "
                   "recurrent state (truncated backpropagation through time), instead of shuffled "
                   "windows that start from zeros.")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help="The peak learning rate. [default: preset]")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="wsd", show_default=True,
              help="wsd: warm up, hold --lr, then decay to a tenth of it over the last quarter of the "
                   "budget (epochs, --max-steps or --time-limit, whichever ends first); cosine: decay "
                   "over the whole budget; constant: --lr throughout.")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None,
              help="adamw (Adam with --weight-decay), or sgd: plain SGD, whose --lr is of another scale "
                   "(PyTorch's word_language_model trains at 20 with --clipnorm 0.25). "
                   "[default: preset: adamw for char, sgd for word]")
@click.option("--clipnorm", type=click.FloatRange(0), default=None,
              help="Gradient clipping norm (0 turns clipping off): each weight's gradient with adamw, "
                   "all of them together with sgd. [default: 1 with adamw, 0.25 with sgd]")
@click.option("--weight-decay", type=click.FloatRange(0), default=None,
              help="AdamW's decoupled weight decay (0: plain Adam; sgd has none). [default: preset: "
                   "0.2 for char large, 0.1 otherwise]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-vocab", type=click.IntRange(min=2), default=20_000, show_default=True,
              help="Largest vocabulary; rarer tokens become <unk>.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=0.1, show_default=True, help="Tail of the corpus held out for validation.")
@click.option("--val-file", type=click.Path(dir_okay=False), default=None,
              help="Validate on this file instead of a held-out tail.")
@click.option("--encoding", default="utf-8", show_default=True, help="Encoding of the text files.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: mixed_float16 on CUDA GPUs with tensor cores, float32_bf16_matmul on CPUs that "
                   "multiply bfloat16 matrices fast (AMX), float32 elsewhere.")
@click.option("--xla/--no-xla", default=False, show_default=True,
              help="Compile the training step with XLA (on CPUs it speeds LSTM up a little and slows "
                   "GRU down; on GPUs, Keras keeps cuDNN layers out of XLA).")
@click.option("--max-steps", type=POSITIVE, default=None, help="Stop after this many steps, then save.")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), default=None,
              help="Stop after this many seconds of training, then save.")
@click.option("--strategy", type=click.Choice(["auto", "one-device", "mirrored", "multi-worker"]),
              default="auto", show_default=True,
              help="tf.distribute strategy. auto: mirrored over several GPUs (or --cpu-devices), else "
                   "one device; multi-worker reads TF_CONFIG. --batch-size is the global batch.")
@click.option("--cpu-devices", type=POSITIVE, default=None,
              help="Split the CPU into N logical devices, for --strategy mirrored without GPUs.")
@click.option("--backup-every", type=POSITIVE, default=None,
              help="Back the run up every N steps for --resume (default: after each epoch, and "
                   "every 10 minutes within one).")
@click.option("--name", default=None, help="Model folder name (default: from the corpus and level).")
@click.option("--output-dir", default="saved_models", show_default=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Overwrite an existing model of the same name.")
@click.option("--resume", is_flag=True, help="Continue an unfinished run of the same name.")
@click.option("--tfds-data-dir", default=None, help="TensorFlow Datasets data folder.")
@click.option("--tfds-manual-dir", default=None,
              help="Folder holding the dataset's files, for machines without internet "
                   "(tiny_shakespeare: input.txt).")
@click.option("--samples/--no-samples", default=True, show_default=True,
              help="Print a short sample after each epoch.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--cache-ids", is_flag=True,
              help="Keep the vocabulary and the tokenized text files in OUTPUT_DIR/.ids-cache, so "
                   "re-runs on the same files skip tokenizing (4 bytes per token, 8 for word level).")
@click.option("--init-from", metavar="MODEL", default=None,
              help="Fine-tune: start from this trained model (a folder, or a name in --output-dir), "
                   "keeping its architecture, level and vocabulary; the optimizer starts fresh and "
                   "the training settings are this run's.")
@click.option("--init-checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True,
              help="Which of the base model's weights --init-from starts from.")
@click.option("--extend-vocab", is_flag=True,
              help="With --init-from: add the new corpus's tokens that the base vocabulary lacks (up to "
                   "--max-vocab) instead of reading them as <unk>.")
@click.pass_context
def train(ctx, sources, level, preset, cell, layers, units, embedding_dim, dropout, embedding_dropout,
          tie_weights, seq_len, batch_size, epochs, steps_per_epoch, carry_state, lr, lr_schedule, optimizer,
          clipnorm, weight_decay, seed,
          max_vocab, val_fraction, val_file, encoding, precision, xla, max_steps, time_limit, strategy,
          cpu_devices, backup_every,
          name, output_dir, force, resume, tfds_data_dir, tfds_manual_dir, samples, quiet, cache_ids,
          init_from, init_checkpoint, extend_vocab) -> None:
    """Train a model on text files, folders of .txt files, or tfds:NAME.

    \b
    Example:
      textgen train corpus.txt --cell lstm --epochs 10 --time-limit 600
      textgen train tfds:tiny_shakespeare --level word
      textgen train new.txt --init-from corpus-char --lr 5e-4 --name new-char
    """
    if init_from is None and (extend_vocab or _given(ctx, "init_checkpoint")):
        raise TextgenError("--extend-vocab and --init-checkpoint go with --init-from MODEL")
    _start_tensorflow()
    from textgen.finetune import InitOptions
    from textgen.idcache import CACHE_DIR
    from textgen.training import DataOptions, ModelOptions, RunOptions
    from textgen.training import train as run_training

    fixed = {"level": level, "max_vocab": max_vocab, "cell": cell, "layers": layers, "units": units,
             "embedding_dim": embedding_dim, "tie_weights": tie_weights}  # a base model fixes these
    init = None if init_from is None else InitOptions(
        init_from, init_checkpoint, extend_vocab, {k: v for k, v in fixed.items() if _given(ctx, k)})

    run_training(
        DataOptions(list(sources), level, max_vocab, encoding, val_file, tfds_data_dir, tfds_manual_dir,
                    str(Path(output_dir) / CACHE_DIR) if cache_ids else None),
        ModelOptions(cell, layers, units, embedding_dim, dropout, tie_weights, preset, embedding_dropout),
        TrainConfig(seq_len=seq_len, batch_size=batch_size, epochs=epochs, carry_state=carry_state, lr=lr,
                    lr_schedule=lr_schedule, optimizer=optimizer, clipnorm=clipnorm,
                    weight_decay=weight_decay, seed=seed,
                    precision=precision, xla=xla, val_fraction=val_fraction, max_steps=max_steps,
                    time_limit=time_limit, steps_per_epoch=steps_per_epoch, backup_every=backup_every,
                    strategy=strategy, cpu_devices=cpu_devices),
        RunOptions(name, output_dir, force, resume, 0 if quiet else 1, samples,
                   log=lambda message: click.echo(message)),
        init,
    )


def _given(ctx: click.Context, name: str) -> bool:
    """Whether the user set an option, rather than leaving it to its default (or a default map)."""
    return ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT,
                                                  click.core.ParameterSource.DEFAULT_MAP)


def _load(model: str, checkpoint: str, output_dir: str):
    _start_tensorflow()
    from textgen.api import load

    return load(model, checkpoint=checkpoint, output_dir=output_dir)


@cli.command()
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
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--interactive", "-i", is_flag=True,
              help="A prompt loop: type a prime, get a continuation; :help lists commands.")
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
def sample(model, prime, length, temperature, top_k, top_p, num_samples, stop, repetition_penalty,
           seed, output, checkpoint, interactive, output_dir) -> None:
    """Generate text from a trained model.

    \b
    Example:
      textgen sample tinyshakespeare-char --prime "ROMEO:" --length 300 --seed 1
    """
    text_model = _load(model, checkpoint, output_dir)
    if interactive:
        _interactive(text_model, length, temperature, top_k, top_p, repetition_penalty, seed, stop)
        return
    options = {"temperature": temperature, "top_k": top_k, "top_p": top_p,
               "repetition_penalty": repetition_penalty, "stop": [_unescape(s) for s in stop],
               "seed": seed}
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
        from textgen.artifacts import write_text_atomic

        write_text_atomic(Path(output), body if body.endswith("\n") else body + "\n")
        click.echo(f"Wrote {num_samples} sample(s) to {output}", err=True)


def _interactive(text_model, length, temperature, top_k, top_p, repetition_penalty, seed, stop) -> None:
    from textgen import interactive

    def write(text: str) -> None:
        click.echo(text, nl=False)
        sys.stdout.flush()

    def read_line() -> str | None:
        try:
            line = sys.stdin.readline()
        except KeyboardInterrupt:
            return None
        return line or None

    settings = interactive.Settings(length, temperature, top_k, top_p, repetition_penalty, seed,
                                    [_unescape(s) for s in stop])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # unknown prime pieces are simply skipped here
        try:
            interactive.run(text_model, settings, read_line, write)
        except KeyboardInterrupt:  # Ctrl-C while generating ends the session cleanly
            write("\n")


@cli.command()
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
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
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
    text_model = _load(model, checkpoint, output_dir)
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


@cli.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["all", "savedmodel", "tflite"]), default="all",
              show_default=True,
              help="What to write: a SavedModel for servers, a .tflite for phones, or both.")
@click.option("--quantize", type=click.Choice(["none", "dynamic", "float16"]), default="none",
              show_default=True, help="Smaller TFLite weights: dynamic (int8) or float16.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Export folder (default: export/ inside the model folder).")
@click.option("--force", is_flag=True, help="Replace an existing export folder.")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True)
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
def export(model, fmt, quantize, output, force, checkpoint, output_dir) -> None:
    """Export a model for TensorFlow Serving (SavedModel) and for phones (TFLite), each checked
    against the Keras model before it is written.

    \b
    Example:
      textgen export tinyshakespeare-char --quantize dynamic
      textgen sample saved_models/tinyshakespeare-char/export/model.tflite --prime "ROMEO:"
    """
    text_model = _load(model, checkpoint, output_dir)
    result = text_model.export(output, format=fmt, quantize=quantize, force=force)
    sizes: dict[str, int] = {}
    for name, size in result.files.items():
        top = name.split("/")[0] + ("/" if "/" in name else "")
        sizes[top] = sizes.get(top, 0) + size
    for name, size in sizes.items():
        click.echo(f"  {name:<16} {size / 1e6:9.3f} MB")
    for name in ("saved_model", "tflite"):
        if name in result.parity:
            check = result.parity[name]
            greedy = "identical" if check["greedy_text_identical"] else "differs"
            quantized = f" ({check['quantization']} quantization)" if check["quantization"] != "none" else ""
            click.echo(f"{name}: max |logit difference| {check['max_abs_logit_diff']:.1e} over "
                       f"{result.parity['steps']} steps; greedy text {greedy}{quantized}")
    click.echo(f"Exported to {result.path}")


@cli.command("list")
@click.argument("folder", default="saved_models", type=click.Path(file_okay=False))
def list_command(folder) -> None:
    """List the models in a folder (default: saved_models).

    \b
    Example:
      textgen list saved_models
    """
    from textgen.catalog import list_models, list_table

    models, unfinished, unreadable = list_models(Path(folder))
    if models:
        click.echo("\n".join(list_table(models, unfinished)))
    else:
        click.echo(f"No models in {folder}.")
    for name in sorted(set(unfinished) - {m.name for m in models}):
        click.echo(f"unfinished run: {name} (never saved; continue it with textgen train ... --resume "
                   f"--name {name})")
    for name in unreadable:
        click.echo(f"unreadable: {name}", err=True)


@cli.command()
@click.argument("model")
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
def info(model, output_dir) -> None:
    """Describe a model: architecture, vocabulary, corpus, training and its results.

    \b
    Example:
      textgen info tinyshakespeare-char
    """
    from textgen.artifacts import resolve_model_dir
    from textgen.catalog import info_lines, summarize

    click.echo("\n".join(info_lines(summarize(resolve_model_dir(model, output_dir)))))


@cli.command()
@click.argument("model")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the PNG (default: training_curves.png in the model folder).")
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
def plot(model, output, output_dir) -> None:
    """Redraw a model's training curves (loss, validation loss, bits per character).

    \b
    Example:
      textgen plot tinyshakespeare-char
    """
    from textgen.artifacts import resolve_model_dir
    from textgen.catalog import summarize
    from textgen.plotting import CURVES_FILE, plot_history

    summary = summarize(resolve_model_dir(model, output_dir))
    path = plot_history(summary.history, summary.name, Path(output) if output else summary.path / CURVES_FILE)
    click.echo(f"Wrote {path}")


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option("--trials", type=POSITIVE, default=10, show_default=True, help="Models to train and compare.")
@click.option("--tuner", type=click.Choice(["random", "hyperband"]), default="random", show_default=True,
              help="KerasTuner's random search, or Hyperband: many short trials, the best trained longer.")
@click.option("--cells", default=",".join(CELLS), show_default=True,
              help="Cells to try, comma-separated.")
@click.option("--layers", type=Span(), default=None, help="Layers (default 1:3 for char, 1:2 for word).")
@click.option("--units", type=Span(), default=None,
              help="Units per layer, tried as MIN, 2*MIN, 4*MIN ... up to MAX (default 64:512 for char, "
                   "128:512 for word).")
@click.option("--dropout", type=Span(), default=None,
              help="Dropout after each layer (default 0:0.3 for char, 0:0.5 for word).")
@click.option("--lr", type=Span(), default=None,
              help="Peak learning rate, drawn on a log scale: AdamW's for char (default 0.0005:0.01), "
                   "SGD's for word (default 5:40).")
@click.option("--max-steps", type=POSITIVE, default=None,
              help="Training steps of each trial (with Hyperband: of its longest trials).")
@click.option("--time-limit", type=click.FloatRange(0, min_open=True), default=None,
              help="Seconds of training for the whole search, shared among its trials (validating and "
                   "saving each trial come on top).")
@click.option("--level", type=click.Choice(LEVELS), default="char", show_default=True)
@click.option("--max-vocab", type=click.IntRange(min=2), default=20_000, show_default=True)
@click.option("--embedding-dim", type=POSITIVE, default=ModelConfig.embedding_dim, show_default=True,
              help="Not searched: every trial has it.")
@click.option("--seq-len", type=POSITIVE, default=None, help="[default: 100 for char, 35 for word]")
@click.option("--batch-size", type=POSITIVE, default=None, help="[default: 64 for char, 20 for word]")
@click.option("--epochs", type=POSITIVE, default=TrainConfig.epochs, show_default=True,
              help="Most epochs of a trial (it also stops early, as train does).")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default=TrainConfig.lr_schedule,
              show_default=True, help="As for train, shaped by each trial's budget.")
@click.option("--clipnorm", type=click.FloatRange(0), default=None,
              help="As for train (0: off). [default: 1 for char (adamw), 0.25 for word (sgd)]")
@click.option("--seed", type=int, default=TrainConfig.seed, show_default=True,
              help="Seeds the choice of trials and every trial's training.")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              default=TrainConfig.val_fraction, show_default=True)
@click.option("--val-file", type=click.Path(dir_okay=False), default=None)
@click.option("--encoding", default="utf-8", show_default=True)
@click.option("--precision", type=click.Choice(PRECISIONS), default=TrainConfig.precision, show_default=True)
@click.option("--name", default=None, help="Model folder name (default: from the corpus and level, -tuned).")
@click.option("--output-dir", default="saved_models", show_default=True, type=click.Path(file_okay=False))
@click.option("--force", is_flag=True, help="Replace an existing model; start an unfinished search anew.")
@click.option("--resume", is_flag=True, help="Continue an interrupted search of the same name.")
@click.option("--tfds-data-dir", default=None)
@click.option("--tfds-manual-dir", default=None)
@click.option("--cache-ids", is_flag=True, help="As for train.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def tune(sources, trials, tuner, cells, layers, units, dropout, lr, max_steps, time_limit, level, max_vocab,
         embedding_dim, seq_len, batch_size, epochs, lr_schedule, clipnorm, seed, val_fraction, val_file,
         encoding, precision, name, output_dir, force, resume, tfds_data_dir, tfds_manual_dir, cache_ids,
         quiet) -> None:
    """Search for the best cell, layers, units, dropout and learning rate, and save the best model.

    \b
    Example:
      textgen tune corpus.txt --trials 20 --time-limit 3600
      textgen tune corpus.txt --tuner hyperband --trials 23 --max-steps 2000 --cells gru,lstm
    """
    _start_tensorflow()
    from textgen.idcache import CACHE_DIR
    from textgen.training import DataOptions, RunOptions
    from textgen.tuning import SearchOptions, SearchSpace
    from textgen.tuning import tune as run_search

    run_search(
        DataOptions(list(sources), level, max_vocab, encoding, val_file, tfds_data_dir, tfds_manual_dir,
                    str(Path(output_dir) / CACHE_DIR) if cache_ids else None),
        SearchSpace.for_level(level, cells=[c.strip() for c in cells.split(",") if c.strip()], layers=layers,
                              units=units, dropout=dropout, lr=lr, embedding_dim=embedding_dim),
        TrainConfig(seq_len=seq_len, batch_size=batch_size, epochs=epochs, lr_schedule=lr_schedule,
                    clipnorm=clipnorm, seed=seed, precision=precision, val_fraction=val_fraction),
        SearchOptions(trials, tuner, max_steps, time_limit),
        RunOptions(name, output_dir, force, resume, 0 if quiet else 1, log=click.echo),
    )


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Our warnings as one plain line; anything else as Python shows it."""
    if issubclass(category, TextgenWarning):
        label = "note" if issubclass(category, TextgenNote) else "warning"
        click.echo(f"textgen: {label}: {message}", err=True)
    else:
        _python_showwarning(message, category, filename, lineno, file, line)


_python_showwarning = warnings.showwarning


def main(argv: list[str] | None = None) -> int:
    """Entry point: one clean line for user errors (exit 2), 130 for Ctrl-C."""
    warnings.showwarning = _show_warning
    try:
        cli.main(args=argv, prog_name="textgen", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return 0
    except click.ClickException as exc:
        click.echo(f"textgen: error: {exc.format_message()}", err=True)
        return EXIT_USAGE
    except TextgenError as exc:
        click.echo(f"textgen: error: {exc}", err=True)
        return EXIT_USAGE
    except OSError as exc:  # a folder that cannot be created, a full disk, ...
        where = f": {exc.filename}" if exc.filename else ""
        click.echo(f"textgen: error: {exc.strerror or exc}{where}", err=True)
        return EXIT_USAGE
    except (KeyboardInterrupt, click.exceptions.Abort):
        click.echo("textgen: interrupted", err=True)
        return EXIT_INTERRUPTED
    finally:
        warnings.showwarning = _python_showwarning
    return 0


if __name__ == "__main__":
    sys.exit(main())
