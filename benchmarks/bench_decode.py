"""Decode speed at batch 1 and 8, after a short text prompt and after a long video
prompt, streamed through the HTTP server (issue #8 item 5).

    python benchmarks/bench_decode.py --url http://127.0.0.1:30000 \
        --video 420f=clip420.mp4 [--tokens 256] [--out decode.json]
    python benchmarks/bench_decode.py --model CONVERTED --video ... \
        [--server-arg=--triton-attention-num-kv-splits=16]

Each request decodes ``--tokens`` tokens with ``ignore_eos``; its decode rate is
(completion tokens - 1) / (time of the last token - time of the first), as a user
of the stream sees it; batch 8 sends 8 such requests at once (8 different
questions, the same video: the radix cache shares the video's KV, every request
still attends over the whole prompt) and reports the mean per-stream rate and the
aggregate rate. The video's first request (encoding, prefill) is sent before the
measurement. Prints a table and writes ``--out``: ``decode_tok_s`` per
(prompt, batch), the keys ``short_bs1``, ``short_bs8``, ``long_bs1``, ``long_bs8``.
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_video_ttft import (  # noqa: E402
    chat_stream,
    parse_server_args,
    report,
    served,
    user_turn,
)

SHORT = "Write a long story about a lighthouse keeper."
QUESTIONS = [
    "Describe the video in detail.",
    "What colours appear in the video?",
    "What moves in the video?",
    "Tell a story about the video.",
    "What happens first?",
    "What happens last?",
    "List every object you see.",
    "Describe the background.",
]
# The original on one H200 (visual-path-facts.md): batch 1 only, one request at a time
ORIGINAL_H200_DECODE_TOK_S = 27


def rate(run: dict) -> float:
    tokens = (run.get("completion_tokens") or 0) - 1
    span = run["last_token_s"] - run["ttft_s"]
    return tokens / span if tokens > 0 and span > 0 else 0.0


def measure(url: str, turns: list, tokens: int) -> dict:
    with ThreadPoolExecutor(len(turns)) as pool:
        runs = list(
            pool.map(lambda m: chat_stream(url, m, tokens, ignore_eos=True), turns)
        )
    rates = [rate(r) for r in runs]
    span = max(r["last_token_s"] for r in runs) - min(r["ttft_s"] for r in runs)
    total = sum((r.get("completion_tokens") or 0) for r in runs)
    return {
        "batch": len(turns),
        "per_stream_tok_s": round(sum(rates) / len(rates), 1),
        "aggregate_tok_s": round(total / span, 1) if span > 0 else 0.0,
        "prompt_tokens": runs[0].get("prompt_tokens"),
        "ttft_s": [r["ttft_s"] for r in runs],
    }


def bench(url: str, video: str, tokens: int) -> dict:
    text = [{"role": "user", "content": SHORT}]
    chat_stream(url, text, 8, ignore_eos=True)  # warm-up
    chat_stream(url, [user_turn(video, QUESTIONS[0])], 1)  # encode + prefill once
    results = {
        "short_bs1": measure(url, [text], tokens),
        "short_bs8": measure(
            url,
            [[{"role": "user", "content": f"{SHORT} ({q})"}] for q in QUESTIONS],
            tokens,
        ),
        "long_bs1": measure(url, [[user_turn(video, QUESTIONS[0])]], tokens),
        "long_bs8": measure(url, [[user_turn(video, q)] for q in QUESTIONS], tokens),
    }
    return results


def table(results: dict) -> str:
    lines = [
        "| prompt | batch | per-stream tok/s | aggregate tok/s | prompt tokens |",
        "|---|---|---|---|---|",
    ]
    for key, r in results.items():
        prompt = "short text" if key.startswith("short") else "long video"
        lines.append(
            f"| {prompt} | {r['batch']} | {r['per_stream_tok_s']} | "
            f"{r['aggregate_tok_s']} | {r['prompt_tokens']} |"
        )
    lines.append("")
    lines.append(
        f"The original on one H200: about {ORIGINAL_H200_DECODE_TOK_S} tok/s at batch 1."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", required=True, help="NAME=PATH of the long video")
    parser.add_argument("--tokens", type=int, default=256)
    args = parse_server_args(parser, port=30778)
    video = args.video.split("=", 1)[-1]
    with served(args) as (url, _):
        results = bench(url, video, args.tokens)
    results = {"decode_tok_s": results, "server_args": args.server_arg}
    report(args, table(results["decode_tok_s"]), results)


if __name__ == "__main__":
    main()
