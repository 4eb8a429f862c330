"""Quicksviewer behind the real HTTP server (``python -m sglang.launch_server``).

One server on the converted fp32 tiny checkpoint, CPU, for the whole module; its
log is kept and shown when a check fails. Checked here:

* ``/v1/chat/completions`` with a local mp4 as ``video_url`` then the question: the
  "quicksviewer" template is picked automatically and renders the original
  conv_qwen2 prompt (same prompt ids as ``/generate`` on that text, and the final ids
  of ``/generate`` are the reference's), and the greedy completion is the
  reference's 16 tokens, decoded with ``skip_special_tokens=True``;
* unusable videos (random bytes as a data URL and as a file, an empty file, a text
  file named .mp4, a PNG image, a 1-frame video, a missing path) each give a 4xx
  with a clear message, and the server then answers a good request normally;
* the radix cache: the same video again reuses the KV of the whole video, another
  video (same length, other pixels) shares only the text before the first visual
  position.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from tests.helpers.http_server import reporting, start_server
from tests.helpers.model_fixtures import as_reported, reported_input_ids
from tests.helpers.payloads import NEW_TOKENS, chat_payload, generate_payload
from tests.helpers.project import SGLANG_VERSION
from tools.media import STANDARD_VIDEOS, write_video

VIDEO = "12s_30fps"
IMAGE_TOKEN_INDEX = -200  # the reference's visual sentinel


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory, request):
    log = tmp_path_factory.mktemp("server") / "server.log"
    with reporting(start_server(checkpoints.converted("fp32"), log), request) as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(references, videos):
    return references.video("fp32", videos[VIDEO], max_new_tokens=NEW_TOKENS)


@pytest.fixture(scope="module")
def tokenizer(references):
    return references.model("fp32").tokenizer


def test_chat_completion_matches_reference(server, videos, reference, tokenizer):
    path = str(videos[VIDEO])
    chat = server.ok(
        "/v1/chat/completions", chat_payload(path, return_prompt_token_ids=True)
    )
    (choice,) = chat["choices"]
    assert len(reference.tokens) == NEW_TOKENS  # no early eos: 16 tokens compared
    expected_text = tokenizer.decode(reference.tokens, skip_special_tokens=True)
    assert choice["message"]["content"] == expected_text
    assert choice["finish_reason"] == "length"
    usage = chat["usage"]
    assert usage["completion_tokens"] == NEW_TOKENS
    # the prompt after cubing (timestamps of the cube starts + 64 per block)
    assert usage["prompt_tokens"] == len(reference.expanded_input_ids)

    # the chat template rendered exactly the original prompt: /generate on
    # conv_qwen2's text (<video> where the original puts the video) tokenizes the
    # same, and its final ids (after cubing) are the reference's
    generated = server.ok(
        "/generate",
        generate_payload(
            path, return_logprob=True, logprob_start_len=0, return_prompt_token_ids=True
        ),
    )
    assert choice["prompt_token_ids"] == generated["prompt_token_ids"]
    meta = generated["meta_info"]
    expected_ids = as_reported(reference.expanded_input_ids, len(tokenizer))
    assert reported_input_ids(meta) == expected_ids
    assert generated["output_ids"] == reference.tokens
    assert generated["text"] == expected_text


# name -> what the error message must say
BAD_VIDEOS = {
    "random_bytes_data_url": "Could not decode video",
    "random_bytes_file": "Could not decode video",
    "empty_file": "Could not decode video",
    "text_file_named_mp4": "Could not decode video",
    "png_image": "Could not decode video",
    "one_frame_video": "at least 2 frames",
    "missing_path": "neither an existing file",
    "empty_url": "The video URL is empty",
    # loopback port 9 (discard): nothing listens, the connection is refused
    "refused_url": "Could not fetch video 'http://127.0.0.1:9/clip.mp4'",
}


def bad_video(case: str, directory: Path) -> str:
    """The video URL of one of BAD_VIDEOS, written into ``directory``."""
    path = directory / "video.mp4"
    if case == "random_bytes_data_url":
        data = base64.b64encode(os.urandom(8192)).decode()
        return f"data:video/mp4;base64,{data}"
    if case == "random_bytes_file":
        path.write_bytes(os.urandom(8192))
    elif case == "empty_file":
        path.write_bytes(b"")
    elif case == "text_file_named_mp4":
        path.write_text("just some text\n" * 50)
    elif case == "png_image":
        from PIL import Image

        path = directory / "picture.png"
        Image.new("RGB", (96, 64), (200, 30, 30)).save(path)
    elif case == "one_frame_video":
        # 1 s at 30 fps: one frame at 1 fps
        write_video(path, 1, 30.0, 96, 64)
    elif case == "empty_url":
        return ""
    elif case == "refused_url":
        return "http://127.0.0.1:9/clip.mp4"
    elif case != "missing_path":
        raise KeyError(case)
    return str(path)


@pytest.mark.parametrize("case", list(BAD_VIDEOS))
def test_bad_video_gives_a_clear_4xx(case, server, tmp_path, reference, tokenizer):
    url = bad_video(case, tmp_path)
    response = server.post("/v1/chat/completions", chat_payload(url))
    assert (
        400 <= response.status_code < 500
    ), f"{case}: {response.status_code} {response.text}{server.log_tail()}"
    message = response.json()["message"]
    assert BAD_VIDEOS[case] in message, response.text
    assert "qsv-video-" not in message, message  # no temporary file of ours
    assert server.proc.poll() is None, f"server died{server.log_tail()}"


# name -> what the error message must say
BAD_IMAGES = {
    "mp4_as_image": "Could not open the image",
    "corrupt_png_bytes": "Could not open the image",
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_gives_a_clear_4xx(case, server, videos, tmp_path):
    if case == "mp4_as_image":
        url = str(videos[VIDEO])
    else:
        png = tmp_path / "x.png"
        from PIL import Image

        Image.new("RGB", (32, 32), (1, 2, 3)).save(png)
        data = bytearray(png.read_bytes())
        data[40:] = os.urandom(len(data) - 40)  # valid signature, corrupt body
        url = "data:image/png;base64," + base64.b64encode(bytes(data)).decode()
    payload = chat_payload("unused")
    payload["messages"][0]["content"][0] = {
        "type": "image_url",
        "image_url": {"url": url},
    }
    response = server.post("/v1/chat/completions", payload)
    assert (
        400 <= response.status_code < 500
    ), f"{case}: {response.status_code} {response.text}{server.log_tail()}"
    assert BAD_IMAGES[case] in response.json()["message"], response.text
    assert server.proc.poll() is None, f"server died{server.log_tail()}"


def test_server_serves_after_bad_videos(server, videos, reference, tokenizer):
    """Runs after the bad inputs (file order): the next good request is normal."""
    chat = server.ok("/v1/chat/completions", chat_payload(str(videos[VIDEO])))
    expected_text = tokenizer.decode(reference.tokens, skip_special_tokens=True)
    assert chat["choices"][0]["message"]["content"] == expected_text
    assert chat["usage"]["prompt_tokens"] == len(reference.expanded_input_ids)


def test_radix_cache_shares_only_the_same_video(server, tmp_path, reference, tokenizer):
    seconds, fps, width, height = STANDARD_VIDEOS[VIDEO]
    # new to this server, same length as each other (the same prompt layout)
    first = str(write_video(tmp_path / "a.mp4", seconds, fps, width, height, seed=11))
    other = str(write_video(tmp_path / "b.mp4", seconds, fps, width, height, seed=12))
    # the text before the first visual position: <|im_start|>user\n<video_start>
    # <thumbnail_start> (all prompts of this module start so)
    prefix = reference.expanded_input_ids.index(IMAGE_TOKEN_INDEX)
    assert prefix == 5

    # (no input logprobs here: logprob_start_len=0 bypasses the prefix cache)
    cold = server.ok("/generate", generate_payload(first, 4))
    assert cold["meta_info"]["cached_tokens"] == prefix
    # the text after <video_end> is the same in every prompt of this module
    ref_ids = reference.expanded_input_ids
    suffix = len(ref_ids) - ref_ids.index(
        tokenizer.convert_tokens_to_ids("<video_end>")
    )
    video_end = cold["meta_info"]["prompt_tokens"] - suffix

    warm = server.ok("/generate", generate_payload(first, 4))
    cached = warm["meta_info"]["cached_tokens"]
    assert video_end + 1 <= cached < warm["meta_info"]["prompt_tokens"], (
        cached,
        video_end,
    )
    assert warm["output_ids"] == cold["output_ids"]

    another = server.ok("/generate", generate_payload(other, 4))
    assert another["meta_info"]["cached_tokens"] == prefix


def test_video_url_fps_and_max_frames(server, videos, tmp_path):
    """A video_url part's fps / max_frames change the sampled frames (so the prompt);
    out of bounds is a 400 that says which bound, and the server keeps serving."""
    path = str(videos[VIDEO])
    default = server.ok("/v1/chat/completions", chat_payload(path, max_tokens=1))
    payload = chat_payload(path, max_tokens=1)
    payload["messages"][0]["content"][0]["video_url"].update(fps=2, max_frames=30)
    sampled = server.ok("/v1/chat/completions", payload)
    # 24 frames at 2 fps: 5 cubes, against 2 cubes of the default 12 frames
    assert sampled["usage"]["prompt_tokens"] != default["usage"]["prompt_tokens"]
    payload["messages"][0]["content"][0]["video_url"].update(fps=100)
    response = server.post("/v1/chat/completions", payload)
    assert response.status_code == 400, response.text
    assert "fps must be between 1 and 60" in response.json()["message"]
    assert server.proc.poll() is None, f"server died{server.log_tail()}"

    # /generate: the same fields on a video object; the same frames, so the same
    # prompt as the chat request
    item = {"url": path, "fps": 2, "max_frames": 30}
    generated = server.ok("/generate", generate_payload(item, 1))
    assert generated["meta_info"]["prompt_tokens"] == sampled["usage"]["prompt_tokens"]
    ours = "takes the keys url (required), fps"
    # SGLang's HTTP layer refuses unknown keys of a video object itself since 0.5.23
    # (a 400 that names the key), before the model's processor sees the request
    since_0_5_23 = tuple(map(int, SGLANG_VERSION.split("."))) >= (0, 5, 23)
    unknown_key = "unknown field `frames`" if since_0_5_23 else ours
    for bad, message in (
        ({"url": path, "max_frames": 1}, "max_frames must be between 2 and"),
        ({"url": path, "frames": 8}, unknown_key),
        ({"fps": 2}, ours),
    ):
        response = server.post("/generate", generate_payload(bad, 1))
        assert response.status_code == 400, response.text
        assert message in response.text, response.text
    assert server.proc.poll() is None, f"server died{server.log_tail()}"
