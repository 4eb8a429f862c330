"""The real SGLang HTTP server (``python -m sglang.launch_server``) on CPU for
tests: tools.server's ``Server`` on a free port with its log in a file, whose
failures to start are test failures, plus JSON posts."""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import sys
from pathlib import Path

import pytest
import requests

from tests.helpers.project import PROJECT_ROOT
from tools import server as tools_server
from tools.server import ServerError, cpu_server_command, free_port

STARTUP_TIMEOUT_S = 300
REQUEST_TIMEOUT_S = 180


class Server(tools_server.Server):
    def wait_ready(self) -> None:
        """Wait for /health (the first request of the module does); the fixtures
        the tests need meanwhile (reference run) overlap the server start."""
        try:
            super().wait_ready()
        except ServerError as e:
            pytest.fail(f"{e}{self.log_tail()}")

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
        super().stop(grace_s=20)


@functools.cache
def vec_isa_env() -> dict:
    """Inductor's verdict on this CPU's vector ISAs, checked once per test session,
    for the servers' environment.

    On CPU SGLang compiles its repetition penalty (``apply_scaling_penalties``,
    ``torch.compile``) on first use, and every server uses it in its warm-up
    request (the checkpoints' generation config sets ``repetition_penalty``).
    Before it compiles, inductor checks each vector ISA that the CPU flags name by
    building a probe library and loading it in a fresh ``python -c "import torch
    ..."``: about 35 s of each server start on a 2-core host. Here the same check
    runs once, in this process; when every ISA the flags name passes it,
    ``TORCHINDUCTOR_VEC_ISA_OK=1`` lets each server trust the flags, so it picks
    the ISA its own check would have picked and compiles the same code. Otherwise
    (another platform, a failing ISA, the variable already set, a torch without
    these internals): nothing, and each server checks for itself."""
    name = "TORCHINDUCTOR_VEC_ISA_OK"
    if name in os.environ or sys.platform != "linux":
        return {}
    if platform.machine() != "x86_64":
        return {}
    try:
        from torch._inductor import cpu_vec_isa

        flags = cpu_vec_isa.x86_isa_checker()
        named = [
            isa
            for isa in cpu_vec_isa.supported_vec_isa_list
            if all(flag in flags for flag in str(isa).split())
        ]
        ok = bool(named) and all(bool(isa) for isa in named)
    except (ImportError, AttributeError):
        return {}
    return {name: "1"} if ok else {}


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
    env = {**vec_isa_env(), **(env or {})}
    return Server(command, port, log, env, PROJECT_ROOT, STARTUP_TIMEOUT_S)


@contextlib.contextmanager
def reporting(server: Server, request, wait: bool = False):
    """Yield ``server`` (``wait``: once healthy), stop it afterwards and, when a test
    of the session failed meanwhile, write its log tail straight to the terminal
    (the captured output of a passing last test would not be shown)."""
    failed_before = request.session.testsfailed
    try:
        if wait:
            server.wait_ready()
        yield server
    finally:
        server.stop()
        if request.session.testsfailed > failed_before:
            reporter = request.config.pluginmanager.get_plugin("terminalreporter")
            reporter.write_line(server.log_tail())
