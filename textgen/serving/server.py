"""`textgen serve`: load the models, open the port, serve until SIGTERM or Ctrl-C, then drain.

On either signal the server stops accepting connections, lets the requests in flight finish
within `drain_seconds`, stops the engines and returns (the command exits 0).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import uvicorn

from textgen.errors import TextgenError
from textgen.serving.app import ServerState, create_app
from textgen.serving.models import load_models
from textgen.serving.protocol import Limits

API_KEY_VARIABLE = "TEXTGEN_API_KEY"


class _DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the app when shutdown begins (new completions then get 503)."""

    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state

    def handle_exit(self, sig: int, frame: Any) -> None:
        self.state.draining = True
        super().handle_exit(sig, frame)


@contextlib.contextmanager
def _signals_end_quietly() -> Iterator[None]:
    """uvicorn raises the signal it caught again once it has shut down; here that ends the serve
    call normally (exit 0) instead of killing the process or raising KeyboardInterrupt."""
    try:
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread: uvicorn installs nothing either
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def serve(models: Sequence[str], *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          output_dir: str = "saved_models", max_batch: int = 64, max_queue: int = 256,
          limits: Limits | None = None, cors_origins: Sequence[str] = (), drain_seconds: float = 30.0,
          log: Callable[[str], None] | None = None) -> None:
    """Serve `models` (model folders or names, `.tflite` files, SavedModel folders; `NAME=MODEL` names
    one) over HTTP until SIGTERM or Ctrl-C. `log` receives one line per request (None: quiet)."""
    limits = limits or Limits()
    _check(max_batch, max_queue, limits, drain_seconds)
    api_key = api_key if api_key is not None else os.environ.get(API_KEY_VARIABLE) or None
    state = ServerState(models=load_models(list(models), output_dir=output_dir, max_batch=max_batch,
                                           max_queue=max_queue),
                        api_key=api_key, limits=limits)
    app = create_app(state, cors_origins=cors_origins, log=log)
    _settle_memory()
    listening = _listen(host, port)  # before uvicorn: a taken port is one clear error
    config = uvicorn.Config(app, access_log=False, log_level="warning",
                            timeout_graceful_shutdown=drain_seconds)
    server = _DrainingServer(config, state)
    say = log or (lambda message: None)
    say(f"Serving {', '.join(state.models)} at http://{_shown(host)}:{listening.getsockname()[1]} "
        "(playground at /, API at /v1" + (", key required" if api_key else "") + "); Ctrl-C stops.")
    with _signals_end_quietly():
        server.run(sockets=[listening])
    say("Stopped.")


def _settle_memory() -> None:
    """Collect what loading left in cycles, then freeze the rest (the models, their compiled
    functions), which lives as long as the server: a full collection pauses every stream, and
    walking those objects had made each one take about 120 ms (bench/RESULTS.md, "Serving")."""
    gc.collect()
    gc.freeze()


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that a taken port is one clear error. Its protocol is
    named: asyncio sets TCP_NODELAY only on connections whose socket says IPPROTO_TCP, and without
    it each response's first event waited for the client's delayed ACK of the headers (about
    40 ms; bench/RESULTS.md, "Serving")."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listening.bind((host, port))
    except OSError as exc:
        listening.close()
        raise TextgenError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    listening.listen(2048)
    listening.setblocking(False)
    return listening


def _shown(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _check(max_batch: int, max_queue: int, limits: Limits, drain_seconds: float) -> None:
    if max_batch < 1 or max_queue < 0 or drain_seconds < 0:
        raise TextgenError("max-batch must be at least 1, max-queue and drain-seconds at least 0")
    if limits.max_n > max_batch:
        raise TextgenError(f"--max-n {limits.max_n} exceeds --max-batch {max_batch}: such a request could "
                           "never start")

