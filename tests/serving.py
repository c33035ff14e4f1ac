"""A real `textgen serve` process on 127.0.0.1 for the tests: started on a free port, ready once
/health answers, stopped with SIGTERM; its stderr (the access log) kept in a file."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

START_SECONDS = 180
KEY = "test-key"  # the shared server's API key
LONG = 100_000  # tokens: a generation that lasts until its client goes away


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`textgen serve ARGS` in its own process."""

    def __init__(self, args: list, log: Path, env: dict | None = None, command: list | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._stderr = open(log, "w", encoding="utf-8")  # noqa: SIM115 - closed in stop()
        command = command or [sys.executable, "-m", "textgen", "serve"]
        self.process = subprocess.Popen([*command, "--port", str(self.port), *map(str, args)],
                                        stdout=subprocess.DEVNULL,
                                        stderr=self._stderr, env={**os.environ, **(env or {})})
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited ({self.process.returncode}): {self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.25)
        raise RuntimeError(f"the server did not start in {START_SECONDS} s: {self.log.read_text()}")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/health", timeout=5).json()

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=timeout)
        self._stderr.close()
        return code

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()


def expected(models: dict, model: str, prompt: str, length: int, n: int = 1, **options) -> list[str]:
    """What `textgen sample` writes for the same settings, without the prompt."""
    texts = models[model].generate_many(prompt, length, num_samples=n, **options)
    return [text[len(prompt):] for text in texts]


def wait_idle(server: Server, seconds: float = 10) -> dict:
    """The server's rows all free and its queue empty (AssertionError if not within `seconds`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        stats = server.health()["models"]
        if all(s["active_rows"] == 0 and s["queued_requests"] == 0 for s in stats.values()):
            return stats
        time.sleep(0.05)
    raise AssertionError(f"rows still busy: {server.health()}")
