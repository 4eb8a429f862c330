"""The segmentation returned with the answer (``return_segments``), through the real
HTTP server (``python -m sglang.launch_server``, CPU, the converted fp32 tiny
checkpoint, ``SGLANG_QSV_TIMING=1`` so that every encode is logged).

The expected segmentation comes from the reference implementation (qsv_reference):
its cube bounds (``run.cube_bounds``, the original's ``find_segments`` of the
straight-through top-k) and its frame timestamps. Checked here:

* ``/v1/chat/completions`` with ``"return_segments": true`` has a top-level
  ``segments`` list equal to the reference's cubes and boundary scores for every
  parity video;
  ``/generate`` has it in ``meta_info["segments"]``; the answer is the same as
  without the field, and without the field there is no ``segments`` key anywhere;
* it comes from the request's own encode (one encoder run for a new video) and, for
  a video seen before, from the visual cache (no encoder run);
* streaming: chat completions send it once, in a chunk with empty choices after the
  finish_reason chunk and before the usage chunk; ``/generate`` only in the final
  chunk's meta_info;
* several videos (and an image) in one request: one entry per video, prompt order;
* segmentation only: ``max_tokens: 0`` (chat) / ``max_new_tokens: 0`` (generate)
  return it with no generated text, streamed or not;
* a non-boolean ``return_segments`` is a 400 on both endpoints.
"""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
import requests

from tests.helpers.http_server import REQUEST_TIMEOUT_S, reporting, start_server
from tests.helpers.model_fixtures import QUESTION, chatml_prompt
from tools.media import STANDARD_VIDEOS, write_video

VIDEOS = sorted(STANDARD_VIDEOS)
VIDEO = "12s_30fps"
TIMING = re.compile(r"qsv-timing (\{.*\})")


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory, request):
    log = tmp_path_factory.mktemp("segments-server") / "server.log"
    srv = start_server(
        checkpoints.converted("fp32"), log, env={"SGLANG_QSV_TIMING": "1"}
    )
    with reporting(srv, request):
        yield srv


def expected_segments(references, path) -> dict:
    """One video's segmentation from the reference: its frame timestamps, its
    cube bounds, with the times of each cube's first and last frame, and its
    boundary scores."""
    run = references.video("fp32", path)
    timestamps = [float(t) for t in run.frames.timestamps]
    assert len(run.cube_bounds) >= 2  # a real decision, not one cube
    return {
        "timestamps": timestamps,
        "cubes": [
            {
                "start_frame": start,
                "end_frame": end,
                "start_s": timestamps[start],
                "end_s": timestamps[end - 1],
            }
            for start, end in run.cube_bounds
        ],
        # the cubing network's P(a cube starts at frame j), j >= 1 (fp32: exact)
        "boundary_scores": [None, *run.encoding.cubes.probs.tolist()],
    }


def video_part(path) -> dict:
    return {"type": "video_url", "video_url": {"url": str(path)}}


def chat_payload(parts, max_tokens: int = 2, **extra) -> dict:
    return {
        "model": "quicksviewer",
        "messages": [
            {"role": "user", "content": [*parts, {"type": "text", "text": QUESTION}]}
        ],
        "temperature": 0,
        "repetition_penalty": 1.0,
        "max_tokens": max_tokens,
        **extra,
    }


def generate_payload(path, max_new_tokens: int = 2, **extra) -> dict:
    return {
        "text": chatml_prompt("<video>\n"),
        "video_data": [str(path)],
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens},
        **extra,
    }


def stream(server, path: str, payload: dict) -> list:
    """The parsed ``data:`` events of a streamed response, in order."""
    server.wait_ready()
    response = requests.post(
        server.url + path, json=payload, stream=True, timeout=REQUEST_TIMEOUT_S
    )
    assert response.status_code == 200, response.text + server.log_tail()
    events = []
    for line in response.iter_lines():
        if not line.startswith(b"data: "):
            continue
        data = line[len(b"data: ") :]
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    assert events and events[-1] == "[DONE]", events
    return events[:-1]


def encoder_records(server) -> list:
    """The encoder's qsv-timing records in the server log so far."""
    records = [json.loads(m.group(1)) for m in TIMING.finditer(server.log.read_text())]
    return [r for r in records if r["stage"] == "encoder"]


@pytest.mark.parametrize("video", VIDEOS)
def test_chat_segments_are_the_reference_cubes(video, server, videos, references):
    path = videos[video]
    answer = server.ok(
        "/v1/chat/completions", chat_payload([video_part(path)], return_segments=True)
    )
    assert answer["segments"] == [expected_segments(references, path)]
    assert answer["usage"]["completion_tokens"] == 2  # with the answer
    assert answer["choices"][0]["message"]["content"]


def test_default_responses_have_no_segments_and_the_answer_is_unchanged(
    server, videos, references
):
    path = videos[VIDEO]
    expected = expected_segments(references, path)
    plain = server.ok("/v1/chat/completions", chat_payload([video_part(path)], 8))
    assert "segments" not in plain
    with_segments = server.ok(
        "/v1/chat/completions",
        chat_payload([video_part(path)], 8, return_segments=True),
    )
    assert with_segments["segments"] == [expected]
    assert with_segments["choices"] == plain["choices"]
    assert with_segments["usage"] == plain["usage"]
    explicit_off = server.ok(
        "/v1/chat/completions",
        chat_payload([video_part(path)], 8, return_segments=False),
    )
    assert "segments" not in explicit_off

    plain = server.ok("/generate", generate_payload(path, 8))
    assert "segments" not in plain["meta_info"]
    generated = server.ok("/generate", generate_payload(path, 8, return_segments=True))
    assert generated["meta_info"]["segments"] == [expected]
    assert generated["output_ids"] == plain["output_ids"]
    assert generated["text"] == plain["text"]
    # a text-only request has no video to segment
    text_only = server.ok(
        "/generate",
        {
            "text": chatml_prompt(""),
            "sampling_params": {"max_new_tokens": 1},
            "return_segments": True,
        },
    )
    assert text_only["meta_info"]["segments"] == []


def test_one_encode_for_the_answer_and_the_visual_cache_after(
    server, references, tmp_path
):
    seconds, fps, width, height = STANDARD_VIDEOS["20s_29.97fps"]
    path = write_video(tmp_path / "new.mp4", seconds, fps, width, height, seed=31)
    expected = expected_segments(references, path)
    before = encoder_records(server)
    first = server.ok(
        "/v1/chat/completions", chat_payload([video_part(path)], return_segments=True)
    )
    after_first = encoder_records(server)
    # exactly one encoder run, a real one, gave the layout and the segmentation
    (record,) = after_first[len(before) :]
    assert record["cache_hit"] is False
    assert record["frames"] == len(expected["timestamps"])
    assert first["segments"] == [expected]

    again = server.ok(
        "/generate", generate_payload(path, max_new_tokens=1, return_segments=True)
    )
    (record,) = encoder_records(server)[len(after_first) :]
    assert record["cache_hit"] is True  # the visual cache's cube starts
    assert again["meta_info"]["segments"] == [expected]


def test_streamed_chat_sends_the_segments_after_the_finish_reason(
    server, videos, references
):
    path = videos["75s_10fps"]
    expected = expected_segments(references, path)
    payload = chat_payload(
        [video_part(path)],
        6,
        return_segments=True,
        stream=True,
        stream_options={"include_usage": True},
    )
    events = stream(server, "/v1/chat/completions", payload)
    carrying = [i for i, e in enumerate(events) if "segments" in e]
    assert len(carrying) == 1, events
    (at,) = carrying
    assert events[at]["segments"] == [expected]
    assert events[at]["choices"] == []
    finished = [
        i
        for i, e in enumerate(events)
        if any(c.get("finish_reason") for c in e["choices"])
    ]
    usage = [i for i, e in enumerate(events) if e.get("usage")]
    assert finished and usage, events
    assert finished[-1] < at < usage[0]
    text = "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"]
    )
    # the streamed answer is the answer
    plain = server.ok(
        "/v1/chat/completions",
        chat_payload([video_part(path)], 6, return_segments=True),
    )
    assert text == plain["choices"][0]["message"]["content"]
    assert plain["segments"] == [expected]

    # without the field no chunk has segments
    payload.pop("return_segments")
    events = stream(server, "/v1/chat/completions", payload)
    assert not [e for e in events if "segments" in e]


def test_streamed_generate_has_the_segments_in_the_final_chunk(
    server, videos, references
):
    path = videos[VIDEO]
    events = stream(
        server,
        "/generate",
        generate_payload(path, 4, return_segments=True, stream=True),
    )
    assert len(events) >= 2  # streamed, not one block
    assert all("segments" not in e["meta_info"] for e in events[:-1])
    final = events[-1]["meta_info"]
    assert final["finish_reason"]["type"] == "length"
    assert final["segments"] == [expected_segments(references, path)]


def small_png_data_url() -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (10, 200, 60)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_several_videos_one_entry_each_in_prompt_order(server, videos, references):
    first, second = videos["75s_10fps"], videos["6s_portrait"]
    parts = [
        video_part(first),
        {"type": "image_url", "image_url": {"url": small_png_data_url()}},
        video_part(second),
        video_part(first),
    ]
    answer = server.ok(
        "/v1/chat/completions", chat_payload(parts, 1, return_segments=True)
    )
    a, b = expected_segments(references, first), expected_segments(references, second)
    assert answer["segments"] == [a, b, a]


def test_segmentation_only_with_zero_tokens(server, videos, references):
    path = videos["500s_4fps"]  # 420 frames, 84 cubes
    expected = expected_segments(references, path)
    assert len(expected["cubes"]) == 84
    chat = server.ok(
        "/v1/chat/completions",
        chat_payload([video_part(path)], max_tokens=0, return_segments=True),
    )
    assert chat["segments"] == [expected]
    assert chat["choices"][0]["message"]["content"] == ""
    assert chat["usage"]["completion_tokens"] == 0

    generated = server.ok(
        "/generate", generate_payload(path, max_new_tokens=0, return_segments=True)
    )
    assert generated["meta_info"]["segments"] == [expected]
    assert generated["output_ids"] == [] and generated["text"] == ""
    assert generated["meta_info"]["completion_tokens"] == 0

    events = stream(
        server,
        "/v1/chat/completions",
        chat_payload([video_part(path)], 0, return_segments=True, stream=True),
    )
    assert [e["segments"] for e in events if "segments" in e] == [[expected]]
    assert not "".join(
        c["delta"].get("content") or "" for e in events for c in e["choices"]
    )


@pytest.mark.parametrize("value", ["true", 1, 0, None, [True], {"on": True}])
def test_a_non_boolean_return_segments_is_a_400(value, server, videos):
    path = videos[VIDEO]
    for endpoint, payload in (
        ("/v1/chat/completions", chat_payload([video_part(path)], 1)),
        ("/generate", generate_payload(path, 1)),
    ):
        payload["return_segments"] = value
        response = server.post(endpoint, payload)
        assert response.status_code == 400, (endpoint, value, response.text)
        assert "return_segments" in response.text, response.text
    assert server.proc.poll() is None, f"server died{server.log_tail()}"
