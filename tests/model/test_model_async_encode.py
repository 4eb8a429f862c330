"""The visual encoder off the scheduler's critical path (issue 8, item 1).

Real HTTP servers (``python -m sglang.launch_server``) on CPU with the converted
fp32 tiny checkpoint and ``SGLANG_QSV_TIMING=1``, so that the log carries the
processor's and the encoder's ``qsv-timing`` records (the encoder's start and end
wall-clock times, the client's clock too). Checked here:

* a text stream is running when a long video (300 frames: seconds of encoder on
  this CPU) arrives. With the encoder off the event loop (the default), the
  stream keeps receiving tokens while the video is encoded and its largest gap in
  that window is a small fraction of the encode; with
  ``SGLANG_QSV_ASYNC_ENCODE=0`` (the synchronous path, the control) the same
  stream stops for the whole encode. The video's prompt and greedy tokens are the
  same both ways;
* a request aborted while it is parked (its video being encoded) finishes at
  once, before the encode ends; the encode completes and fills the visual cache
  (the same video next is a hit, waiting for that encode rather than encoding
  again), and the aborted request never reaches the prompt layout;
* a failing encoder gives the client a 400 that says so, and the server keeps
  serving. The failure comes from ``tests/helpers/qsv_failing_encoder``: the
  project's model, whose ``encode_video`` raises for one frame count (the
  stand-in for a real failure, such as CUDA running out of memory), served
  through SGLang's ``SGLANG_EXTERNAL_MODEL_PACKAGE``; every other video of that
  server takes the real code path.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.helpers.http_server import Server, reporting, start_server
from tests.helpers.model_fixtures import chatml_prompt
from tests.helpers.payloads import chat_payload, generate_payload
from tests.helpers.project import PROJECT_ROOT
from tests.helpers.qsv_failing_encoder.quicksviewer_failing import FAIL_FRAMES
from tools.media import write_video

LONG_FRAMES = 300  # 1 fps sampling of a 300 s clip: 300 frames
TIMING = re.compile(r"qsv-timing (\{.*\})")


def launch(model: Path, log: Path, env: dict) -> Server:
    return start_server(model, log, env={"SGLANG_QSV_TIMING": "1", **env})


@contextlib.contextmanager
def serving(model: Path, log: Path, env: dict, request):
    with reporting(launch(model, log, env), request, wait=True) as server:
        yield server


def records(server: Server, stage: str) -> list[dict]:
    text = server.log.read_text(errors="replace")
    found = [json.loads(m.group(1)) for m in TIMING.finditer(text)]
    return [r for r in found if r["stage"] == stage]


class TextStream:
    """A long greedy text answer streamed from /generate; the arrival time of
    every chunk (one per decoded token) is recorded until ``close``."""

    def __init__(self, server: Server):
        self.server, self.times, self.error = server, [], None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        body = {
            "text": chatml_prompt("", "Tell me a very long story."),
            "stream": True,
            "sampling_params": {
                "temperature": 0,
                "max_new_tokens": 6000,
                "ignore_eos": True,
            },
        }
        try:
            with requests.post(
                self.server.url + "/generate", json=body, stream=True, timeout=600
            ) as response:
                response.raise_for_status()
                for line in response.iter_lines():
                    if line.startswith(b"data: ") and line != b"data: [DONE]":
                        self.times.append(time.time())
                    if self._stop.is_set():
                        break  # closing the connection aborts the request
        except Exception as e:  # reported by the test
            self.error = e

    def wait_tokens(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.times) < count:
            assert self.error is None, self.error
            assert (
                time.monotonic() < deadline
            ), f"stream stalled{self.server.log_tail()}"
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        assert self.error is None, self.error

    def window(self, start: float, end: float) -> tuple[int, float]:
        """Tokens received in [start, end] and the largest gap between two
        consecutive tokens that overlaps it."""
        inside = sum(start <= t <= end for t in self.times)
        gaps = [
            b - a for a, b in zip(self.times, self.times[1:]) if b > start and a < end
        ]
        return inside, max(gaps, default=end - start)


def stall_run(server: Server, video: Path) -> dict:
    stream = TextStream(server)
    stream.wait_tokens(20)
    result = server.ok("/generate", generate_payload(str(video)))
    stream.wait_tokens(len(stream.times) + 5)  # it goes on after the video
    stream.close()
    (encoder,) = [r for r in records(server, "encoder") if r["frames"] == LONG_FRAMES]
    inside, max_gap = stream.window(encoder["t_start"], encoder["t_end"])
    return {"video": result, "encoder": encoder, "inside": inside, "max_gap": max_gap}


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("long") / "long.mp4"
    return write_video(path, LONG_FRAMES, 1.0, 32, 24, seed=7)


def test_text_stream_keeps_flowing_while_a_video_is_encoded(
    checkpoints, long_video, tmp_path, request
):
    model = checkpoints.converted("fp32")
    runs = {}
    for mode, switch in (("async", "1"), ("sync", "0")):
        env = {"SGLANG_QSV_ASYNC_ENCODE": switch}
        with serving(model, tmp_path / f"{mode}.log", env, request) as server:
            runs[mode] = stall_run(server, long_video)
    fast, slow = runs["async"], runs["sync"]
    for mode, run in runs.items():  # shown with pytest -rP
        encoder = run["encoder"]
        print(
            f"{mode}: encode {encoder['seconds']} s, {run['inside']} tokens of the "
            f"other stream meanwhile, its largest gap {run['max_gap']:.3f} s"
        )
    for run, is_async in ((fast, True), (slow, False)):
        assert run["encoder"]["async"] is is_async
        assert run["encoder"]["cache_hit"] is False  # a new video: encoded
        assert run["encoder"]["seconds"] >= 2.0, run["encoder"]  # long enough to see
    # the same prompt layout and the same greedy tokens both ways
    assert fast["video"]["meta_info"]["prompt_tokens"] == (
        slow["video"]["meta_info"]["prompt_tokens"]
    )
    assert fast["video"]["output_ids"] == slow["video"]["output_ids"]
    # the control: the synchronous encoder stops the other stream for its duration
    assert slow["inside"] == 0
    assert slow["max_gap"] >= 0.9 * slow["encoder"]["seconds"], slow
    # off the event loop: tokens keep coming, no gap near the encode's length
    seconds = fast["encoder"]["seconds"]
    assert fast["inside"] >= 10, fast
    assert fast["max_gap"] < 0.25 * seconds, fast


@pytest.fixture(scope="module")
def failing_server(checkpoints, tmp_path_factory, request):
    """An async server of the failing-encoder model package (see the module doc)."""
    env = {
        "SGLANG_QSV_ASYNC_ENCODE": "1",
        "SGLANG_EXTERNAL_MODEL_PACKAGE": "tests.helpers.qsv_failing_encoder",
        "PYTHONPATH": os.pathsep.join(
            [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        ),
    }
    log = tmp_path_factory.mktemp("failing") / "server.log"
    with serving(checkpoints.converted("fp32"), log, env, request) as server:
        yield server


def test_abort_while_the_video_is_encoded(failing_server, tmp_path):
    server, frames = failing_server, 200
    video = str(write_video(tmp_path / "abort.mp4", frames, 1.0, 32, 24, seed=21))
    rid = "qsv-abort-while-encoding"
    done = {}

    def send():
        done["response"] = server.post("/generate", generate_payload(video, rid=rid))
        done["time"] = time.time()

    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + 120
    while not [r for r in records(server, "processor") if r["frames"] == frames]:
        assert time.monotonic() < deadline, f"no processor record{server.log_tail()}"
        time.sleep(0.05)
    time.sleep(0.5)  # in the scheduler now, parked while the encoder runs
    abort = requests.post(server.url + "/abort_request", json={"rid": rid}, timeout=30)
    assert abort.status_code == 200, abort.text
    sender.join(timeout=60)
    assert "response" in done, f"the aborted request did not finish{server.log_tail()}"
    response = done["response"]
    if response.status_code == 200:
        finish = response.json()["meta_info"]["finish_reason"]
    else:
        finish = response.json()
    assert "abort" in json.dumps(finish).lower(), response.text

    # the same video again: the aborted request's encode (still running, or
    # done) is reused, not repeated; the aborted request itself never resumed
    again = server.ok("/generate", generate_payload(video, max_new_tokens=4))
    assert again["meta_info"]["finish_reason"]["type"] == "length"
    (encoder,) = [r for r in records(server, "encoder") if r["frames"] == frames]
    assert encoder["cache_hit"] is True and encoder["async"] is True
    # the abort answered while that encode was still running: the follow-up's
    # lookup ran after it (in the encoder's thread, behind it)
    assert done["time"] < encoder["t_start"], (done["time"], encoder)
    assert server.proc.poll() is None, f"server died{server.log_tail()}"


def test_a_failing_encoder_gives_a_clear_400(failing_server, tmp_path, videos):
    server = failing_server
    video = str(write_video(tmp_path / "fail.mp4", FAIL_FRAMES, 1.0, 32, 24))
    response = server.post("/v1/chat/completions", chat_payload(video))
    assert response.status_code == 400, f"{response.text}{server.log_tail()}"
    message = response.json()["message"]
    assert "Failed to process the multimodal inputs" in message, message
    assert f"test encoder failure on a {FAIL_FRAMES}-frame video" in message, message
    # it failed in the prefetch (off the event loop), not in pad_input_ids
    log = server.log.read_text(errors="replace")
    assert "Preparing the multimodal inputs of request" in log
    assert "pad_input_ids failed" not in log
    # the server keeps serving, videos included
    assert server.proc.poll() is None, f"server died{server.log_tail()}"
    chat = server.ok("/v1/chat/completions", chat_payload(str(videos["12s_30fps"])))
    assert chat["choices"][0]["finish_reason"] == "length"
