"""examples/video_qa_client.py against the real HTTP server on CPU.

One ``python -m sglang.launch_server`` on the converted fp32 tiny checkpoint (the
demo's recipe, plus ``--enable-cache-report``), local media allowed from this
module's video directory only. The example runs as a user would run it, in a
subprocess: a streamed answer about a local video, then a follow-up turn that sends
the conversation again and reuses the video (radix cache, visual cache, frame cache).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers.http_server import start_server
from tests.quicksviewer_fixtures import PROJECT_ROOT
from tools.media import STANDARD_VIDEOS, write_video

EXAMPLE = PROJECT_ROOT / "examples" / "video_qa_client.py"
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    return tmp_path_factory.mktemp("example-media")


@pytest.fixture(scope="module")
def server(checkpoints, media, tmp_path_factory):
    log = tmp_path_factory.mktemp("example-server") / "server.log"
    srv = start_server(
        checkpoints.converted("fp32"),
        log,
        extra_args=("--enable-cache-report",),
        env={"SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH": str(media)},
    )
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def server_log(server) -> str:
    return server.log.read_text(errors="replace")


def run_example(*args) -> subprocess.CompletedProcess:
    # the example's own interpreter and working directory: the user's
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


def test_example_streams_an_answer_and_the_follow_up_reuses_the_video(
    server, media, tmp_path
):
    seconds, fps, width, height = STANDARD_VIDEOS["12s_30fps"]
    video = write_video(media / "clip.mp4", seconds, fps, width, height, seed=21)
    turns_path = tmp_path / "turns.json"
    proc = run_example(
        "--base-url",
        server.url + "/v1",
        "--video",
        os.path.relpath(video, PROJECT_ROOT),  # a relative path works too
        "--max-tokens",
        8,
        "--temperature",
        0,
        "--json",
        turns_path,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + server.log_tail()
    first, follow_up = json.loads(turns_path.read_text())
    for turn in (first, follow_up):
        assert turn["text"].strip(), turn
        assert turn["chunks"] >= 2, turn  # streamed, not one block
        assert turn["completion_tokens"] == 8
        assert turn["text"] in proc.stdout  # printed as it streamed
    assert proc.stdout.count("USER: ") == 2
    # the follow-up sends the video again (its prompt holds the whole first turn)
    # and the server reuses it: the first turn's prompt, video included, comes
    # from the radix cache (all but its last token), the frames and the visual
    # encoding from the model's caches
    assert follow_up["prompt_tokens"] > first["prompt_tokens"] + 8
    assert follow_up["cached_tokens"] >= first["prompt_tokens"] - 1
    assert first["cached_tokens"] < first["prompt_tokens"] // 2  # a new video
    log = server_log(server)
    hits = re.findall(r"Quicksviewer visual cache: (\d+) hits", log)
    assert hits and int(hits[-1]) >= 1, log[-4000:]
    hits = re.findall(r"Quicksviewer frame cache: (\d+) hits", log)
    assert hits and int(hits[-1]) >= 1, log[-4000:]


def test_example_reports_a_bad_video_with_exit_status_1(server, media):
    proc = run_example(
        "--base-url", server.url + "/v1", "--video", media / "missing.mp4"
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: the server answered 400" in proc.stderr
    assert "neither an existing file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert server.proc.poll() is None  # still serving
