"""The stall: another user's token stream while a long video is admitted.

    python benchmarks/bench_video_stall.py --url http://127.0.0.1:30000 \
        --video /data/new_420s_720p.mp4 [--warmup-video /data/clip60.mp4] \
        [--server-log server.log] [--out stall.json]
    python benchmarks/bench_video_stall.py --model CONVERTED --video ... [--server-arg=...]

One client streams a long text answer (``--tokens``, ``ignore_eos``, greedy)
through ``/v1/chat/completions`` and records the arrival time of every token.
After ``--warmup-s`` seconds of that stream the benchmark sends the video request
(give it a video the server has not seen: a cold visual and frame cache), itself
streamed, and waits for both. Reported: the text stream's median, 99th-percentile
and largest gap between two tokens, over the whole stream and during the video's
admission window (from sending the video request to its first token: decoding,
hand-off, encoder, prefill), and the video request's time to first token. With
the server's ``qsv-timing`` records (``SGLANG_QSV_TIMING=1``: a server started
here, or ``--server-log`` of one started so) the same gaps are reported for the
encoder's own window and for the prefill's (from the encoder's end to the video's
first token), and the largest gaps are placed on the video's timeline: each with its
start and end relative to the video request's send time and the phases it overlaps
(``processor``: decode and preprocessing, ``hand-off``, ``encoder``, ``prefill``: the
layout, the video's prefill and its first token; ``before`` / ``after`` the admission).
A gap that overlaps a window's edge counts in that window, so only the placement says
whether the encoder or the prefill held the stream.

``--warmup-video`` (another video) is sent before the stream, so that one-time
kernel loading does not count. The streaming client is bench_video_ttft's.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_video_ttft import (  # noqa: E402
    chat_stream,
    parse_server_args,
    report,
    served,
    timings,
    user_turn,
)

STORY = "Tell me a very long story about a lighthouse keeper."


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in [0, 100])."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil, at least the first
    return ordered[int(rank) - 1]


def gaps_in(times: list[float], start: float, end: float) -> list[float]:
    """Gaps between consecutive tokens that overlap [start, end]."""
    return [b - a for a, b in zip(times, times[1:]) if b > start and a < end]


def summary(gaps: list[float], times: list[float], start=None, end=None) -> dict:
    out = {
        "gaps": len(gaps),
        "median_gap_s": round(statistics.median(gaps), 4) if gaps else None,
        "p99_gap_s": round(percentile(gaps, 99), 4) if gaps else None,
        "max_gap_s": round(max(gaps), 4) if gaps else None,
    }
    if start is not None:
        out["window_s"] = round(end - start, 4)
        out["tokens_in_window"] = sum(start <= t <= end for t in times)
    return out


def phases(sent: float, first_token: float, records: list[dict]) -> list[tuple]:
    """(name, start, end) of the video's admission, in time order, from the
    encoder's timing records (none: the admission as one phase)."""
    if not records:
        return [("admission", sent, first_token)]
    media = min(r["t_media_done"] for r in records)
    start = min(r["t_start"] for r in records)
    end = max(r["t_end"] for r in records)
    return [
        ("processor", sent, media),
        ("hand-off", media, start),
        ("encoder", start, end),
        ("prefill", end, first_token),
    ]


def largest_gaps(times: list[float], timeline: list[tuple], sent: float, n: int = 5):
    """The ``n`` largest gaps of the stream, largest first, each placed on the
    video's timeline: start and end relative to ``sent``, the phases it overlaps."""
    first, last = timeline[0][1], timeline[-1][2]
    gaps = sorted(zip(times, times[1:]), key=lambda g: g[0] - g[1])[:n]
    out = []
    for a, b in gaps:
        where = [name for name, s, e in timeline if b > s and a < e]
        if a < first:
            where.insert(0, "before")
        if b > last:
            where.append("after")
        out.append(
            {
                "gap_s": round(b - a, 4),
                "from_s": round(a - sent, 4),
                "to_s": round(b - sent, 4),
                "phases": where,
            }
        )
    return out


def bench(args, url: str, log_path: Path | None) -> dict:
    if args.warmup_video:
        chat_stream(url, [user_turn(args.warmup_video, "Describe it.")], 4)
    text = {}

    def stream():
        text["run"] = chat_stream(
            url,
            [{"role": "user", "content": STORY}],
            args.tokens,
            ignore_eos=True,
        )

    streamer = threading.Thread(target=stream)
    streamer.start()
    time.sleep(args.warmup_s)
    video = chat_stream(url, [user_turn(args.video, args.question)], 16)
    streamer.join()
    run = text["run"]
    times = run["times"]
    admitted = (video["sent"], video["sent"] + video["ttft_s"])
    if not times or times[-1] < admitted[1]:
        raise RuntimeError(
            "the text stream ended before the video's first token: raise --tokens"
        )
    all_gaps = [b - a for a, b in zip(times, times[1:])]
    result = {
        "video": args.video,
        "video_ttft_s": video["ttft_s"],
        "video_prompt_tokens": video["prompt_tokens"],
        "stream_tokens": len(times),
        "overall": summary(all_gaps, times),
        "admission": summary(gaps_in(times, *admitted), times, *admitted),
    }
    time.sleep(0.5)  # let the server flush its log
    records = [
        r
        for r in timings(log_path)
        if r.get("stage") == "encoder" and admitted[0] <= r["t_end"] <= admitted[1]
    ]
    timeline = phases(*admitted, records)
    if records:
        _, start, end = timeline[2]
        result["encoder"] = summary(gaps_in(times, start, end), times, start, end)
        result["encoder"]["records"] = records
        result["prefill"] = summary(
            gaps_in(times, end, admitted[1]), times, end, admitted[1]
        )
    result["timeline"] = [
        {
            "phase": name,
            "from_s": round(s - admitted[0], 4),
            "to_s": round(e - admitted[0], 4),
        }
        for name, s, e in timeline
    ]
    result["largest_gaps"] = largest_gaps(times, timeline, admitted[0])
    result["stall_max_gap_s"] = result["admission"]["max_gap_s"]
    result["stall_p99_gap_s"] = result["admission"]["p99_gap_s"]
    result["median_gap_s"] = result["overall"]["median_gap_s"]
    return result


def table(result: dict) -> str:
    cols = ["median_gap_s", "p99_gap_s", "max_gap_s", "gaps", "tokens_in_window"]
    lines = [
        "| text stream, gaps between tokens | " + " | ".join(cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for name in ("overall", "admission", "encoder", "prefill"):
        if name in result:
            cells = [str(result[name].get(c, "-")) for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"video TTFT {result['video_ttft_s']} s "
        f"({result['video_prompt_tokens']} prompt tokens); admission window "
        f"{result['admission']['window_s']} s"
        + (
            f", encoder window {result['encoder']['window_s']} s"
            if "encoder" in result
            else ""
        )
    )
    lines.append("")
    lines.append("| largest gaps | from (s after the video was sent) | to | phases |")
    lines.append("|---|---|---|---|")
    for g in result["largest_gaps"]:
        lines.append(
            f"| {g['gap_s']} | {g['from_s']} | {g['to_s']} | {', '.join(g['phases'])} |"
        )
    lines.append(
        "timeline: "
        + ", ".join(
            f"{p['phase']} {p['from_s']}-{p['to_s']}" for p in result["timeline"]
        )
    )
    lines.append(
        f"stall_max_gap_s {result['stall_max_gap_s']}  "
        f"stall_p99_gap_s {result['stall_p99_gap_s']}  "
        f"median_gap_s {result['median_gap_s']}  (targets, issue 8: max 0.1, p99 0.03)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--video", required=True, help="a video new to the server")
    parser.add_argument("--warmup-video", help="another video, sent first")
    parser.add_argument("--question", default="What is happening in the video?")
    parser.add_argument("--tokens", type=int, default=1024)
    parser.add_argument("--warmup-s", type=float, default=2.0)
    parser.add_argument(
        "--server-log", help="the log of a running server with SGLANG_QSV_TIMING=1"
    )
    args = parse_server_args(parser, port=30777)
    args.log = args.log or "bench_video_stall.server.log"
    server_log = Path(args.server_log) if args.server_log else None
    with served(args, server_log) as (url, log_path):
        result = bench(args, url, log_path)
    report(args, table(result), result)


if __name__ == "__main__":
    main()
