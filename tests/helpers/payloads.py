"""The request bodies of the server tests (test_model_server, test_model_async_encode):
a greedy chat completion with a video_url part and a /generate request with the
original prompt."""

from __future__ import annotations

from tests.helpers.model_fixtures import QUESTION, chatml_prompt

NEW_TOKENS = 16


def chat_payload(video_url: str, max_tokens: int = NEW_TOKENS, **extra) -> dict:
    """A greedy chat request. The chat API fills the sampling parameters a request
    leaves out from the checkpoint's generation_config.json (SGLang's default
    ``--sampling-defaults model``); the tiny checkpoint carries Qwen2.5-Instruct's,
    whose repetition_penalty 1.05 would apply even at temperature 0, so it is set
    to 1 here like the greedy reference."""
    return {
        "model": "quicksviewer",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": video_url}},
                    {"type": "text", "text": QUESTION},
                ],
            }
        ],
        "temperature": 0,
        "repetition_penalty": 1.0,
        "max_tokens": max_tokens,
        **extra,
    }


def generate_payload(video: str, max_new_tokens: int = NEW_TOKENS, **extra) -> dict:
    return {
        "text": chatml_prompt("<video>\n"),
        "video_data": [video],
        "sampling_params": {"temperature": 0, "max_new_tokens": max_new_tokens},
        **extra,
    }
