"""Fixtures for the Quicksviewer model tests: tiny checkpoints, videos, engines.

Everything is built once per test session: a seeded tiny checkpoint in the
original on-disk format per dtype and its converted SGLang copy, the standard
test videos (written with OpenCV, decoded for real), the reference
implementation; real ``sglang.Engine``s on CPU per test module (``engines``).
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

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


class Engines:
    """Real sglang.Engines, one per dtype and server arguments, started on first use.

    At most ``capacity`` run at once: starting another shuts down the one used least
    recently. Every engine is a scheduler and a detokenizer process of 1-3 GB each
    on CPU, and CI's host has 24 GB, so a session that kept every engine it ever
    started alive was killed by the kernel (the SIGKILL of CI stage 'test').
    """

    def __init__(self, checkpoints: Checkpoints, capacity: int = 2):
        self.checkpoints = checkpoints
        self.capacity = capacity
        self.engines = {}  # least recently used first

    def __call__(self, dtype: str, **overrides):
        """The engine for ``dtype``; ``overrides`` (server arguments) get their own."""
        key = (dtype, tuple(sorted(overrides.items())))
        if key in self.engines:
            self.engines[key] = self.engines.pop(key)  # now the most recent
            return self.engines[key]
        while len(self.engines) >= self.capacity:
            oldest = next(iter(self.engines))
            self.engines.pop(oldest).shutdown()
        import sglang

        path = self.checkpoints.converted(dtype)
        kwargs = {**engine_kwargs(path, dtype), **overrides}
        self.engines[key] = sglang.Engine(**kwargs)
        return self.engines[key]

    def shutdown(self):
        for engine in self.engines.values():
            engine.shutdown()
        self.engines.clear()


@pytest.fixture(scope="module")
def engines(checkpoints):
    """The engines of one test module (shut down when it ends, see ``Engines``)."""
    pool = Engines(checkpoints)
    yield pool
    pool.shutdown()


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
