"""examples/video_qa_client.py and examples/video_timeline.py against the real HTTP
server on CPU.

One ``python -m sglang.launch_server`` on the converted fp32 tiny checkpoint (the
demo's recipe, plus ``--enable-cache-report``), local media allowed from this
module's video directory only. The examples run as a user would run them, in a
subprocess: a streamed answer about a local video, then a follow-up turn that sends
the conversation again and reuses the video (radix cache, visual cache, frame cache);
a video's event timeline (segmentation only), whose cubes are the reference's, and
the timelines of two videos with the answer to a question.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers.http_server import start_server
from tests.helpers.project import PROJECT_ROOT
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


def run_example(*args, script=EXAMPLE) -> subprocess.CompletedProcess:
    # the example's own interpreter and working directory: the user's
    return subprocess.run(
        [sys.executable, str(script), *map(str, args)],
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


TIMELINE = PROJECT_ROOT / "examples" / "video_timeline.py"


def run_timeline(*args) -> subprocess.CompletedProcess:
    return run_example(*args, script=TIMELINE)


def reference_cubes(references, path) -> tuple[list[float], list[tuple[int, int]]]:
    """The reference's frame timestamps and cube bounds (right-open) of a video."""
    run = references.video("fp32", path)
    return [float(t) for t in run.frames.timestamps], list(run.cube_bounds)


def test_timeline_example_prints_the_reference_cubes(
    server, media, references, tmp_path
):
    video = write_video(media / "events.mp4", 20, 10.0, 48, 32, seed=5)
    timestamps, bounds = reference_cubes(references, video)
    assert len(bounds) >= 3
    out = tmp_path / "timeline.json"
    proc = run_timeline(
        "--base-url", server.url + "/v1", "--video", video, "--json", out
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + server.log_tail()
    result = json.loads(out.read_text())
    assert result["answer"] is None  # segmentation only: max_tokens 0
    (segments,) = result["segments"]
    assert segments["timestamps"] == timestamps
    assert [(c["start_frame"], c["end_frame"]) for c in segments["cubes"]] == bounds
    assert [(c["start_s"], c["end_s"]) for c in segments["cubes"]] == [
        (timestamps[s], timestamps[e - 1]) for s, e in bounds
    ]
    lines = proc.stdout.splitlines()
    assert f"{len(timestamps)} frames sampled" in lines[0]
    assert lines[0].endswith(f"{len(bounds)} events")
    assert len(lines) == 1 + len(bounds)
    probs = references.video("fp32", video).encoding.cubes.probs.tolist()
    assert segments["boundary_scores"] == [None, *probs]
    for line, (start, end) in zip(lines[1:], bounds):
        assert f"frames {start}-{end - 1} ({end - start} frame" in line, line
        if start:  # the score of the event's first frame, P(boundary at frame j)
            assert line.endswith(f"  boundary {probs[start - 1]:.2f}"), line
        else:
            assert "boundary" not in line, line
    assert "ANSWER" not in proc.stdout


def test_timeline_example_with_a_question_and_two_videos(
    server, media, references, tmp_path
):
    first = write_video(media / "first.mp4", 12, 10.0, 48, 32, seed=6)
    second = write_video(media / "second.mp4", 9, 10.0, 48, 32, seed=7)
    out = tmp_path / "timeline.json"
    proc = run_timeline(
        "--base-url",
        server.url + "/v1",
        "--video",
        first,
        "--video",
        second,
        "--question",
        "What changes?",
        "--max-tokens",
        4,
        "--json",
        out,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr + server.log_tail()
    result = json.loads(out.read_text())
    for segments, video in zip(result["segments"], (first, second), strict=True):
        timestamps, bounds = reference_cubes(references, video)
        assert segments["timestamps"] == timestamps
        got = [(c["start_frame"], c["end_frame"]) for c in segments["cubes"]]
        assert got == bounds
    assert result["answer"]  # the answer of the same request
    assert f"ANSWER: {result['answer']}" in proc.stdout
    assert proc.stdout.count("events") == 2


def test_timeline_example_reports_a_bad_video_with_exit_status_1(server, media):
    proc = run_timeline("--base-url", server.url + "/v1", "--video", media / "none.mp4")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "error: the server answered 400" in proc.stderr
    assert "Traceback" not in proc.stderr
