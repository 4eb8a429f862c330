"""Time to first token for video requests, end to end through the HTTP server.

    python benchmarks/bench_video_ttft.py --model CONVERTED \
        --video 60f=clip60.mp4 --video 420f=clip420.mp4 [--repeat 2] [--out ttft.json]
    python benchmarks/bench_video_ttft.py --url http://127.0.0.1:30000 --video ...

Each request is an OpenAI ``/v1/chat/completions`` call with a local ``video_url``
part, streamed; its time to first token is the time from sending the request to the
first streamed content chunk, as a user sees it. For every video the benchmark sends

* ``first``: the video once (a new video: decoding, preprocessing, encoder, prefill);
* ``again``: the same request again (``--repeat`` times);
* ``follow-up``: a second turn about the same video (the first answer plus a new
  question), the chat use of the model.

The server is started here with the README's GPU flags plus ``--enable-cache-report``
(``--server-arg`` adds more), unless ``--url`` names a running one. With the server
started here, ``SGLANG_QSV_TIMING=1`` makes the processor and the model log the split
of every video request (decoding + preprocessing, hand-off to the scheduler, visual
encoder + cubing), which is joined with the client's times: the rest of the time to
first token is the LLM prefill, scheduling and streaming.

The original implementation's figures on the same card (one H200,
../shared/reference/visual-path-facts.md section 1) are printed beside ours; they
are the original's own ``cli.py`` path, one request at a time, re-encoding every turn.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # first: this repository's benchmarks/ and tools/

from benchmarks import chat_client, original_h200  # noqa: E402
from benchmarks.chat_client import user_turn  # noqa: E402
from tools import server as tools_server  # noqa: E402
from tools.server import Server  # noqa: E402

QUESTION = "What is happening in the video?"
FOLLOW_UP = "What happens at the end?"
# The original (transformers 4.44, its own cli.py path) on one H200: time to first
# token with frame extraction, median ranges of 2-3 runs (visual-path-facts.md 1).
ORIGINAL_H200_TTFT_S = original_h200.TTFT_S
TIMING = re.compile(r"qsv-timing (\{.*\})")


def launch(args) -> Server:
    """The server of ``--model`` (``args.port``, ``args.server_arg``), healthy."""
    return tools_server.launch(
        args.model,
        ["--enable-cache-report", *args.server_arg],
        Path(args.log or "bench_video_ttft.server.log"),
        args.port,
        env={"SGLANG_QSV_TIMING": "1"},
        start_timeout=args.start_timeout,
    )


def parse_server_args(parser: argparse.ArgumentParser, port: int):
    """Add the server options every benchmark takes, then parse: ``--model`` (start
    a server: ``--port``, ``--start-timeout``, ``--log``, ``--server-arg``) or
    ``--url`` (a running one), and ``--out``."""
    parser.add_argument("--model", help="converted checkpoint (starts a server)")
    parser.add_argument("--url", help="a running server instead of --model")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--start-timeout", type=int, default=900)
    parser.add_argument("--log", help="server log path (with --model)")
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra launch_server argument (repeatable, e.g. --server-arg=--dtype=bfloat16)",
    )
    parser.add_argument("--out", help="write the results as JSON")
    args = parser.parse_args()
    if bool(args.model) == bool(args.url):
        parser.error("give exactly one of --model and --url")
    return args


@contextlib.contextmanager
def served(args, log_path: Path | None = None):
    """(url, server log) of ``--url``, or of a server started from ``--model`` and
    stopped on exit: the server part of every benchmark's ``main``."""
    if not args.model:
        yield args.url, log_path
        return
    with launch(args) as server:
        yield server.url, server.log


def report(args, text: str, results) -> None:
    """Print ``text`` (the results' table); write ``results`` as JSON to ``--out``."""
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))


def chat_stream(url: str, messages: list, max_tokens: int, **extra) -> dict:
    """Stream one greedy chat completion; times are wall-clock (time.time()).

    ``extra`` adds request fields (``ignore_eos=True``, ...); ``times`` in the
    result holds the arrival time of every content chunk."""
    fields = {"temperature": 0, "repetition_penalty": 1.0, **extra}
    result = chat_client.chat_stream(url, messages, max_tokens, timeout=900, **fields)
    if not result.ok:
        raise RuntimeError(result.error)
    ttft = result.ttft_s if result.ttft_s is not None else result.latency_s
    last = result.chunk_s[-1] if result.chunk_s else result.latency_s
    return {
        "sent": result.sent,
        "ttft_s": round(ttft, 4),
        "total_s": round(result.latency_s, 4),
        "last_token_s": round(last, 4),
        "text": result.text,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "cached_tokens": result.cached_tokens,
        "times": [result.sent + t for t in result.chunk_s],
    }


def timings(log_path: Path | None) -> list[dict]:
    if log_path is None or not log_path.exists():
        return []
    return [json.loads(m.group(1)) for m in TIMING.finditer(log_path.read_text())]


def attach_split(run: dict, records: list[dict]) -> None:
    """Join the server's timing records that fall inside this request."""
    start, end = run["sent"], run["sent"] + run["total_s"]
    mine = [r for r in records if start <= r.get("t_end", 0) <= end]
    processor = [r for r in mine if r.get("stage") == "processor"]
    encoder = [r for r in mine if r.get("stage") == "encoder"]
    if processor:
        run["decode_preprocess_s"] = round(sum(r["seconds"] for r in processor), 4)
        run["frames"] = sum(r.get("frames", 0) for r in processor)
    if encoder:
        run["handoff_s"] = round(
            sum(r["t_start"] - r["t_media_done"] for r in encoder), 4
        )
        run["encoder_cubing_s"] = round(sum(r["seconds"] for r in encoder), 4)
        run["prefill_and_rest_s"] = round(
            run["sent"] + run["ttft_s"] - max(r["t_end"] for r in encoder), 4
        )


def bench(args, url: str, log_path: Path | None) -> dict:
    results = {}
    warm = args.videos[0][1]
    chat_stream(url, [user_turn(warm, QUESTION)], 1)  # warm-up (kernels, graphs)
    for name, path in args.videos:
        runs = {"first": chat_stream(url, [user_turn(path, QUESTION)], args.tokens)}
        for i in range(args.repeat):
            runs[f"again_{i + 1}"] = chat_stream(
                url, [user_turn(path, QUESTION)], args.tokens
            )
        history = [
            user_turn(path, QUESTION),
            {"role": "assistant", "content": runs["first"]["text"]},
            {"role": "user", "content": FOLLOW_UP},
        ]
        runs["follow_up"] = chat_stream(url, history, args.tokens)
        results[name] = runs
    time.sleep(0.5)  # let the server flush its log
    records = timings(log_path)
    for runs in results.values():
        for run in runs.values():
            attach_split(run, records)
    return results


def table(results: dict) -> str:
    cols = [
        "ttft_s",
        "decode_preprocess_s",
        "handoff_s",
        "encoder_cubing_s",
        "prefill_and_rest_s",
        "prompt_tokens",
        "cached_tokens",
    ]
    lines = [
        "| video | request | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 2) + "|",
    ]
    for name, runs in results.items():
        for kind, run in runs.items():
            cells = [str(run.get(c, "-")) for c in cols]
            lines.append(f"| {name} | {kind} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("The original on one H200 (visual-path-facts.md 1), TTFT in s:")
    for name, (lo, hi) in ORIGINAL_H200_TTFT_S.items():
        lines.append(f"- {name}: {lo}-{hi} (every turn)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--video", action="append", required=True, help="NAME=PATH (repeatable)"
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=16)
    args = parse_server_args(parser, port=30777)
    args.videos = [tuple(v.split("=", 1)) for v in args.video]
    with served(args) as (url, log_path):
        results = bench(args, url, log_path)
    report(args, table(results), results)


if __name__ == "__main__":
    main()
