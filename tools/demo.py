"""The main job on an embedded default: serve a tiny Quicksviewer on CPU and ask
it about a generated video through the OpenAI-compatible HTTP server.

    python -m tools.demo [--workdir build/demo] [--question "..."]

It builds a seeded tiny checkpoint in the original format, converts it, writes
a 12 s mp4, starts ``python -m sglang.launch_server`` from the patched tree
(.venv imports build/sglang), sends one ``/v1/chat/completions`` request with a
``video_url`` part, prints the request and the answer, and stops the server.
The weights are random, so the answer is gibberish; the layout is the real one.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_server_command(model: Path, port: int, dtype: str = "float32") -> list[str]:
    """``python -m sglang.launch_server`` on CPU, the README's recipe (the demo's,
    and the tests' server)."""
    return [
        sys.executable,
        "-m",
        "sglang.launch_server",
        "--model-path",
        str(model),
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
        "--port",
        str(port),
    ]


def post(url: str, payload: dict, timeout: float = 300) -> dict:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def main(argv: list[str] | None = None) -> int:
    from tests.videos import write_video
    from tools.checkpoints.convert import convert_checkpoint
    from tools.checkpoints.tiny import make_tiny_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=REPO / "build" / "demo")
    parser.add_argument("--question", default="What is happening in the video?")
    parser.add_argument(
        "--prepare-only", action="store_true", help="only write the files"
    )
    args = parser.parse_args(argv)

    original = args.workdir / "quicksviewer-tiny-original"
    converted = args.workdir / "quicksviewer-tiny"
    video = args.workdir / "demo.mp4"
    if not (original / "config.json").exists():
        make_tiny_checkpoint(original, seed=0, dtype="fp32")
    convert_checkpoint(original, converted, log=lambda line: None)
    if not video.exists():
        write_video(video, seconds=12, fps=30.0, width=320, height=240, seed=0)
    if args.prepare_only:
        return 0

    port = free_port()
    log_path = args.workdir / "server.log"
    command = cpu_server_command(converted, port)
    # local media only from the demo's own directory (docs/design.md)
    env = dict(os.environ, SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH=str(args.workdir))
    print(f"$ SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH={args.workdir}", end=" ")
    print(" ".join(command), flush=True)
    with open(log_path, "w") as log:
        server = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=env,
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.time() + 300
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    print(log_path.read_text()[-3000:], file=sys.stderr)
                    print("error: the server did not start", file=sys.stderr)
                    return 1
                time.sleep(1)
        payload = {
            "model": "quicksviewer",
            "temperature": 0,
            "max_tokens": 24,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": str(video)}},
                        {"type": "text", "text": args.question},
                    ],
                }
            ],
        }
        print("POST /v1/chat/completions", json.dumps(payload, indent=1))
        start = time.time()
        answer = post(f"{base}/v1/chat/completions", payload)
        print(
            f"answer in {time.time() - start:.1f} s "
            f"(random weights: expect gibberish):"
        )
        print(json.dumps(answer["choices"][0]["message"], ensure_ascii=False))
        print("usage:", json.dumps(answer["usage"]))
        return 0
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
