"""The ttft stage: time to first token through the HTTP server (streamed), for a
new video, the same request again and a follow-up turn, with the server's split.

A thin wrapper over benchmarks/bench_video_ttft.py with the GPU CI's clips and
server flags (common.ENGINE_ARGS). The warm-up uses a 12 s clip of its own, so
the "first" request of every measured clip is a video the server has not seen
(the gates refuse a "first" request served from the cache). Writes $OUT/ttft.json
(clip -> request -> run; the gates' METRICS read it) and $OUT/ttft-server.log.
"""

import os
import subprocess
import sys

from common import ENGINE_ARGS, OUT, REPO, WORK, checkpoint_dirs, video

# clip name in ttft.json -> common.VIDEOS name; "warm" is only the warm-up
CLIPS = {"60f": "60s", "420f_360p": "420s", "420f_720p": "420s_720p"}
WARM = (12, 30.0, 640, 360)  # seconds, fps, width, height


def warm_clip():
    from tools.media import write_video

    path = WORK / "warm12s.mp4"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        write_video(path, *WARM, seed=2)
    return path


def server_args() -> list:
    return [f"--server-arg=--{k.replace('_', '-')}={v}" for k, v in ENGINE_ARGS.items()]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    clips = [("warm", warm_clip())] + [(n, video(v)) for n, v in CLIPS.items()]
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_video_ttft.py"),
        "--model",
        str(checkpoint_dirs()[1]),
        *(f"--video={name}={path}" for name, path in clips),
        *server_args(),
        "--log",
        str(OUT / "ttft-server.log"),
        "--out",
        str(OUT / "ttft.json"),
    ]
    env = dict(os.environ, SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH=str(WORK))
    print(" ".join(cmd), flush=True)
    sys.exit(subprocess.run(cmd, env=env).returncode)


if __name__ == "__main__":
    main()
