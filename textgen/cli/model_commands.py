"""`textgen export`, `list`, `info` and `plot`: what is done with a model folder once trained."""

from __future__ import annotations

from pathlib import Path

import click

from textgen.cli.generate_commands import CHECKPOINT, LOOKUP, load
from textgen.store.artifacts import resolve_model_dir
from textgen.store.catalog import info_lines, list_models, list_table, summarize
from textgen.store.plotting import CURVES_FILE, plot_history


@click.command()
@click.argument("model")
@click.option("--format", "fmt", type=click.Choice(["all", "savedmodel", "tflite", "web"]), default="all",
              show_default=True,
              help="What to write: a SavedModel for servers, a .tflite for phones, a web folder in which the "
                   "model runs in the browser, or all three.")
@click.option("--quantize", type=click.Choice(["none", "dynamic", "float16"]), default="none",
              show_default=True, help="Smaller TFLite weights: dynamic (int8) or float16.")
@click.option("--output", type=click.Path(file_okay=False), default=None,
              help="Export folder (default: export/ inside the model folder).")
@click.option("--force", is_flag=True, help="Replace an existing export folder.")
@CHECKPOINT
@LOOKUP
def export(model, fmt, quantize, output, force, checkpoint, output_dir) -> None:
    """Export a model for TensorFlow Serving (SavedModel), for phones (TFLite) and for the browser
    (a web folder), each checked against the Keras model before it is written.

    \b
    Example:
      textgen export tinyshakespeare-char --quantize dynamic
      textgen sample saved_models/tinyshakespeare-char/export/model.tflite --prime "ROMEO:"
    """
    text_model = load(model, checkpoint, output_dir)
    result = text_model.export(output, format=fmt, quantize=quantize, force=force)
    sizes: dict[str, int] = {}
    for name, size in result.files.items():
        top = name.split("/")[0] + ("/" if "/" in name else "")
        sizes[top] = sizes.get(top, 0) + size
    for name, size in sizes.items():
        click.echo(f"  {name:<16} {size / 1e6:9.3f} MB")
    for name in ("saved_model", "tflite", "web"):
        if name in result.parity:
            check = result.parity[name]
            greedy = "identical" if check["greedy_text_identical"] else "differs"
            quantized = f" ({check['quantization']} quantization)" if check["quantization"] != "none" else ""
            click.echo(f"{name}: max |logit difference| {check['max_abs_logit_diff']:.1e} over "
                       f"{result.parity['steps']} steps; greedy text {greedy}{quantized}")
    click.echo(f"Exported to {result.path}")


@click.command("list")
@click.argument("folder", default="saved_models", type=click.Path(file_okay=False))
def list_command(folder) -> None:
    """List the models in a folder (default: saved_models).

    \b
    Example:
      textgen list saved_models
    """
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


@click.command()
@click.argument("model")
@LOOKUP
def info(model, output_dir) -> None:
    """Describe a model: architecture, vocabulary, corpus, training and its results.

    \b
    Example:
      textgen info tinyshakespeare-char
    """
    click.echo("\n".join(info_lines(summarize(resolve_model_dir(model, output_dir)))))


@click.command()
@click.argument("model")
@click.option("--output", type=click.Path(dir_okay=False), default=None,
              help="Where to write the PNG (default: training_curves.png in the model folder).")
@LOOKUP
def plot(model, output, output_dir) -> None:
    """Redraw a model's training curves (loss, validation loss, bits per character).

    \b
    Example:
      textgen plot tinyshakespeare-char
    """
    summary = summarize(resolve_model_dir(model, output_dir))
    path = plot_history(summary.history, summary.name, Path(output) if output else summary.path / CURVES_FILE)
    click.echo(f"Wrote {path}")
