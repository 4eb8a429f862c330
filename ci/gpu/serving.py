"""The serving stage: one HTTP server (the CI's flags, CUDA graphs, metrics), and
against it, in this order, the benchmarks of what users feel:

* ``ttft.json``: time to first token, a new 60- / 420-frame video, again, a
  follow-up turn (benchmarks/bench_video_ttft.py);
* ``stall.json``: the gaps of a running stream while a new 420-frame 720p video is
  admitted (benchmarks/bench_video_stall.py);
* ``decode.json``: decode tok/s at batch 1 and 8 after short and long prompts
  (benchmarks/bench_decode.py);
* ``serving.json``: 8 concurrent different 60-frame videos
  (benchmarks/bench_video_serving.py);
* ``soak.json``: 32 clients, mixed good and bad inputs, dropped streams
  (benchmarks/soak.py, with the server's memory).

One server start (about 90 s for the 7B checkpoint) instead of five. A benchmark
whose script is missing is skipped and named in ``serving.json``. Extra server
flags: ``QSV_SERVER_ARGS`` (space-separated); a subset of the benchmarks, for a
development run: ``QSV_SERVING_BENCHES`` (space-separated names of the list above:
ttft stall decode serving soak).
"""

import json
import os
import subprocess
import sys

from common import (
    OUT,
    REPO,
    VIDEO_SEED,
    VIDEOS,
    WORK,
    checkpoint_dirs,
    server_flags,
    video,
    video_path,
    write_clips,
)
from ttft import CLIPS, WARM, WARM_SEED, warm_clip, warm_clip_path

BENCH = REPO / "benchmarks"
PORT = 30790
STALL_SEED = 9  # the stall's clip: 420s_720p's shape, other content
# bench_video_serving.py: 16 different 60-frame clips (written before the server
# starts, under WORK: the server reads local media from there only), 8 in flight,
# 64 new tokens: the comparison with the original's serial 0.28 requests/s
SERVING_ARGS = [
    f"--video-dir={WORK / 'serving-clips'}",
    "--num-requests=16",
    "--max-concurrency=8",
    "--video-spec=60:640x360@30",
    "--output-len=64",
]


def selected(name: str) -> bool:
    wanted = os.environ.get("QSV_SERVING_BENCHES", "").split()
    return not wanted or name in wanted


def run(name: str, cmd: list) -> dict:
    print(" ".join(map(str, cmd)), flush=True)
    with open(OUT / f"serving-{name}.log", "w") as log:
        proc = subprocess.run(
            list(map(str, cmd)), stdout=log, stderr=subprocess.STDOUT, timeout=900
        )
    print(f"{name}: exit {proc.returncode}", flush=True)
    return {"exit": proc.returncode}


def main():
    sys.path.insert(0, str(BENCH))
    from bench_video_ttft import launch

    OUT.mkdir(parents=True, exist_ok=True)
    os.environ["SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH"] = str(WORK)

    class Args:
        model = str(checkpoint_dirs()[1])
        port = PORT
        start_timeout = 900
        log = str(OUT / "serving-server.log")
        server_arg = server_flags() + ["--enable-metrics"]

    # the clips of the selected benchmarks, written before the server starts, all
    # at once (over a minute apiece for the 720p ones on a fresh host)
    fresh = WORK / "stall-720p.mp4"  # a copy: a video the server has not seen
    needed = {
        "ttft": list(CLIPS.values()),
        "stall": ["60s"],
        "decode": ["420s"],
    }
    jobs = {
        video_path(name): (*VIDEOS[name], VIDEO_SEED)
        for bench, names in needed.items()
        if selected(bench)
        for name in names
    }
    if selected("ttft"):
        jobs[warm_clip_path()] = (*WARM, WARM_SEED)
    if selected("stall"):
        jobs[fresh] = (*VIDEOS["420s_720p"], STALL_SEED)
    serving = BENCH / "bench_video_serving.py"
    prepare = None
    if selected("serving") and serving.exists():
        cmd = [sys.executable, serving, "--prepare-only", *SERVING_ARGS]
        prepare = subprocess.Popen(list(map(str, cmd)))
    try:
        write_clips(jobs)
    except BaseException:
        if prepare is not None:
            prepare.kill()
        raise
    if prepare is not None and prepare.wait() != 0:
        raise SystemExit(f"{serving.name} --prepare-only: exit {prepare.returncode}")
    clips = []
    if selected("ttft"):
        clips = [("warm", warm_clip())] + [(n, video(v)) for n, v in CLIPS.items()]
    server = launch(Args)
    url = server.url
    # name -> its command, built only when selected (video() writes clips)
    benches = {
        "ttft": lambda: [
            BENCH / "bench_video_ttft.py",
            *("--url", url, "--log", Args.log),
            *(f"--video={name}={path}" for name, path in clips),
            *("--out", OUT / "ttft.json"),
        ],
        "stall": lambda: [
            BENCH / "bench_video_stall.py",
            *("--url", url, "--server-log", Args.log, "--video", fresh),
            *("--warmup-video", video("60s"), "--tokens", "2048"),
            *("--out", OUT / "stall.json"),
        ],
        "decode": lambda: [
            BENCH / "bench_decode.py",
            *("--url", url, "--video", f"420f={video('420s')}"),
            *("--out", OUT / "decode.json"),
        ],
        "serving": lambda: [
            serving,
            *("--url", url, *SERVING_ARGS),
            *("--out", OUT / "serving-bench.json"),
        ],
        "soak": lambda: [
            BENCH / "soak.py",
            *("--url", url, "--clients", "32", "--rounds", "2"),
            # bf16 results depend on the batch (docs/gpu-runs.md, session 3): the
            # exact-token soak is the CPU one (make test)
            "--token-check=report",
            *("--server-pid", server.proc.pid, "--media-dir", WORK / "soak"),
            *("--out", OUT / "soak.json"),
        ],
    }
    report = {"server_args": Args.server_arg, "benchmarks": {}, "skipped": {}}
    done = report["benchmarks"]
    try:
        for name, command in benches.items():
            if not selected(name):
                report["skipped"][name] = "not in QSV_SERVING_BENCHES"
                continue
            cmd = command()
            if not cmd[0].exists():
                report["skipped"][name] = f"no {cmd[0].name}"
            else:
                done[name] = run(name, [sys.executable, *cmd])
    finally:
        server.stop()
    (OUT / "serving.json").write_text(json.dumps(report, indent=1))
    sys.exit(1 if any(r["exit"] for r in done.values()) else 0)


if __name__ == "__main__":
    main()
