"""Video serving benchmark: sglang.bench_serving's report for a video workload.

    python benchmarks/bench_video_serving.py --url http://127.0.0.1:30000 \\
        --num-requests 16 --max-concurrency 8 --video-spec 60:640x360@30 \\
        --output-len 64 --out serving.json      # = the defaults
    python benchmarks/bench_video_serving.py --model CONVERTED --server-arg=... ...

SGLang's ``bench_serving`` has no video dataset (0.5.17, 0.5.23); this is the same
measurement with video requests. Every request is a streamed
``/v1/chat/completions`` call: a local ``video_url`` part then a question, greedy,
``--output-len`` new tokens (``ignore_eos`` as bench_serving's default). Requests
arrive as a Poisson process of ``--request-rate`` per second (``inf``: all at
once), at most ``--max-concurrency`` in flight (0: no bound). The defaults are the
comparison with the original: 16 different 60 s 640x360 clips, 8 in flight, 64 new
tokens. The report is bench_serving's: request, input and output token throughput,
concurrency, and mean / median / p90 / p95 / p99 of the end-to-end latency, the time
to first token (TTFT), the time per output token after the first (TPOT) and the
inter-token latency (ITL: the gap between streamed chunks), in ms; then the same by
video kind.

Videos: ``--video-spec SECONDS:WIDTHxHEIGHT@FPS`` (repeatable; the requests cycle
through the specs) generates seeded synthetic clips (tools/media.py, kept in
``--video-dir``), ``--distinct-videos`` of them (default: one per request, so no
request hits the server's frame, visual or prefix cache; 1 measures the cached
path); or ``--video FILE_OR_FOLDER`` (repeatable) uses given videos. A warm-up
request on a clip of its own comes first.

Beside the result, the original's serial throughput on one H200 is derived from
its measured figures (benchmarks/original_h200.py): one request at a time, each
taking its TTFT plus ``output_len - 1`` decode steps at 27.3 tokens/s, for the
clips that match the measured ones (60 s 640x360, 430 s 640x360 or 1280x720 at the
default sampling). 27.3 tokens/s was measured after the 60-frame prompt, so for
420-frame clips the derived figure favours the original.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # first: this repository's benchmarks/ and tools/

from benchmarks import chat_client, original_h200  # noqa: E402
from benchmarks.chat_client import ChatResult, chat_stream, user_turn  # noqa: E402
from tools.server import launch  # noqa: E402

QUESTION = "What is happening in the video?"
WARMUP_SEED_OFFSET = 100_000
VIDEO_EXT = {".mp4", ".mkv", ".webm", ".avi", ".mov"}


@dataclass(frozen=True)
class VideoSpec:
    seconds: float
    width: int
    height: int
    fps: float

    @classmethod
    def parse(cls, text: str) -> "VideoSpec":
        """``SECONDS:WIDTHxHEIGHT@FPS``, e.g. ``60:640x360@30``."""
        try:
            seconds, rest = text.split(":")
            size, fps = rest.split("@")
            width, height = size.lower().split("x")
            return cls(float(seconds), int(width), int(height), float(fps))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not SECONDS:WIDTHxHEIGHT@FPS (e.g. 60:640x360@30)"
            ) from None

    @property
    def name(self) -> str:
        return f"{self.seconds:g}s_{self.width}x{self.height}_{self.fps:g}fps"


WARMUP_SPEC = VideoSpec(10, 320, 240, 10)  # the warm-up before --video files


def _write_clip(spec: VideoSpec, seed: int, path: Path) -> None:
    from tools.media import write_video  # whole or not at all

    write_video(path, spec.seconds, spec.fps, spec.width, spec.height, seed=seed)


def make_clips(
    jobs: list[tuple[VideoSpec, int]], directory: Path, workers: int
) -> list[tuple[str, Path]]:
    """(kind, path) of the clip of every (spec, seed), written once (in parallel)."""
    directory.mkdir(parents=True, exist_ok=True)
    clips, todo = [], []
    for spec, seed in jobs:
        path = directory / f"{spec.name}_seed{seed}.mp4"
        clips.append((spec.name, path))
        if not path.exists() and (spec, seed, path) not in todo:
            todo.append((spec, seed, path))
    if todo:
        print(f"writing {len(todo)} clip(s) into {directory} ...", flush=True)
        start = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(todo)))) as pool:
            for future in [pool.submit(_write_clip, *job) for job in todo]:
                future.result()
        print(f"  {time.perf_counter() - start:.1f} s", flush=True)
    return clips


# ------------------------------------------------------------------------ running
def send(args, video: str) -> ChatResult:
    fields = {"temperature": 0, "repetition_penalty": 1.0}
    if not args.disable_ignore_eos:
        fields["ignore_eos"] = True
    turn = user_turn(video, QUESTION, fps=args.fps, max_frames=args.max_frames)
    return chat_stream(
        args.url, [turn], args.output_len, timeout=args.request_timeout, **fields
    )


def run_requests(args, videos: list[str]) -> tuple[list[ChatResult], float]:
    """Send ``videos[i]`` as request i: Poisson arrivals, bounded concurrency."""
    rng = np.random.default_rng(args.seed)
    workers = args.max_concurrency or len(videos)
    results: list[ChatResult | None] = [None] * len(videos)

    def task(i: int) -> None:
        results[i] = send(args, videos[i])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=min(workers, 1024)) as pool:
        futures = []
        for i in range(len(videos)):
            futures.append(pool.submit(task, i))
            if math.isfinite(args.request_rate) and i < len(videos) - 1:
                time.sleep(rng.exponential(1.0 / args.request_rate))
        for future in futures:
            future.result()
    return results, time.perf_counter() - start


# ------------------------------------------------------------------------ metrics
def _stats(values: list[float], prefix: str) -> dict:
    """Mean, median, std, p90/p95/p99 (and max) in ms, None without samples."""
    names = ("mean", "median", "std", "p90", "p95", "p99", "max")
    if not values:
        return {f"{name}_{prefix}_ms": None for name in names}
    a = np.asarray(values) * 1000
    figures = (
        a.mean(),
        np.median(a),
        a.std(),
        *np.percentile(a, [90, 95, 99]),
        a.max(),
    )
    return {f"{n}_{prefix}_ms": round(float(v), 3) for n, v in zip(names, figures)}


def max_overlap(results: list[ChatResult]) -> int:
    """Most requests in flight at once (client side)."""
    events = []
    for r in results:
        events += [(r.sent, 1), (r.sent + r.latency_s, -1)]
    current = peak = 0
    for _, step in sorted(events, key=lambda e: (e[0], e[1])):
        current += step
        peak = max(peak, current)
    return peak


def compute_metrics(results: list[ChatResult], duration_s: float) -> dict:
    """sglang.bench_serving's ``calculate_metrics`` on the server's token counts
    (``usage``) and the client's chunk times."""
    ok = [r for r in results if r.ok]
    output = [r.completion_tokens or 0 for r in ok]
    total_input = sum(r.prompt_tokens or 0 for r in ok)
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpots = [
        (r.latency_s - r.ttft_s) / (n - 1)
        for r, n in zip(ok, output)
        if n > 1 and r.ttft_s is not None
    ]
    itls = [gap for r in ok for gap in r.itl_s]
    e2e = [r.latency_s for r in ok]
    metrics = {
        "completed": len(ok),
        "failed": len(results) - len(ok),
        "duration_s": round(duration_s, 4),
        "total_input_tokens": total_input,
        "total_output_tokens": sum(output),
        "request_throughput": len(ok) / duration_s,
        "input_throughput": total_input / duration_s,
        "output_throughput": sum(output) / duration_s,
        "total_throughput": (total_input + sum(output)) / duration_s,
        "concurrency": sum(e2e) / duration_s,
        "max_concurrent_requests": max_overlap(ok),
    }
    for name, values in (("e2e_latency", e2e), ("ttft", ttfts), ("tpot", tpots)):
        metrics.update(_stats(values, name))
        metrics.pop(f"max_{name}_ms")
    metrics.update(_stats(itls, "itl"))
    return metrics


def original_serial(measured: list[str | None], output_len: int) -> dict | None:
    """The original serving the same requests one at a time (derived, see the
    module docstring); None unless every request is one of its measured clips."""
    if not measured or None in measured:
        return None
    names = measured
    decode_s = (output_len - 1) / original_h200.DECODE_TOK_S
    figures = {}
    for bound, index in (("best", 0), ("worst", 1)):
        times = [original_h200.TTFT_S[n][index] + decode_s for n in names]
        figures[bound] = {
            "request_throughput": len(times) / sum(times),
            "output_throughput": len(times) * output_len / sum(times),
            "mean_ttft_ms": 1000 * float(np.mean([t - decode_s for t in times])),
            "mean_e2e_latency_ms": 1000 * float(np.mean(times)),
            "mean_itl_ms": 1000 / original_h200.DECODE_TOK_S,
        }
    return figures


# ------------------------------------------------------------------------ report
REPORT = (
    ("Successful requests:", "completed", "d"),
    ("Failed requests:", "failed", "d"),
    ("Benchmark duration (s):", "duration_s", ".2f"),
    ("Total input tokens:", "total_input_tokens", "d"),
    ("Total generated tokens:", "total_output_tokens", "d"),
    ("Request throughput (req/s):", "request_throughput", ".3f"),
    ("Input token throughput (tok/s):", "input_throughput", ".2f"),
    ("Output token throughput (tok/s):", "output_throughput", ".2f"),
    ("Total token throughput (tok/s):", "total_throughput", ".2f"),
    ("Concurrency:", "concurrency", ".2f"),
    ("Max concurrent requests:", "max_concurrent_requests", "d"),
)
STAT_LABELS = {"mean": "Mean", "median": "Median", "max": "Max"}
STAT_LABELS.update({p: p.upper() for p in ("p90", "p95", "p99")})
METRIC_LABELS = {"e2e_latency": "E2E Latency", "ttft": "TTFT", "tpot": "TPOT"}
METRIC_LABELS["itl"] = "ITL"
SECTIONS = (
    ("End-to-End Latency", "e2e_latency", ("mean", "median", "p90", "p95", "p99")),
    ("Time to First Token", "ttft", ("mean", "median", "p90", "p95", "p99")),
    ("Time per Output Token (excl. 1st token)", "tpot", ("mean", "median", "p99")),
    ("Inter-Token Latency", "itl", ("mean", "median", "p90", "p95", "p99", "max")),
)


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def report(result: dict) -> str:
    config, metrics = result["config"], result["metrics"]
    original = result.get("original_serial")
    lines = ["{s:{c}^{n}}".format(s=" Video Serving Benchmark Result ", n=66, c="=")]
    rate = config["request_rate"]
    lines.append(f"{'Traffic request rate:':<40} {rate}")
    lines.append(
        f"{'Max request concurrency:':<40} {config['max_concurrency'] or 'not set'}"
    )
    lines.append(f"{'Videos:':<40} {', '.join(config['video_kinds'])}")
    header = f"{'':<40} {'this run':>12}"
    if original:
        header += f" {'original, serial (derived)':>28}"
    lines.append(header)
    derived = {
        "request_throughput": ".3f",
        "output_throughput": ".2f",
        "mean_ttft_ms": ".2f",
        "mean_e2e_latency_ms": ".2f",
        "mean_itl_ms": ".2f",
    }

    def line(label: str, key: str, spec: str) -> None:
        text = f"{label:<40} {_fmt(metrics.get(key), spec):>12}"
        if original and key in derived:
            lo, hi = sorted(original[bound][key] for bound in ("best", "worst"))
            pair = f"{format(lo, derived[key])} - {format(hi, derived[key])}"
            text += f" {pair:>28}"
        lines.append(text)

    for label, key, spec in REPORT:
        line(label, key, spec)
    for title, key, stats in SECTIONS:
        lines.append("{s:{c}^{n}}".format(s=title, n=66, c="-"))
        for stat in stats:
            label = f"{STAT_LABELS[stat]} {METRIC_LABELS[key]} (ms):"
            line(label, f"{stat}_{key}_ms", ".2f")
    lines.append("=" * 66)
    lines.append("")
    lines.append(
        "| video | requests | prompt tokens | TTFT mean (ms) | TTFT p99 (ms) "
        "| E2E mean (ms) |"
    )
    lines.append("|---|---|---|---|---|---|")
    for kind, m in result["by_video"].items():
        prompt = (
            "-"
            if not m["completed"]
            else round(m["total_input_tokens"] / m["completed"])
        )
        lines.append(
            f"| {kind} | {m['completed']}/{m['completed'] + m['failed']} | {prompt} "
            f"| {_fmt(m['mean_ttft_ms'], '.1f')} | {_fmt(m['p99_ttft_ms'], '.1f')} "
            f"| {_fmt(m['mean_e2e_latency_ms'], '.1f')} |"
        )
    if original:
        lo, hi = original["request_throughput_ratio"]
        lines.append("")
        lines.append(
            f"request throughput {lo:.2f}-{hi:.2f}x the original's, serial "
            "(derived: one request at a time on one H200, each alone, its measured "
            "TTFT plus (output_len - 1) steps at 27.3 tok/s; the range of its "
            "measured TTFT; benchmarks/original_h200.py)"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def workload(args) -> tuple[list[str], list[str], list[str | None], str]:
    """Per request: the video, its kind and the original's measured clip it
    matches (``original_h200.clip_name``); and the warm-up video."""
    n = args.num_requests
    if args.video:
        files = []
        for given in map(Path, args.video):
            found = [given]
            if given.is_dir():  # a folder: its videos, sorted
                found = sorted(
                    p for p in given.iterdir() if p.suffix.lower() in VIDEO_EXT
                )
            files += [str(p.resolve()) for p in found]
        if not files:
            raise SystemExit(f"no video in {args.video}")
        videos = [files[i % len(files)] for i in range(n)]
        kinds = [Path(v).name for v in videos]
        # a clip of its own, so the first file is new to the server when measured
        ((_, warm),) = make_clips(
            [(WARMUP_SPEC, args.seed + WARMUP_SEED_OFFSET)], Path(args.video_dir), 1
        )
        return videos, kinds, [None] * n, str(warm.resolve())
    specs = args.video_spec or [VideoSpec.parse("60:640x360@30")]
    distinct = min(args.distinct_videos or n, n)
    # clip j: spec j mod len(specs), seed + j; the warm-up clip comes last
    jobs = [(specs[j % len(specs)], args.seed + j) for j in range(distinct)]
    jobs.append((specs[0], args.seed + WARMUP_SEED_OFFSET))
    *clips, (_, warm) = make_clips(jobs, Path(args.video_dir), args.gen_workers)
    videos = [str(clips[i % distinct][1].resolve()) for i in range(n)]
    kinds = [clips[i % distinct][0] for i in range(n)]
    default_sampling = args.fps in (None, 1) and args.max_frames in (None, 420)
    measured = []
    for i in range(n):
        spec = specs[(i % distinct) % len(specs)]
        name = original_h200.clip_name(spec.seconds, spec.width, spec.height)
        measured.append(name if default_sampling else None)
    return videos, kinds, measured, str(warm.resolve())


def bench(args, videos, kinds, measured, warm) -> dict:
    for _ in range(args.warmup_requests):
        result = send(args, warm)
        if not result.ok:
            raise SystemExit(f"warm-up request failed: {result.error}")
    results, duration = run_requests(args, videos)
    by_video = {}
    for kind in dict.fromkeys(kinds):
        mine = [r for r, k in zip(results, kinds) if k == kind]
        by_video[kind] = compute_metrics(mine, duration)
    metrics = compute_metrics(results, duration)
    original = original_serial(measured, args.output_len)
    if original:
        original["request_throughput_ratio"] = sorted(
            metrics["request_throughput"] / original[bound]["request_throughput"]
            for bound in ("best", "worst")
        )
    rate = args.request_rate
    return {
        "config": {
            "server": args.url,
            "model": chat_client.served_model(args.url),
            "num_requests": args.num_requests,
            "request_rate": rate if math.isfinite(rate) else "inf",
            "max_concurrency": args.max_concurrency,
            "output_len": args.output_len,
            "ignore_eos": not args.disable_ignore_eos,
            "fps": args.fps,
            "max_frames": args.max_frames,
            "distinct_videos": len(set(videos)),
            "video_kinds": list(by_video),
            "seed": args.seed,
            "warmup_requests": args.warmup_requests,
        },
        "metrics": metrics,
        "by_video": by_video,
        "original_serial": original,
        "requests": [
            {
                "video": video,
                "kind": kind,
                **r.to_dict(),
                "ttft_s": r.ttft_s,
                "text": r.text[:200],
            }
            for video, kind, r in zip(videos, kinds, results)
        ],
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="a running server")
    parser.add_argument("--model", help="converted checkpoint: start a server here")
    parser.add_argument("--port", type=int, default=30780)
    parser.add_argument(
        "--server-arg",
        action="append",
        default=[],
        help="extra launch_server argument with --model (repeatable)",
    )
    parser.add_argument("--start-timeout", type=int, default=900)
    parser.add_argument("--log", default="bench_video_serving.server.log")
    parser.add_argument("--num-requests", type=int, default=16)
    parser.add_argument(
        "--request-rate",
        type=float,
        default=float("inf"),
        help="requests per second, Poisson arrivals (inf: all at once)",
    )
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=8,
        help="requests in flight at most (0: no bound)",
    )
    parser.add_argument("--output-len", type=int, default=64, help="new tokens")
    parser.add_argument(
        "--disable-ignore-eos", action="store_true", help="stop at end of sequence"
    )
    parser.add_argument(
        "--video-spec",
        type=VideoSpec.parse,
        action="append",
        help="SECONDS:WIDTHxHEIGHT@FPS generated clip (repeatable; default "
        "60:640x360@30)",
    )
    parser.add_argument(
        "--video", action="append", help="a video file or folder (repeatable)"
    )
    parser.add_argument(
        "--distinct-videos", type=int, help="different clips (default: one per request)"
    )
    parser.add_argument("--video-dir", default=str(REPO / "build" / "bench-videos"))
    parser.add_argument("--gen-workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--fps", type=float, help="video_url fps (server default 1)")
    parser.add_argument(
        "--max-frames", type=int, help="video_url max_frames (server default 420)"
    )
    parser.add_argument("--warmup-requests", type=int, default=1)
    parser.add_argument("--request-timeout", type=float, default=1800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="write the result as JSON")
    parser.add_argument(
        "--prepare-only", action="store_true", help="write the clips, send nothing"
    )
    args = parser.parse_args(argv)
    if args.prepare_only:
        videos, *_ = workload(args)
        print(f"{len(set(videos))} clips ready in {args.video_dir}")
        return 0
    if bool(args.model) == bool(args.url):
        parser.error("give exactly one of --model and --url")
    clips = workload(args)  # before the server starts: it needs the host's cores
    if args.model:
        with launch(
            args.model,
            args.server_arg,
            Path(args.log),
            args.port,
            start_timeout=args.start_timeout,
        ) as server:
            args.url = server.url
            result = bench(args, *clips)
    else:
        result = bench(args, *clips)
    print(report(result))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0 if result["metrics"]["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
