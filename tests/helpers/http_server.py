"""The real SGLang HTTP server (``python -m sglang.launch_server``) on CPU for
tests: start it on a free port with its log in a file, wait for /health, post,
stop it with its children."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests.quicksviewer_fixtures import PROJECT_ROOT
from tools.demo import cpu_server_command, free_port

STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 180
LOG_TAIL = 6000


class Server:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path):
        self.proc, self.log = proc, log
        self.url = f"http://127.0.0.1:{port}"
        self.deadline = time.monotonic() + STARTUP_TIMEOUT_S
        self.ready = False

    def log_tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"\n--- server log ({self.log}), tail ---\n{text[-LOG_TAIL:]}"

    def wait_ready(self) -> None:
        """Wait for /health (the first request of the module does); the fixtures
        the tests need meanwhile (reference run) overlap the server start."""
        while not self.ready:
            if self.proc.poll() is not None:
                pytest.fail(
                    f"server exited with {self.proc.returncode}{self.log_tail()}"
                )
            try:
                response = requests.get(self.url + "/health", timeout=5)
                self.ready = response.status_code == 200
            except requests.RequestException:
                pass
            if not self.ready:
                if time.monotonic() > self.deadline:
                    pytest.fail(
                        f"server not healthy in {STARTUP_TIMEOUT_S}s{self.log_tail()}"
                    )
                time.sleep(1)

    def post(self, path: str, payload: dict) -> requests.Response:
        self.wait_ready()
        try:
            return requests.post(
                self.url + path, json=payload, timeout=REQUEST_TIMEOUT_S
            )
        except requests.RequestException as e:
            pytest.fail(f"POST {path} failed: {e}{self.log_tail()}")

    def ok(self, path: str, payload: dict) -> dict:
        response = self.post(path, payload)
        assert response.status_code == 200, (
            f"POST {path} -> {response.status_code}: {response.text}"
            f"{self.log_tail()}"
        )
        return response.json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            # the server drains and stops its children on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
        try:  # whatever is left: scheduler and detokenizer share the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=20)


def start_server(
    model: Path,
    log: Path,
    dtype: str = "float32",
    extra_args: tuple[str, ...] = (),
    env: dict | None = None,
) -> Server:
    """Launch the server on the CPU recipe of the tests (returns at once; the first
    request waits for /health)."""
    port = free_port()
    command = cpu_server_command(model, port, dtype) + [
        "--host",
        "127.0.0.1",
        # no busy polling while idle: this host has 2 cores
        "--sleep-on-idle",
        *extra_args,
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=None if env is None else {**os.environ, **env},
        )
    return Server(proc, port, log)
