"""Fixtures for the Quicksviewer model tests: tiny checkpoints, videos, engines.

Everything is built once per test session: a seeded tiny checkpoint in the
original on-disk format per dtype and its converted SGLang copy, the standard
test videos (written with OpenCV, decoded for real), the reference
implementation; the real ``sglang.Engine`` on CPU, one at a time (``engine_slot``).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.helpers.project import PROJECT_ROOT
from tools.media import STANDARD_VIDEOS, standard_video
from tools.sglang_outputs import (  # noqa: F401 (re-exported)
    as_reported,
    reported_input_ids,
)

QUESTION = "What is happening in the video?"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
SGLANG_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def chatml_prompt(media: str, question: str = QUESTION) -> str:
    """The original conv_qwen2 prompt, with SGLang's media placeholders."""
    return f"<|im_start|>user\n{media}{question}<|im_end|>\n<|im_start|>assistant\n"


def engine_kwargs(model_path: Path, dtype: str) -> dict:
    return dict(
        model_path=str(model_path),
        device="cpu",
        attention_backend="torch_native",
        mm_attention_backend="sdpa",
        dtype=SGLANG_DTYPES[dtype],
        max_total_tokens=16384,
        log_level="error",
        # an idle scheduler otherwise busy-polls a whole core of the 2-core CI host
        sleep_on_idle=True,
    )


class Checkpoints:
    """Original-format and converted tiny checkpoints, per dtype."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cache
    def original(self, dtype: str) -> Path:
        from tools.checkpoints.tiny import make_tiny_checkpoint

        return make_tiny_checkpoint(
            self.root / f"original-{dtype}", seed=0, dtype=dtype
        )

    @functools.cache
    def converted(self, dtype: str) -> Path:
        from tools.checkpoints.convert import convert_checkpoint

        dst = self.root / f"converted-{dtype}"
        convert_checkpoint(self.original(dtype), dst, log=lambda _: None)
        return dst


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> Checkpoints:
    return Checkpoints(tmp_path_factory.mktemp("quicksviewer-checkpoints"))


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    return {name: standard_video(root, name) for name in STANDARD_VIDEOS}


class References:
    """The reference implementation per dtype, and its runs, computed once."""

    def __init__(self, checkpoints: Checkpoints):
        self.checkpoints = checkpoints
        self.runs = {}

    @functools.cache
    def model(self, dtype: str):
        from qsv_reference.model import QuicksviewerReference

        return QuicksviewerReference(
            self.checkpoints.original(dtype), dtype=DTYPES[dtype]
        )

    def video(self, dtype: str, path: Path, max_new_tokens: int = 16):
        key = ("video", dtype, str(path))
        if key not in self.runs:
            self.runs[key] = self.model(dtype).run_video(
                path, QUESTION, max_new_tokens=max_new_tokens
            )
        return self.runs[key]


@pytest.fixture(scope="session")
def references(checkpoints) -> References:
    return References(checkpoints)


class EngineSlot:
    """The one running in-process ``sglang.Engine`` (or test server) of the session.

    SGLang's ``Engine.shutdown()`` kills every child process of the test process
    (``kill_process_tree(os.getpid(), include_parent=False)``): other engines'
    schedulers and test servers too. Those engines' subprocess watchdogs then send
    the test process SIGQUIT, and SGLang's handler kills it (CI saw pytest
    SIGKILLed, once in test_model_variants, once in test_model_parity). So at most
    one engine or server of the slot runs at a time: asking for another stops the
    current one first. The slot is emptied at the end of every test module.
    """

    def __init__(self):
        self.key = None
        self.value = None
        self._stop = None

    def get(self, key, start: Callable[[], object], stop=lambda e: e.shutdown()):
        """The running thing for ``key``, started by ``start()`` if another (or
        nothing) runs now; ``stop(value)`` stops it later."""
        if self.key != key:
            self.release()
            self.value = start()
            self.key, self._stop = key, stop
        return self.value

    def release(self) -> None:
        if self.key is not None:
            value, stop = self.value, self._stop
            self.key = self.value = self._stop = None
            stop(value)


@pytest.fixture(scope="session")
def engine_slot():
    slot = EngineSlot()
    yield slot
    slot.release()


@pytest.fixture(scope="module", autouse=True)
def _engine_slot_per_module(engine_slot):
    """A module's engine stops when the module ends (after its own fixtures)."""
    yield
    engine_slot.release()


@pytest.fixture
def engines(checkpoints, engine_slot):
    """``engines(dtype, **server_args)``: the real sglang.Engine of the tiny
    converted checkpoint, in ``engine_slot`` (tests ask for the same one in a row:
    a different one restarts it)."""

    def get(dtype: str, **overrides):
        def start():
            import sglang

            path = checkpoints.converted(dtype)
            return sglang.Engine(**{**engine_kwargs(path, dtype), **overrides})

        key = ("tiny", dtype, tuple(sorted(overrides.items())))
        return engine_slot.get(key, start)

    return get


def run_script(script: str, *args, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run a helper script of tests/helpers with this interpreter."""
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "tests" / "helpers" / script),
            *map(str, args),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc
