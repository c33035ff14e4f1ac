"""`textgen serve` under load: 1, 16, 64 and 256 concurrent streaming clients on loopback.

    pip install aiohttp                   # the load's client
    python bench/serve_load.py            # prints one JSON object; --seconds 10 per level

A char model of 2 x 256 LSTM, embedding 64, vocabulary 65 (generation_speed.py's) is served by a
real `textgen serve` process (--max-batch 64). Each client sends requests of 256 tokens back to back
(each with its own seed) for `--seconds`, over Server-Sent Events, from one asyncio process; the
figures are aggregate characters per second, time to the first text (p50, p99), whole-request
latency (p50, p99), errors, and the CPU seconds the server and the clients used. Beside them, in
the same run: `textgen sample --num-samples 64`'s marginal rate, which serving 64 clients is
measured against (serving them one request at a time would reach about an eighth of it).

The clients share the server's two cores, so their own cost is part of what is measured: aiohttp's
client is used because httpx's took about a third more CPU per request (bench/RESULTS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

try:
    import aiohttp
except ImportError:
    sys.exit("bench/serve_load.py needs aiohttp: pip install aiohttp")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_speed import make_model, run_sample

from common import machine, matmul_peak_gflops

TOKENS = 256
LEVELS = (1, 16, 64, 256)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_server(model: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "textgen", "serve", str(model), "--port", str(port),
                               "--max-batch", "64", "--max-queue", "1024", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            if server.poll() is not None:
                raise RuntimeError(server.stderr.read()) from None
            time.sleep(0.5)
    raise RuntimeError("the server did not start")


async def one_request(session: aiohttp.ClientSession, url: str, seed: int) -> tuple[float, float, int]:
    """(time to first text, whole latency, characters) of one streamed request."""
    body = {"model": "m", "prompt": "The", "max_tokens": TOKENS, "temperature": 0.8, "seed": seed,
            "stream": True}
    sent, first, chars = time.perf_counter(), None, 0
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise RuntimeError(f"status {response.status}")
        async for raw in response.content:  # line by line
            line = raw.decode().rstrip("\r\n")
            if line.startswith("data: {"):
                text = json.loads(line[6:])["choices"][0]["text"]
                if text and first is None:
                    first = time.perf_counter() - sent
                chars += len(text)
            elif line == "data: [DONE]":
                break
    if chars != TOKENS:
        raise RuntimeError(f"{chars} characters of {TOKENS}")
    return first, time.perf_counter() - sent, chars


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def level(port: int, clients: int, seconds: float, server_pid: int) -> dict:
    url = f"http://127.0.0.1:{port}/v1/completions"
    ttft, latency, errors, chars = [], [], [], 0
    connector = aiohttp.TCPConnector(limit=clients + 8)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        stop_at = time.perf_counter() + seconds

        async def client(number: int) -> None:
            nonlocal chars
            seed = number * 100_003
            while time.perf_counter() < stop_at:
                seed += 1
                try:
                    first, whole, got = await one_request(session, url, seed)
                except Exception as exc:  # counted: the goal is zero
                    errors.append(f"{exc.__class__.__name__}: {exc}")
                    continue
                ttft.append(first)
                latency.append(whole)
                chars += got

        started, server_cpu, own_cpu = time.perf_counter(), cpu_seconds(server_pid), time.process_time()
        await asyncio.gather(*(client(n) for n in range(clients)))
        elapsed = time.perf_counter() - started
        server_cpu, own_cpu = cpu_seconds(server_pid) - server_cpu, time.process_time() - own_cpu

    def quantile(values: list[float], q: int) -> float | None:
        return round(statistics.quantiles(values, n=100)[q - 1] * 1000, 1) if len(values) >= 2 else None

    return {"clients": clients, "requests": len(latency), "seconds": round(elapsed, 2),
            "chars_per_s": round(chars / elapsed), "ttft_ms_p50": quantile(ttft, 50),
            "ttft_ms_p99": quantile(ttft, 99), "latency_ms_p50": quantile(latency, 50),
            "latency_ms_p99": quantile(latency, 99), "errors": len(errors), "error_examples": errors[:3],
            "server_cpu_s": round(server_cpu, 1), "clients_cpu_s": round(own_cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="load per level")
    parser.add_argument("--levels", default=",".join(map(str, LEVELS)))
    args = parser.parse_args()
    results: dict = {"machine": machine(), "matmul_peak_gflops": round(matmul_peak_gflops(), 1),
                     "tokens_per_request": TOKENS}
    with tempfile.TemporaryDirectory() as folder:
        model = make_model(Path(folder))
        base = min(run_sample(model, 200, 64) for _ in range(3))
        full = min(run_sample(model, 10_200, 64) for _ in range(3))
        sample_rate = 64 * 10_000 / (full - base)
        results["sample_64_streams_chars_per_s"] = round(sample_rate)
        port = free_port()
        server = start_server(model, port)
        try:
            asyncio.run(level(port, 4, 2.0, server.pid))  # warm: connections, first requests
            levels = [int(c) for c in args.levels.split(",")]
            results["levels"] = [asyncio.run(level(port, clients, args.seconds, server.pid))
                                 for clients in levels]
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=120)
    by_clients = {row["clients"]: row for row in results["levels"]}
    goals = {}
    if 64 in by_clients:
        goals["64_clients_share_of_sample_64"] = round(by_clients[64]["chars_per_s"] / sample_rate, 3)
        goals["64_clients_ttft_p99_ms"] = by_clients[64]["ttft_ms_p99"]
    if 1 in by_clients:
        goals["1_client_ttft_p50_ms"] = by_clients[1]["ttft_ms_p50"]
    if 256 in by_clients:
        goals["256_clients_errors"] = by_clients[256]["errors"]
    results["goals"] = goals
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    main()
