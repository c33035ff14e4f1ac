"""`textgen serve` as applications meet it: a real server process on 127.0.0.1, driven by the official
`openai` client, httpx and curl; every client mistake a 4xx in OpenAI's error shape, after which the
server keeps serving; concurrent requests with settings of their own, each the text `textgen sample`
gives; disconnects, a full queue, SIGTERM and Ctrl-C."""

from __future__ import annotations

import asyncio
import gc
import json
import signal
import socket
import subprocess
import sys
import time
import weakref

import httpx
import openai
import pytest

from helpers import run_cli
from serving import KEY, LONG, Server, expected, free_port, wait_idle

# the references' primes may hold what a tiny vocabulary lacks
pytestmark = pytest.mark.filterwarnings("ignore::textgen.sampling_model.UnknownPrimeWarning")


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def models(served_models):
    return served_models


# -- the official client --------------------------------------------------------------------------
def test_models_and_health(server, client):
    names = [m.id for m in client.models.list().data]
    assert names == ["char", "word", "char-tflite"]  # NAME=MODEL, and an export named after its model
    health = server.health()
    assert health["status"] == "ok" and health["auth"] and list(health["models"]) == names
    assert health["models"]["char"] == {"active_rows": 0, "queued_requests": 0, "max_batch": 8,
                                        "max_queue": 8}


def test_a_completion_is_the_text_textgen_sample_gives(client, models):
    response = client.completions.create(model="char", prompt="ROMEO:", max_tokens=60, temperature=0.8,
                                         seed=3, extra_body={"top_k": 5})
    (choice,) = response.choices
    assert choice.text == expected(models, "char", "ROMEO:", 60, temperature=0.8, top_k=5, seed=3)[0]
    assert choice.finish_reason == "length" and choice.index == 0
    assert response.usage.prompt_tokens == 6 and response.usage.completion_tokens == 60
    assert response.usage.total_tokens == 66 and response.model == "char" and response.id.startswith("cmpl-")


def test_streamed_text_arrives_in_chunks_and_ends_with_usage(client, models):
    stream = client.completions.create(model="char", prompt="KING", max_tokens=200, temperature=1.1,
                                       top_p=0.9, seed=8, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) >= 3 and "".join(texts) == expected(models, "char", "KING", 200, temperature=1.1,
                                                           top_p=0.9, seed=8)[0]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == 200 and not chunks[-1].choices


def test_n_choices_of_several_prompts_are_num_samples_rows(client, models):
    response = client.completions.create(model="char", prompt=["ROMEO:", "JULIET:"], n=2, max_tokens=40,
                                         temperature=0.9, seed=11, extra_body={"repetition_penalty": 1.3})
    texts = [c.text for c in sorted(response.choices, key=lambda c: c.index)]
    options = {"temperature": 0.9, "seed": 11, "repetition_penalty": 1.3}
    assert texts == (expected(models, "char", "ROMEO:", 40, n=2, **options)
                     + expected(models, "char", "JULIET:", 40, n=2, **options))
    assert response.usage.completion_tokens == 160 and response.usage.prompt_tokens == 13


def test_a_stop_string_ends_a_choice(client, models):
    want = expected(models, "char", "First", 300, temperature=0.7, seed=2, stop=["e"])[0]
    response = client.completions.create(model="char", prompt="First", max_tokens=300, temperature=0.7,
                                         seed=2, stop="e", echo=True)
    (choice,) = response.choices
    assert choice.text == "First" + want and choice.finish_reason == "stop" and "e" not in want
    # the tokens through the stop string were generated: one more than the text returned
    assert response.usage.completion_tokens == len(want) + 1


def test_a_word_model_with_an_unknown_cjk_prime(client, models):
    prompt = "KING 你好 RICHARD"
    response = client.completions.create(model="word", prompt=prompt, max_tokens=30, temperature=0.8, seed=4)
    assert response.choices[0].text == expected(models, "word", prompt, 30, temperature=0.8, seed=4)[0]


def test_an_exported_tflite_file_is_served_as_litert_runs_it(client, models):
    settings = {"temperature": 0.8, "seed": 5}
    response = client.completions.create(model="char-tflite", prompt="ROMEO:", max_tokens=50, **settings)
    assert response.choices[0].text == expected(models, "char-tflite", "ROMEO:", 50, **settings)[0]


def test_curl_streams_server_sent_events(server, models):
    body = json.dumps({"model": "char", "prompt": "ROMEO:", "max_tokens": 80, "seed": 1, "temperature": 0.5,
                       "stream": True})
    result = subprocess.run(["curl", "-sN", f"{server.url}/v1/completions", "-d", body,
                             "-H", f"Authorization: Bearer {KEY}", "-H", "Content-Type: application/json"],
                            capture_output=True, text=True, timeout=60, check=True)
    events = [line.removeprefix("data: ") for line in result.stdout.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1])
    assert text == expected(models, "char", "ROMEO:", 80, seed=1, temperature=0.5)[0]


# -- client mistakes: a 4xx in OpenAI's shape, and the server keeps serving ------------------------------
GOOD = {"model": "char", "prompt": "ROMEO:", "max_tokens": 5}
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.mark.parametrize(("body", "headers", "status", "param", "code"), [
    ({**GOOD, "temperature": -1}, AUTH, 400, "temperature", None),
    ({**GOOD, "top_p": 0}, AUTH, 400, "top_p", None),
    ({**GOOD, "top_p": 1.5}, AUTH, 400, "top_p", None),
    ({**GOOD, "model": "nope"}, AUTH, 400, "model", "model_not_found"),
    ({**GOOD, "prompt": "a " * 150}, AUTH, 400, "prompt", "prompt_too_long"),
    ({**GOOD, "prompt": [1, 2, 3]}, AUTH, 400, "prompt", None),
    ({**GOOD, "max_tokens": 0}, AUTH, 400, "max_tokens", None),
    ({**GOOD, "n": 9}, AUTH, 400, "n", None),
    ({**GOOD, "stop": 5}, AUTH, 400, "stop", None),
    ({**GOOD, "seed": "one"}, AUTH, 400, "seed", None),
    ({**GOOD, "stream": "yes"}, AUTH, 400, "stream", None),
    ({**GOOD, "temprature": 1}, AUTH, 400, "temprature", None),
    ({**GOOD, "frequency_penalty": 0.5}, AUTH, 400, "frequency_penalty", None),
    ({"prompt": "x"}, AUTH, 400, "model", None),
    (b"{not json", AUTH, 400, None, None),
    (b"[1, 2]", AUTH, 400, None, None),
    ({**GOOD, "prompt": "x" * 5000}, AUTH, 413, None, "request_too_large"),
    (GOOD, {}, 401, None, "invalid_api_key"),
    (GOOD, {"Authorization": "Bearer wrong"}, 401, None, "invalid_api_key"),
    (GOOD, {"Authorization": KEY}, 401, None, "invalid_api_key"),
])
def test_client_mistakes(server, body, headers, status, param, code):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    response = httpx.post(f"{server.url}/v1/completions", content=content, timeout=30,
                          headers={"Content-Type": "application/json", **headers})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert (error["param"], error["code"]) == (param, code)
    assert "Traceback" not in response.text and "File \"" not in response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    ok = httpx.post(f"{server.url}/v1/completions", json=GOOD, headers=AUTH, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["choices"][0]["text"]) == 5


def test_routes_and_methods_it_does_not_have(server):
    missing = httpx.get(f"{server.url}/v1/chat", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert httpx.get(f"{server.url}/v1/completions", headers=AUTH).status_code == 405
    assert httpx.get(f"{server.url}/v1/models").status_code == 401  # the API needs the key
    assert httpx.get(f"{server.url}/health").status_code == 200  # the page and health do not
    page = httpx.get(server.url)
    assert page.status_code == 200 and "textgen playground" in page.text and "http" not in page.text.split(
        "<script>")[1].split("fetch(")[0]  # no CDN: the page loads nothing from elsewhere


def test_no_client_mistake_leaves_a_traceback_in_the_log(server):
    log = server.log.read_text()
    assert "Traceback" not in log and "Error" not in log.replace("invalid_request_error", "")


# -- many clients at once -------------------------------------------------------------------------------
CONCURRENT = [  # (model, prompt, max_tokens, n, settings): 14 requests, 16 rows, in 8 rows: some queue
    ("char", "ROMEO:", 120, 1, {"temperature": 0.8, "seed": 1}),
    ("char", "ROMEO:", 120, 1, {"temperature": 0.8, "seed": 2}),
    ("char", "JULIET:", 90, 2, {"temperature": 1.0, "top_k": 3, "seed": 3}),
    ("char", "", 150, 1, {"temperature": 0.0, "seed": 4}),
    ("char", "KING", 60, 1, {"temperature": 1.3, "top_p": 0.8, "seed": 5}),
    ("char", "First", 200, 1, {"temperature": 0.6, "repetition_penalty": 1.4, "seed": 6}),
    ("word", "KING", 40, 1, {"temperature": 0.9, "seed": 7}),
    ("word", "ROMEO", 30, 2, {"temperature": 0.7, "top_k": 10, "seed": 8}),
    ("char", "Second", 80, 1, {"temperature": 0.8, "seed": 9, "stop": [":"]}),
    ("char", "ROMEO:", 250, 1, {"temperature": 0.9, "top_p": 0.95, "top_k": 20, "seed": 10}),
    ("char", "A", 40, 1, {"temperature": 2.0, "seed": 11}),
    ("char", "B", 70, 1, {"temperature": 0.5, "seed": 12, "repetition_penalty": 1.1}),
    ("word", "", 25, 1, {"temperature": 1.0, "seed": 13}),
    ("char", "C", 100, 1, {"temperature": 0.8, "seed": 14}),
]


async def stream_texts(url: str, model: str, prompt: str, max_tokens: int, n: int,
                       settings: dict) -> list[str]:
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "n": n, "stream": True, **settings}
    texts = [""] * n
    async with httpx.AsyncClient(timeout=120) as http, http.stream(
            "POST", f"{url}/v1/completions", json=body, headers=AUTH) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                choice = json.loads(line[6:])["choices"][0]
                texts[choice["index"]] += choice["text"]
    return texts


def test_concurrent_streams_each_get_the_text_of_their_own_settings(server, models):
    want = [expected(models, model, prompt, length, n, **settings)
            for model, prompt, length, n, settings in CONCURRENT]

    async def everyone() -> list[list[str]]:
        return await asyncio.gather(*(stream_texts(server.url, *request) for request in CONCURRENT))

    assert asyncio.run(everyone()) == want
    wait_idle(server)


def test_a_client_that_goes_away_frees_its_rows_within_a_chunk(server):
    body = {"model": "char", "prompt": "ROMEO:", "max_tokens": LONG, "n": 3, "stream": True}
    url = f"{server.url}/v1/completions"
    with httpx.stream("POST", url, json=body, headers=AUTH, timeout=30) as response:
        lines = response.iter_lines()
        assert next(line for line in lines if line.startswith("data: "))
        assert server.health()["models"]["char"]["active_rows"] == 3
    started = time.monotonic()
    wait_idle(server, seconds=5)
    assert time.monotonic() - started < 5


def test_a_full_queue_answers_429_with_retry_after(server):
    """8 rows busy and 8 requests waiting: the next is told to retry; all are freed when their clients go."""
    body = {"model": "char", "prompt": "x", "max_tokens": LONG, "stream": True}

    async def crowd() -> httpx.Response:
        async with httpx.AsyncClient(timeout=60) as http:
            streams = [http.stream("POST", f"{server.url}/v1/completions", json=body, headers=AUTH)
                       for _ in range(16)]
            responses = [await s.__aenter__() for s in streams]  # all submitted, none read to the end
            deadline = time.monotonic() + 20
            while server.health()["models"]["char"]["queued_requests"] < 8 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            refused = await http.post(f"{server.url}/v1/completions", json=body, headers=AUTH)
            for s in streams:
                await s.__aexit__(None, None, None)
            assert all(r.status_code == 200 for r in responses)
            return refused

    refused = asyncio.run(crowd())
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "queue_full"
    wait_idle(server)


def test_the_access_log_has_a_line_per_request(server):
    httpx.post(f"{server.url}/v1/completions", json={**GOOD, "max_tokens": 7}, headers=AUTH, timeout=30)
    line = server.log_lines()[-1]
    assert line.startswith('127.0.0.1 "POST /v1/completions" 200 7 tokens ') and line.endswith(" s")


# -- lifecycle -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_a_stop_signal_lets_a_stream_finish_then_exits_0(char_model, tmp_path, stop):
    server = Server([char_model, "--max-batch", "2", "--drain-seconds", "60", "--max-tokens", "20000"],
                    tmp_path / "log")
    body = {"model": char_model.name, "prompt": "ROMEO:", "max_tokens": 20_000, "stream": True, "seed": 1}
    events = []
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as response:
        lines = (line[6:] for line in response.iter_lines() if line.startswith("data: "))
        events.append(next(lines))
        server.process.send_signal(stop)
        time.sleep(0.3)
        with pytest.raises(httpx.TransportError):  # no new connections while draining
            httpx.get(f"{server.url}/health", timeout=2)
        events.extend(lines)
    assert events[-1] == "[DONE]" and json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    assert sum(len(json.loads(e)["choices"][0]["text"]) for e in events[:-1]) == 20_000
    assert server.stop() == 0 and server.log_lines()[-1] == "Stopped."


def test_a_model_that_cannot_be_loaded_stops_before_the_port_opens(tmp_path, capsys):
    port = free_port()
    code, _, err = run_cli(["serve", tmp_path / "missing", "--port", port], capsys)
    missing = tmp_path / "missing"
    assert code == 2 and err.splitlines() == [
        f"textgen: error: {missing}: no such model (looked in {missing})"]
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_a_port_in_use_is_one_error_line(char_model, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        code, _, err = run_cli(["serve", char_model, "--port", taken.getsockname()[1], "--max-batch", "2"],
                               capsys)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith("textgen: error: cannot listen on")


def test_connections_send_small_writes_without_delay():
    """Each streamed event is a small write: with Nagle's algorithm on, the first one after the
    headers waited for the client's delayed ACK (about 40 ms). asyncio turns it off only on sockets
    that name IPPROTO_TCP, as the server's listening socket now does."""
    from textgen.serving.server import _listen

    async def nodelay_of_an_accepted_connection() -> int:
        accepted = asyncio.get_running_loop().create_future()

        async def handler(reader, writer):
            accepted.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                            socket.TCP_NODELAY))
            writer.close()

        listening = _listen("127.0.0.1", 0)
        async with await asyncio.start_server(handler, sock=listening):
            _, writer = await asyncio.open_connection("127.0.0.1", listening.getsockname()[1])
            nodelay = await accepted
            writer.close()
        return nodelay

    assert asyncio.run(nodelay_of_an_accepted_connection()) == 1


def test_the_server_collects_what_loading_left_in_cycles_then_freezes_the_rest():
    """Full collections pause every stream; what loading made lives as long as the server, so
    they should not walk it (each had taken about 120 ms)."""
    from textgen.serving.server import _settle_memory

    class Node:
        pass

    gc.disable()  # the cycle must be left for _settle_memory
    try:
        cycle = Node()
        cycle.itself = cycle
        collected = weakref.ref(cycle)
        del cycle
        frozen_before = gc.get_freeze_count()
        _settle_memory()
        assert collected() is None and gc.get_freeze_count() > frozen_before
    finally:
        gc.unfreeze()
        gc.enable()


@pytest.mark.parametrize(("args", "message"), [
    (["--max-n", "9", "--max-batch", "8"], "--max-n 9 exceeds --max-batch 8"),
    (["--port", "70000"], "70000 is not in the range"),
])
def test_bad_server_settings(char_model, args, message, capsys):
    code, _, err = run_cli(["serve", char_model, *args], capsys)
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_an_asgi_server_of_ones_own_runs_the_app_factory(char_model, tmp_path):
    factory = [sys.executable, "-m", "uvicorn", "--factory", "textgen.serving:from_environment"]
    models = {"TEXTGEN_MODELS": f"shakespeare={char_model}"}
    server = Server([], tmp_path / "log", env=models, command=factory)
    try:
        body = {**GOOD, "model": "shakespeare"}
        response = httpx.post(f"{server.url}/v1/completions", json=body, timeout=30)
        assert response.status_code == 200 and response.json()["choices"][0]["finish_reason"] == "length"
    finally:
        server.stop()


@pytest.mark.parametrize("origins", [[], ["http://app.example"]])
def test_cors_is_off_unless_an_origin_is_given(origins):
    """A browser page from another origin may call the API only when the server names that origin."""
    from starlette.testclient import TestClient

    from textgen.serving import ServerState, create_app

    with TestClient(create_app(ServerState(models={}), cors_origins=origins)) as http:
        preflight = http.options("/v1/completions", headers={
            "Origin": "http://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
    allowed = preflight.headers.get("access-control-allow-origin")
    assert allowed == ("http://app.example" if origins else None)
    assert preflight.status_code == (200 if origins else 405)
