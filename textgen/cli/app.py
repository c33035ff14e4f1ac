"""The `textgen` command line: the command group, and how it ends — one `textgen: error: ...` line
and exit code 2 for a user mistake, 130 for Ctrl-C, never a traceback for either.

TensorFlow is imported inside the commands that need it, never at module level, so `--help` and
argument errors answer at once.
"""

from __future__ import annotations

import sys
import warnings

import click

from textgen.cli.generate_commands import evaluate, sample
from textgen.cli.model_commands import export, info, list_command, plot
from textgen.cli.serve_command import serve
from textgen.cli.train_commands import train, tune
from textgen.errors import TextgenError, TextgenNote, TextgenWarning

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


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


for command in (train, sample, evaluate, export, list_command, info, plot, tune, serve):
    cli.add_command(command)


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
