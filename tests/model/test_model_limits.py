"""Resource limits of media inputs, against the real HTTP server on CPU (#10).

One server with tight limits (environment variables of
``sglang.srt.multimodal.quicksviewer_limits``) and a loopback HTTP server that
serves videos, large files, slow responses and errors. Every case gets a 400 whose
message names the limit (and its variable) or the URL and the cause; a good video
still gets a 200 (also downloaded over http), and the server keeps serving.
"""

from __future__ import annotations

import base64
import http.server
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from PIL import Image

from tests.helpers.http_server import start_server
from tests.helpers.model_fixtures import chatml_prompt
from tools.media import write_video

LIMITS = {
    "SGLANG_QSV_MAX_VIDEO_MB": "1",
    "SGLANG_QSV_MAX_IMAGE_MB": "0.5",
    "SGLANG_QSV_MAX_VIDEO_SECONDS": "30",
    "SGLANG_QSV_MAX_FRAME_SIDE": "200",
    "SGLANG_QSV_FETCH_TIMEOUT_S": "3",
    "SGLANG_QSV_MAX_VIDEOS_PER_REQUEST": "1",
    "SGLANG_QSV_MAX_IMAGES_PER_REQUEST": "2",
}


class Files(http.server.BaseHTTPRequestHandler):
    """GET /<name>: a file of the directory; /slow: a trickle; /missing: 404;
    /chunked-big: 2 MB without Content-Length."""

    directory: Path

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Type", "video/mp4")
            self.end_headers()
            try:
                for _ in range(40):  # 10 s, 1 KB every 0.25 s
                    self.wfile.write(os.urandom(1024))
                    self.wfile.flush()
                    time.sleep(0.25)
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        if self.path == "/chunked-big":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for _ in range(32):
                    block = os.urandom(65536)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            return
        path = self.directory / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("limited-media")
    write_video(directory / "good.mp4", 12, 10.0, 96, 64, seed=3)
    write_video(directory / "long.mp4", 40, 2.0, 48, 32, seed=4)
    write_video(directory / "wide.mp4", 4, 10.0, 256, 64, seed=5)
    (directory / "big.mp4").write_bytes(os.urandom(2 << 20))
    noise = np.random.RandomState(0).randint(0, 256, (700, 700, 3), dtype=np.uint8)
    Image.fromarray(noise).save(directory / "big.png")  # ~1.4 MB, incompressible
    Image.fromarray(noise[:64, :64]).save(directory / "small.png")
    return directory


@pytest.fixture(scope="module")
def files_url(media):
    handler = type("Handler", (Files,), {"directory": media})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    log = tmp_path_factory.mktemp("limited-server") / "server.log"
    srv = start_server(
        checkpoints.converted("fp32"), log, env=LIMITS, extra_args=("--enable-metrics",)
    )
    yield srv
    srv.stop()


def generate(videos=(), images=(), max_new_tokens=1) -> dict:
    text = "<video>\n" * len(videos) + "<image>\n" * len(images)
    payload = {
        "text": chatml_prompt(text),
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens},
    }
    if videos:
        payload["video_data"] = list(videos)
    if images:
        payload["image_data"] = list(images)
    return payload


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def cases(media: Path, url: str) -> dict:
    good = str(media / "good.mp4")
    # one case a limit, alike only in shape: each its own input and message
    return {
        "video bytes": (
            generate([str(media / "big.mp4")]),
            "the server accepts at most 1 MB (SGLANG_QSV_MAX_VIDEO_MB)",
        ),
        "video bytes, base64": (
            generate([data_url(media / "big.mp4", "video/mp4")]),
            "(SGLANG_QSV_MAX_VIDEO_MB)",
        ),
        "video bytes, download with Content-Length": (
            generate([f"{url}/big.mp4"]),
            "(SGLANG_QSV_MAX_VIDEO_MB)",
        ),
        "video bytes, chunked download": (
            generate([f"{url}/chunked-big"]),
            "(SGLANG_QSV_MAX_VIDEO_MB)",
        ),
        "download deadline": (
            generate([f"{url}/slow"]),
            "not complete after 3 s (SGLANG_QSV_FETCH_TIMEOUT_S)",
        ),
        "HTTP error status": (
            generate([f"{url}/missing.mp4"]),
            f"Could not fetch video '{url}/missing.mp4': HTTP 404",
        ),
        "unreachable URL": (
            generate(["http://127.0.0.1:9/nothing.mp4"]),
            "Could not fetch video 'http://127.0.0.1:9/nothing.mp4': ConnectionError",
        ),
        "duration": (
            generate([str(media / "long.mp4")]),
            "The video lasts 40 s; the server accepts at most 30 s",
        ),
        "frame size": (
            generate([str(media / "wide.mp4")]),
            "frames are 256x64; the server accepts at most 200 pixels a side",
        ),
        "videos per request": (
            generate([good, good]),
            "The request has 2 videos; the server accepts at most 1",
        ),
        "images per request": (
            generate(images=[str(media / "small.png")] * 3),
            "The request has 3 images; the server accepts at most 2",
        ),
        "image bytes": (
            generate(images=[str(media / "big.png")]),
            "(SGLANG_QSV_MAX_IMAGE_MB)",
        ),
        "image bytes, base64": (
            generate(images=[data_url(media / "big.png", "image/png")]),
            "(SGLANG_QSV_MAX_IMAGE_MB)",
        ),
        "image bytes, download": (
            generate(images=[f"{url}/big.png"]),
            "(SGLANG_QSV_MAX_IMAGE_MB)",
        ),
    }


CASES = [
    "video bytes",
    "video bytes, base64",
    "video bytes, download with Content-Length",
    "video bytes, chunked download",
    "download deadline",
    "HTTP error status",
    "unreachable URL",
    "duration",
    "frame size",
    "videos per request",
    "images per request",
    "image bytes",
    "image bytes, base64",
    "image bytes, download",
]


@pytest.mark.parametrize("case", CASES)
def test_limit_gives_a_clear_400(case, server, media, files_url):
    payload, message = cases(media, files_url)[case]
    started = time.monotonic()
    response = server.post("/generate", payload)
    assert response.status_code == 400, response.text
    assert message in response.text, response.text
    assert "Traceback" not in response.text and "/tmp/" not in response.text
    if case == "download deadline":
        assert time.monotonic() - started < 9  # the 10 s trickle was cut at 3 s


def test_good_media_within_the_limits_are_served(server, media, files_url):
    local = server.ok("/generate", generate([str(media / "good.mp4")]))
    fetched = server.ok("/generate", generate([f"{files_url}/good.mp4"]))
    assert fetched["meta_info"]["prompt_tokens"] == local["meta_info"]["prompt_tokens"]
    assert fetched["output_ids"] == local["output_ids"]
    image = server.ok("/generate", generate(images=[f"{files_url}/small.png"]))
    assert image["meta_info"]["prompt_tokens"] > 64
    assert server.proc.poll() is None, f"server died{server.log_tail()}"

    # the downloaded copy has the same content: the visual cache hit it, and
    # /metrics counts it (#8: hits and misses in /metrics)
    metrics = requests.get(server.url + "/metrics", timeout=30).text
    counts = {}
    for line in metrics.splitlines():
        if line.startswith("sglang:quicksviewer_visual_cache_lookups_total{"):
            result = line.split('result="')[1].split('"')[0]
            counts[result] = counts.get(result, 0) + float(line.split()[-1])
    assert counts.get("hit", 0) >= 1 and counts.get("miss", 0) >= 1, metrics[-3000:]
