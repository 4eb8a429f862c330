"""``python -m sglang.launch_server`` as a child process: the CPU recipe, start it in
its own process group with its output in a log file, wait for ``/health``, stop it
with its children.

One copy for the demo (tools/demo.py), the benchmarks (benchmarks/chat_client.py),
the GPU CI (ci/gpu/server.py) and the tests (tests/helpers/http_server.py, which
turns a ``ServerError`` into a test failure). Standard library only: the GPU host
has no pytest, and ``requests`` is not needed for a health probe.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tools import ToolError

STARTUP_TIMEOUT_S = 900
LOG_TAIL = 6000


class ServerError(ToolError):
    """The server exited or did not become healthy; the message names its log."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(model, port: int, args=()) -> list[str]:
    """``python -m sglang.launch_server --model-path MODEL --port PORT ARGS...``."""
    return [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model),
        "--port",
        str(port),
        *map(str, args),
    ]


def cpu_server_command(model: Path, port: int, dtype: str = "float32") -> list[str]:
    """The README's CPU recipe (the demo's, and the tests' server)."""
    return server_command(
        model,
        port,
        [
            "--device",
            "cpu",
            "--attention-backend",
            "torch_native",
            "--mm-attention-backend",
            "sdpa",
            "--dtype",
            dtype,
            "--max-total-tokens",
            "16384",
        ],
    )


class Server:
    """A started server: ``proc``, ``url``, ``log``. Starting returns at once;
    ``wait_ready`` waits for ``/health`` (so other work can overlap the start)."""

    def __init__(
        self,
        command: list[str],
        port: int,
        log: Path,
        env: dict | None = None,
        cwd: Path | None = None,
        start_timeout: float = STARTUP_TIMEOUT_S,
    ):
        self.log = Path(log)
        self.url = f"http://127.0.0.1:{port}"
        self.start_timeout = start_timeout
        self.deadline = time.monotonic() + start_timeout
        self.ready = False
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                command,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=None if env is None else {**os.environ, **env},
            )

    def log_tail(self, chars: int = LOG_TAIL) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"\n--- server log ({self.log}), tail ---\n{text[-chars:]}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=5) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self) -> None:
        """Return once ``/health`` answers 200; ``ServerError`` when the server
        exits first or the start timeout passes."""
        while not self.ready:
            if self.proc.poll() is not None:
                raise ServerError(
                    f"the server exited with {self.proc.returncode}; see {self.log}"
                )
            self.ready = self.healthy()
            if not self.ready:
                if time.monotonic() > self.deadline:
                    raise ServerError(
                        f"the server was not healthy in {self.start_timeout:g} s; "
                        f"see {self.log}"
                    )
                time.sleep(1)

    def stop(self, grace_s: float = 60) -> None:
        """SIGTERM the server (it drains and stops its children), SIGKILL whatever
        is left of its process group after ``grace_s``."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        try:  # scheduler and detokenizer share the group
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=60)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def launch(
    model,
    args=(),
    log: Path = Path("server.log"),
    port: int | None = None,
    env: dict | None = None,
    start_timeout: float = STARTUP_TIMEOUT_S,
) -> Server:
    """Start ``launch_server`` for ``model`` with ``args`` and wait until it is
    healthy (stopped again when it is not)."""
    port = port or free_port()
    server = Server(
        server_command(model, port, args), port, log, env, None, start_timeout
    )
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    return server
