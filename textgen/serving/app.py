"""The HTTP side of `textgen serve`: a Starlette app speaking OpenAI's completions API, with
Server-Sent Events for streaming, a bearer key, an access log and the playground page.

    GET  /                 the playground (one static page, no CDN)
    GET  /health           ready once the models are loaded; 503 while draining
    GET  /v1/models        the models served (OpenAI's list shape)
    GET  /web/NAME/        a model's web export, when it has one: the model runs in the browser
    POST /v1/completions   OpenAI's completions: prompt(s), max_tokens, temperature, top_p, n, stop,
                           seed, stream, echo; textgen's top_k, repetition_penalty and label (a
                           model of records: each choice is one record, of that label, ending
                           where the model ends it, with finish_reason "stop")
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from textgen.errors import TextgenError
from textgen.generate.priming import prime_ids
from textgen.serving.engine import Engine, Job, Pieces, QueueFull, Sampling
from textgen.serving.models import ServedModel
from textgen.serving.protocol import (
    ClientError,
    Completion,
    Limits,
    chunk_body,
    completion_id,
    now,
    parse_completion,
    usage,
)

RETRY_AFTER_SECONDS = 1


@dataclass(kw_only=True)
class ServerState:
    """What every request reads: the models, the key, the limits; `draining` once shutdown began."""

    models: dict[str, ServedModel]
    api_key: str | None = None
    limits: Limits = field(default_factory=Limits)
    draining: bool = False


def create_app(state: ServerState, *, cors_origins: Sequence[str] = (),
               log: Callable[[str], None] | None = None) -> Starlette:
    """The ASGI app over models already loaded (textgen.serving.models.load_models)."""
    routes = [Route("/", playground, methods=["GET"]), Route("/health", health, methods=["GET"]),
              Route("/v1/models", list_models, methods=["GET"]),
              Route("/v1/completions", completions, methods=["POST"]),
              # web exports: the model runs in the visitor's browser (static files, no key)
              *(Mount(f"/web/{name}", StaticFiles(directory=served.web, html=True))
                for name, served in state.models.items() if served.web is not None)]
    middleware = [Middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                             allow_headers=["Authorization", "Content-Type"])] if cors_origins else []
    if log is not None:
        middleware.insert(0, Middleware(AccessLog, log=log))
    app = Starlette(routes=routes, middleware=middleware, lifespan=_engines_running,
                    exception_handlers={ClientError: client_error, HTTPException: http_error,
                                        Exception: server_error})
    app.state.server = state
    return app


@contextlib.asynccontextmanager
async def _engines_running(app: Starlette) -> AsyncIterator[None]:
    """The engines run while the app does: started with it, stopped once it has drained."""
    models = app.state.server.models.values()
    loop = asyncio.get_running_loop()
    for served in models:
        served.engine.dispatch = loop.call_soon_threadsafe  # one wake-up per chunk, for all its jobs
        served.engine.start()
    try:
        yield
    finally:
        for served in models:
            served.engine.stop()


# -- errors: OpenAI's shape, never a traceback -------------------------------------------------------
async def client_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ClientError)
    return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
    message = {404: f"no such route: {request.method} {request.url.path}",
               405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, exc.detail)
    return JSONResponse(ClientError(message, status=exc.status_code, kind=kind).body(),
                        status_code=exc.status_code, headers=exc.headers)


async def server_error(request: Request, exc: Exception) -> Response:
    return JSONResponse(ClientError("the server failed on this request; see its log",
                                    kind="server_error").body(), status_code=500)


# -- routes --------------------------------------------------------------------------------------
def _state(request: Request) -> ServerState:
    return request.app.state.server


def _authorize(request: Request) -> None:
    key = _state(request).api_key
    if key is None:
        return
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), key.encode()):
        raise ClientError("a valid API key is required: Authorization: Bearer KEY", status=401,
                          code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})


async def playground(request: Request) -> Response:
    page = resources.files("textgen.serving").joinpath("static/playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page)


async def health(request: Request) -> Response:
    state = _state(request)
    body = {"status": "draining" if state.draining else "ok", "auth": state.api_key is not None,
            "models": {name: served.engine.stats() for name, served in state.models.items()}}
    return JSONResponse(body, status_code=503 if state.draining else 200)


async def list_models(request: Request) -> Response:
    _authorize(request)
    data = [{"id": name, "object": "model", "created": served.created, "owned_by": "textgen",
             "kind": served.kind, "level": served.model.config.level,
             "web": f"/web/{name}/" if served.web is not None else None,
             "labels": served.labels}
            for name, served in _state(request).models.items()]
    return JSONResponse({"object": "list", "data": data})


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, refused (413) as soon as it is known to exceed `limit` bytes."""
    too_large = ClientError(f"the body is larger than {limit:,} bytes", status=413, code="request_too_large")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def completions(request: Request) -> Response:
    _authorize(request)
    state = _state(request)
    if state.draining:
        raise ClientError("the server is shutting down", status=503, kind="server_error", code="draining")
    completion = parse_completion(await _body(request, state.limits.max_body_bytes), state.limits)
    served = state.models.get(completion.model)
    if served is None:
        raise ClientError(f"unknown model {completion.model!r}; this server has {', '.join(state.models)}",
                          param="model", code="model_not_found")
    tokenizer = served.model.tokenizer
    if completion.label is not None:
        try:
            prime_ids(tokenizer, "", completion.label)
        except TextgenError as exc:  # a plain model, or a label it does not know
            raise ClientError(str(exc), param="label", code="unknown_label") from None
    for prompt in completion.prompts:
        tokens = len(tokenizer.encode(prompt))
        if tokens > state.limits.max_prompt_tokens:
            raise ClientError(f"the prompt has {tokens:,} tokens; at most {state.limits.max_prompt_tokens:,}",
                              param="prompt", code="prompt_too_long")
    run = _Run(completion, served.engine, request)
    run.submit()
    if completion.stream:
        return StreamingResponse(run.events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    return JSONResponse(await run.whole())


class _Run:
    """One completion request's jobs (one per prompt) on the engine, and what they send back."""

    def __init__(self, completion: Completion, engine: Engine, request: Request):
        self.completion, self.engine, self.request = completion, engine, request
        self.id, self.created = completion_id(), now()
        self.queue: asyncio.Queue[tuple[int, Pieces | BaseException]] = asyncio.Queue()
        seed = completion.seed if completion.seed is not None else secrets.randbelow(2**31)
        sampling = Sampling(completion.temperature, completion.top_k, completion.top_p,
                            completion.repetition_penalty, seed)

        def emitter(index: int) -> Callable[[Pieces | BaseException], None]:
            return lambda event: self.queue.put_nowait((index, event))

        self.jobs = [Job(prompt, completion.n, completion.max_tokens, sampling, completion.stop,
                         emitter(index), label=completion.label)
                     for index, prompt in enumerate(completion.prompts)]

    def submit(self) -> None:
        """All of the request's jobs, or none (429 when the queue is full)."""
        for position, job in enumerate(self.jobs):
            try:
                self.engine.submit(job)
            except QueueFull:
                for queued in self.jobs[:position]:
                    self.engine.cancel(queued)
                raise ClientError("the server is busy: every row is generating and the queue is full; retry "
                                  "shortly", status=429, kind="rate_limit_error", code="queue_full",
                                  headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None

    def cancel(self) -> None:
        for job in self.jobs:
            self.engine.cancel(job)

    async def pieces(self) -> AsyncIterator[tuple[int, Pieces]]:
        """(job index, pieces) until every job is done; cancels what is left if the caller stops."""
        pending = len(self.jobs)
        try:
            while pending:
                index, event = await self.queue.get()
                if isinstance(event, BaseException):
                    raise event
                pending -= event.done
                yield index, event
        finally:
            self.cancel()

    def _note_tokens(self, generated: int) -> None:
        self.request.state.tokens = generated

    async def events(self) -> AsyncIterator[str]:
        """The Server-Sent Events stream: OpenAI's chunks, then (with stream_options.include_usage) the
        usage, then [DONE]. A client that goes away cancels it (Starlette listens for the
        disconnect), which cancels the jobs."""
        c, echoed = self.completion, set()
        totals: dict[int, int] = {}
        try:
            async for index, pieces in self.pieces():
                for row, text in enumerate(pieces.texts):
                    choice = index * c.n + row
                    if c.echo and choice not in echoed:
                        text = c.prompts[index] + text
                        echoed.add(choice)
                    totals[choice] = pieces.tokens[row]
                    if text or pieces.finished[row]:
                        yield event(chunk_body(self.id, self.created, c.model, choice, text,
                                               pieces.finished[row]))
                self._note_tokens(sum(totals.values()))
        except Exception as exc:  # the engine failed: say so in the stream, as OpenAI does
            failure = ClientError(f"generation failed ({exc.__class__.__name__})", kind="server_error")
            yield event(failure.body())
            return
        if c.include_usage:
            yield event({"id": self.id, "object": "text_completion", "created": self.created,
                         "model": c.model, "choices": [],
                         "usage": usage(self._prompt_tokens(), sum(totals.values()))})
        yield "data: [DONE]\n\n"

    def _prompt_tokens(self) -> int:
        return sum(job.prompt_tokens for job in self.jobs)

    async def whole(self) -> dict[str, Any]:
        """The response of a request that does not stream, once every choice is done."""
        c = self.completion
        texts = {i: [c.prompts[i // c.n]] if c.echo else [] for i in range(len(c.prompts) * c.n)}
        reasons: dict[int, str | None] = {}
        totals: dict[int, int] = {}
        async for index, pieces in self.pieces():
            for row, text in enumerate(pieces.texts):
                choice = index * c.n + row
                texts[choice].append(text)
                totals[choice] = pieces.tokens[row]
                reasons[choice] = pieces.finished[row] or reasons.get(choice)
        self._note_tokens(sum(totals.values()))
        choices = [{"text": "".join(parts), "index": i, "logprobs": None, "finish_reason": reasons.get(i)}
                   for i, parts in texts.items()]
        return {"id": self.id, "object": "text_completion", "created": self.created, "model": c.model,
                "choices": choices, "usage": usage(self._prompt_tokens(), sum(totals.values()))}


def event(body: dict[str, Any]) -> str:
    """One Server-Sent Event carrying a JSON object."""
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"


class AccessLog:
    """One line per request once its response is sent: client, method, path, status, tokens, seconds."""

    def __init__(self, app: Any, log: Callable[[str], None]):
        self.app, self.log = app, log

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started, status = time.perf_counter(), 0

        async def sending(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            tokens = scope.get("state", {}).get("tokens", 0)
            self.log(f'{client[0]} "{scope["method"]} {scope["path"]}" {status or 499} {tokens} tokens '
                     f"{time.perf_counter() - started:.3f} s")
