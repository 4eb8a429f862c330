"""The main job on an embedded default: serve a tiny Quicksviewer on CPU and ask
it about a generated video through the OpenAI-compatible HTTP server.

    python -m tools demo [--workdir build/demo] [--question "..."] [--prepare-only]

It builds a seeded tiny checkpoint in the original format, converts it, writes
a 12 s mp4, starts ``python -m sglang.launch_server`` from the patched tree
(.venv imports build/sglang), sends one ``/v1/chat/completions`` request with a
``video_url`` part, prints the request and the answer, and stops the server.
The weights are random, so the answer is gibberish; the layout is the real one.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from tools import PROJECT_ROOT
from tools.server import Server, ServerError, cpu_server_command, free_port

DEFAULT_WORKDIR = PROJECT_ROOT / "build" / "demo"
DEFAULT_QUESTION = "What is happening in the video?"


def post(url: str, payload: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def prepare(workdir: Path) -> tuple[Path, Path]:
    """The converted tiny checkpoint and the demo video in ``workdir`` (kept)."""
    from tools.checkpoints.convert import convert_checkpoint
    from tools.checkpoints.tiny import make_tiny_checkpoint
    from tools.media import write_video

    original = workdir / "quicksviewer-tiny-original"
    converted = workdir / "quicksviewer-tiny"
    video = workdir / "demo.mp4"
    if not (original / "config.json").exists():
        make_tiny_checkpoint(original, seed=0, dtype="fp32")
    convert_checkpoint(original, converted, log=lambda line: None)
    if not video.exists():
        write_video(video, seconds=12, fps=30.0, width=320, height=240, seed=0)
    return converted, video


def demo(
    workdir: Path = DEFAULT_WORKDIR,
    question: str = DEFAULT_QUESTION,
    prepare_only: bool = False,
) -> None:
    converted, video = prepare(workdir)
    if prepare_only:
        return
    port = free_port()
    command = cpu_server_command(converted, port)
    # local media only from the demo's own directory (docs/design.md)
    env = {"SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH": str(workdir)}
    print(f"$ SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH={workdir}", end=" ")
    print(" ".join(command), flush=True)
    with Server(
        command, port, workdir / "server.log", env, start_timeout=300
    ) as server:
        try:
            server.wait_ready()
        except ServerError:
            print(server.log_tail(3000), file=sys.stderr)
            raise
        payload = {
            "model": "quicksviewer",
            "temperature": 0,
            "max_tokens": 24,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": str(video)}},
                        {"type": "text", "text": question},
                    ],
                }
            ],
        }
        print("POST /v1/chat/completions", json.dumps(payload, indent=1))
        start = time.time()
        answer = post(f"{server.url}/v1/chat/completions", payload)
        print(
            f"answer in {time.time() - start:.1f} s "
            f"(random weights: expect gibberish):"
        )
        print(json.dumps(answer["choices"][0]["message"], ensure_ascii=False))
        print("usage:", json.dumps(answer["usage"]))
