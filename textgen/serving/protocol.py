"""The OpenAI completions protocol as textgen speaks it: a request body checked field by field
into a Completion, the response and stream-chunk shapes, and client errors in OpenAI's error shape
(`{"error": {"message", "type", "param", "code"}}`) with their HTTP status."""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

INT32 = 2**31
# OpenAI fields textgen accepts but does not use, each only with the value that changes nothing
NEUTRAL = {"user": None, "suffix": (None, ""), "logprobs": (None, 0), "presence_penalty": (None, 0),
           "frequency_penalty": (None, 0), "logit_bias": (None, {})}


class ClientError(Exception):
    """A client's mistake: an HTTP status and OpenAI's error body."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.param, self.code, self.kind = status, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True, kw_only=True)
class Limits:
    """What one request may ask for (`textgen serve` flags)."""

    max_tokens: int = 2048  # tokens a choice may generate
    max_prompt_tokens: int = 4096
    max_n: int = 16  # choices per prompt, and prompts times choices per request
    max_stops: int = 16
    max_body_bytes: int = 1 << 20


@dataclass(frozen=True, kw_only=True)
class Completion:
    """One `POST /v1/completions` request, checked."""

    model: str
    prompts: list[str]
    max_tokens: int = 16  # OpenAI's default for completions
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    n: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    label: str | None = None  # a model trained on labelled records: generate records of this label
    stream: bool = False
    echo: bool = False
    include_usage: bool = False


def _number(body: dict, name: str, default: float, low: float, high: float = math.inf, *,
            low_open: bool = False, integer: bool = False) -> Any:
    value = body.get(name, default)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)) or (
            isinstance(value, float) and not math.isfinite(value)):
        raise ClientError(f"{name} must be {kind}, not {json.dumps(value)}", param=name)
    if value < low or (low_open and value == low) or value > high:
        if high == math.inf:
            bounds = f"more than {low:g}" if low_open else f"at least {low:g}"
        else:
            bounds = f"in {'(' if low_open else '['}{low:g}, {high:g}]"
        raise ClientError(f"{name} must be {bounds}, not {value}", param=name)
    return value


def _strings(body: dict, name: str, limit: int, *, required: bool = False) -> list[str]:
    value = body.get(name)
    if value is None:
        if required:
            raise ClientError(f"{name} is required", param=name)
        return []
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ClientError(f"{name} must be a string or a list of strings", param=name)
    if required and not values:
        raise ClientError(f"{name} must hold at least one string", param=name)
    if len(values) > limit:
        raise ClientError(f"{name} holds {len(values)} strings; at most {limit}", param=name)
    return values


def parse_completion(raw: bytes, limits: Limits) -> Completion:
    """A request body -> Completion; a ClientError names the first field that is wrong."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ClientError(f"the body is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(body, dict):
        raise ClientError("the body must be a JSON object")
    known = {f for f in Completion.__dataclass_fields__} | {"prompt", "stream_options", "best_of", *NEUTRAL}
    unknown = sorted(set(body) - known - {"prompts", "include_usage"})
    if unknown or "prompts" in body or "include_usage" in body:
        name = (unknown or [k for k in ("prompts", "include_usage") if k in body])[0]
        raise ClientError(f"unrecognized request argument: {name}", param=name)
    for name, neutral in NEUTRAL.items():
        if name in body and neutral is not None and body[name] not in neutral:
            raise ClientError(f"{name} is not supported by textgen (leave it out)", param=name)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ClientError("model is required: one of GET /v1/models", param="model")
    n = _number(body, "n", 1, 1, limits.max_n, integer=True)
    if body.get("best_of") not in (None, n):
        raise ClientError("best_of is not supported by textgen (leave it out, or make it n)", param="best_of")
    prompts = _strings(body, "prompt", limits.max_n, required=True)
    if len(prompts) * n > limits.max_n:
        raise ClientError(f"{len(prompts)} prompts of n={n} choices each ask for {len(prompts) * n} "
                          f"completions; at most {limits.max_n}", param="n")
    options = body.get("stream_options")
    if options is not None and (not isinstance(options, dict) or set(options) - {"include_usage"}):
        raise ClientError("stream_options takes only include_usage", param="stream_options")
    flags = {}
    for name in ("stream", "echo"):
        flags[name] = body.get(name) or False
        if not isinstance(flags[name], bool):
            raise ClientError(f"{name} must be true or false", param=name)
    seed = body.get("seed")
    if seed is not None:
        seed = _number(body, "seed", 0, -INT32, INT32 - 1, integer=True)
    label = body.get("label")
    if label is not None and not isinstance(label, str):
        raise ClientError("label must be a string (one of the model's labels) or null", param="label")
    return Completion(
        model=model, prompts=prompts, n=n, seed=seed, label=label, **flags,
        max_tokens=_number(body, "max_tokens", 16, 1, limits.max_tokens, integer=True),
        temperature=float(_number(body, "temperature", 1.0, 0)),
        top_p=float(_number(body, "top_p", 1.0, 0, 1, low_open=True)),
        top_k=_number(body, "top_k", 0, 0, INT32 - 1, integer=True),
        repetition_penalty=float(_number(body, "repetition_penalty", 1.0, 1)),
        stop=[s for s in _strings(body, "stop", limits.max_stops) if s],
        include_usage=bool((options or {}).get("include_usage", False)),
    )


def completion_id() -> str:
    import secrets

    return f"cmpl-{secrets.token_hex(12)}"


def chunk_body(request_id: str, created: int, model: str, index: int, text: str,
               finish_reason: str | None) -> dict[str, Any]:
    """One streamed piece of one choice, as OpenAI streams completions."""
    return {"id": request_id, "object": "text_completion", "created": created, "model": model,
            "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}]}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def now() -> int:
    return int(time.time())
