"""The HTTP server on the GPU with CUDA graphs on: an OpenAI chat request with a
local mp4, a corrupt video (expect 4xx), then the good request again.
Writes $OUT/server.json."""

import os

import requests
from common import (
    OUT,
    QUESTION,
    WORK,
    Timer,
    checkpoint_dirs,
    server_flags,
    video,
    write_result,
)

from tools.server import Server, server_command

PORT = 30555


def main():
    _, converted = checkpoint_dirs()
    path = video("60s")
    corrupt = WORK / "corrupt.mp4"
    corrupt.write_bytes(os.urandom(65536))
    args = server_flags()
    OUT.mkdir(parents=True, exist_ok=True)
    timer = Timer()
    server = Server(server_command(converted, PORT, args), PORT, OUT / "server.log")
    result = {"cuda_graph": True}
    try:
        server.wait_ready()
        result["ready_s"] = timer()

        def chat(url):
            t = Timer()
            r = requests.post(
                f"{server.url}/v1/chat/completions",
                json={
                    "model": "quicksviewer",
                    "temperature": 0,
                    "max_tokens": 16,
                    "messages": [
                        {
                            "role": "user",
                            "content": [
                                {"type": "video_url", "video_url": {"url": url}},
                                {"type": "text", "text": QUESTION},
                            ],
                        }
                    ],
                },
                timeout=600,
            )
            return r.status_code, r.json(), t()

        result["chat"] = chat(str(path))
        result["corrupt"] = chat(str(corrupt))[:2]
        result["chat_again"] = chat(str(path))
        result["ok"] = (
            result["chat"][0] == 200
            and 400 <= result["corrupt"][0] < 500
            and result["chat_again"][0] == 200
            and result["chat"][1]["choices"][0]["message"]["content"]
            == result["chat_again"][1]["choices"][0]["message"]["content"]
        )
    finally:
        server.stop()
    result["cuda_graph_log"] = [
        line.strip() for line in open(OUT / "server.log") if "graph" in line.lower()
    ][:10]
    write_result("server", result)


if __name__ == "__main__":
    main()
