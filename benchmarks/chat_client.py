"""The HTTP side shared by the benchmarks and the Video-MME harness.

* ``chat_stream``: one streamed OpenAI ``/v1/chat/completions`` call, with the
  arrival time of every content chunk (time to first token, inter-token latency),
  the text, the usage the server reports and the finish reason. It never raises for
  a failed request: HTTP errors, errors inside the stream and transport errors are
  returned in ``ChatResult.error``.
* ``user_turn`` / ``video_part``: a user message with a local ``video_url`` part,
  optionally with the per-request frame sampling (``fps``, ``max_frames``; patch
  0008).
* starting and stopping ``python -m sglang.launch_server``: ``tools.server``
  (``launch`` returns a ``Server``; ``server.stop()``).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field

import requests

MODEL = "quicksviewer"


def video_part(
    url: str, fps: float | None = None, max_frames: int | None = None
) -> dict:
    video = {"url": url}
    if fps is not None:
        video["fps"] = fps
    if max_frames is not None:
        video["max_frames"] = max_frames
    return {"type": "video_url", "video_url": video}


def user_turn(
    video: str,
    question: str,
    fps: float | None = None,
    max_frames: int | None = None,
) -> dict:
    """The video first, then the question: the original's ``[video] + [question]``."""
    return {
        "role": "user",
        "content": [
            video_part(video, fps, max_frames),
            {"type": "text", "text": question},
        ],
    }


@dataclass
class ChatResult:
    sent: float  # wall clock (time.time()) when the request was sent
    status: int | None = None  # HTTP status; None when no response came
    error: str | None = None
    text: str = ""
    # arrival of each non-empty content chunk, seconds after sending
    chunk_s: list[float] = field(default_factory=list)
    latency_s: float = 0.0  # sending to the end of the stream
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def ttft_s(self) -> float | None:
        return self.chunk_s[0] if self.chunk_s else None

    @property
    def itl_s(self) -> list[float]:
        """Gaps between consecutive content chunks (sglang.bench_serving's ITL)."""
        return [b - a for a, b in zip(self.chunk_s, self.chunk_s[1:])]

    def to_dict(self) -> dict:
        return asdict(self)


def _read_stream(response: requests.Response, result: ChatResult, start: float):
    pieces = []
    for line in response.iter_lines():
        if not line.startswith(b"data: ") or line == b"data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if "error" in chunk:  # an error after the stream began (SGLang sends 200)
            error = chunk["error"]
            result.status = error.get("code", result.status)
            result.error = f"HTTP {result.status}: {error.get('message', error)}"
            continue
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content")
            if piece:
                result.chunk_s.append(time.perf_counter() - start)
                pieces.append(piece)
            result.finish_reason = choice.get("finish_reason") or result.finish_reason
        usage = chunk.get("usage")
        if usage:
            result.prompt_tokens = usage.get("prompt_tokens")
            result.completion_tokens = usage.get("completion_tokens")
            details = usage.get("prompt_tokens_details") or {}
            result.cached_tokens = details.get("cached_tokens")
    result.text = "".join(pieces)


def chat_stream(
    url: str,
    messages: list,
    max_tokens: int | None = None,
    timeout: float = 3600,
    **fields,
) -> ChatResult:
    """Stream one chat completion from the server at ``url``.

    ``fields`` go into the request body as they are (``temperature``,
    ``ignore_eos``, ...); sampling parameters left out are filled by the server
    from the checkpoint's generation_config.json.
    """
    body = {
        "model": MODEL,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **fields,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    result = ChatResult(sent=time.time())
    start = time.perf_counter()
    try:
        with requests.post(
            f"{url}/v1/chat/completions", json=body, stream=True, timeout=timeout
        ) as response:
            result.status = response.status_code
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}: {response.text[:500]}"
            else:
                _read_stream(response, result, start)
    except (requests.RequestException, ValueError) as e:
        result.error = f"{type(e).__name__}: {e}"
    result.latency_s = time.perf_counter() - start
    return result


def served_model(url: str) -> str | None:
    """The model the server at ``url`` serves (its path unless renamed)."""
    try:
        data = requests.get(f"{url}/v1/models", timeout=10).json()["data"]
        return data[0]["id"] if data else None
    except (requests.RequestException, ValueError, KeyError):
        return None
