"""`textgen serve`: an OpenAI-compatible HTTP server with continuous batching, and a playground."""

from __future__ import annotations

import click

from textgen.cli.params import POSITIVE, start_tensorflow


@click.command()
@click.argument("models", nargs=-1, required=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; only with --api-key, behind TLS).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on (0: any free port, printed at start).")
@click.option("--api-key", envvar="TEXTGEN_API_KEY", default=None,
              help="Require `Authorization: Bearer KEY` on the API. [env: TEXTGEN_API_KEY]")
@click.option("--max-batch", type=POSITIVE, default=64, show_default=True,
              help="Rows (choices) generated together; requests beyond them wait in the queue.")
@click.option("--max-queue", type=click.IntRange(min=0), default=256, show_default=True,
              help="Requests that may wait for rows; beyond them, 429 with Retry-After.")
@click.option("--max-tokens", type=POSITIVE, default=2048, show_default=True,
              help="Most tokens one choice may ask for.")
@click.option("--max-prompt-tokens", type=POSITIVE, default=4096, show_default=True,
              help="Longest prompt, in tokens.")
@click.option("--max-n", type=POSITIVE, default=None,
              help="Most choices per request (prompts times n). [default: 16, or --max-batch if fewer]")
@click.option("--max-body-bytes", type=POSITIVE, default=1 << 20, show_default=True,
              help="Largest request body; beyond it, 413.")
@click.option("--cors-origin", "cors_origins", multiple=True,
              help="Let web pages from this origin call the API (repeatable; off by default).")
@click.option("--drain-seconds", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM or Ctrl-C, how long requests in flight may take to finish.")
@click.option("--quiet", is_flag=True, help="No access log (one line per request).")
@click.option("--output-dir", default="saved_models", show_default=True,
              help="Where model names are looked up.")
def serve(models, host, port, api_key, max_batch, max_queue, max_tokens, max_prompt_tokens, max_n,
          max_body_bytes, cors_origins, drain_seconds, quiet, output_dir) -> None:
    """Serve models over HTTP: OpenAI's /v1/completions (streaming too), /v1/models, /health, and a
    playground page at /. MODEL is as `sample` takes it (a model folder or name, a .tflite file or
    a SavedModel folder); NAME=MODEL names it.

    \b
    Example:
      textgen serve tinyshakespeare-char
      curl localhost:8000/v1/completions -H 'Content-Type: application/json' \\
        -d '{"model": "tinyshakespeare-char", "prompt": "ROMEO:", "max_tokens": 200, "seed": 1}'
    """
    start_tensorflow()
    from textgen.api import serve as run_server
    from textgen.serving.protocol import Limits

    run_server(list(models), host=host, port=port, api_key=api_key, output_dir=output_dir,
               max_batch=max_batch, max_queue=max_queue, cors_origins=cors_origins,
               drain_seconds=drain_seconds,
               limits=Limits(max_tokens=max_tokens, max_prompt_tokens=max_prompt_tokens,
                             max_n=max_n or min(Limits.max_n, max_batch),
                             max_body_bytes=max_body_bytes),
               log=None if quiet else lambda line: click.echo(line, err=True))
