"""Shared settings of the GPU-host scripts (ci/gpu/*.py, benchmarks/).

The GPU host has torch preinstalled and nothing else; ci/gpu/setup.sh installs
the offline bundle (make wheelhouse) and puts it and the repository on
PYTHONPATH. Engines are created under ``if __name__ == "__main__":`` (SGLang
spawns processes) with backends named explicitly: the slim sgl-kernel of the
bundle has no FA3, and the default vision attention on H100 would be FA3.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WORK = Path(os.environ.get("QSV_GPU_WORK", "/tmp/qsv-gpu"))
OUT = Path(os.environ.get("OUT", WORK / "out"))
QUESTION = "What is happening in the video?"
PROMPT = f"<|im_start|>user\n<video>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"

# name -> (seconds, fps, width, height): 60 and 420 frames at 1 fps
# (the clips of ../shared/reference/visual-path-facts.md)
VIDEOS = {
    "60s": (60, 30.0, 640, 360),
    "420s": (430, 10.0, 640, 360),
    "420s_720p": (430, 5.0, 1280, 720),
}

ENGINE_ARGS = dict(
    dtype="bfloat16",
    # flashinfer decodes faster after long video prompts (212.6 against 182.3 tok/s
    # at batch 1) but is not the default yet: its parity stage has not run on the GPU
    # and its JIT build takes about 2 min of a fresh host's first start
    # (docs/performance.md, 2026-12-03 c)
    attention_backend="triton",
    sampling_backend="pytorch",
    # SDPA like the original SigLIP: closest first-token log-probabilities (0.19 vs
    # 0.37 with triton_attn, docs/gpu-runs.md) at about the same speed
    mm_attention_backend="sdpa",
    mem_fraction_static=0.6,
    cuda_graph_max_bs_decode=8,
    # a new video's prefill in 2048-token chunks, running decodes in each: a running
    # stream's largest gap while a 420-frame video is admitted 0.058-0.082 s against
    # 0.119 s with one 5.9k-token chunk (docs/performance.md, 2026-12-03 c)
    chunked_prefill_size=2048,
    enable_mixed_chunk=True,
    # decode after long video prompts: 16 splits beat the default 8 at batch 1 and
    # 8 (docs/performance.md, 2026-12-01 session 3)
    triton_attention_num_kv_splits=16,
    log_level="warning",
)


def server_flags() -> list:
    """ENGINE_ARGS as ``launch_server`` flags (True: the bare flag), then the extra
    flags of ``QSV_SERVER_ARGS`` (space-separated; a later flag wins)."""
    flags = [
        f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}")
        for k, v in ENGINE_ARGS.items()
    ]
    return flags + os.environ.get("QSV_SERVER_ARGS", "").split()


def checkpoint_dirs() -> tuple[Path, Path]:
    """(original-format, converted) full-size random checkpoints."""
    return WORK / "ckpt-original", WORK / "ckpt-converted"


VIDEO_SEED = 1


def video_path(name: str) -> Path:
    """Where the clip ``name`` of VIDEOS lives (written by ``video`` or
    ``write_clips``)."""
    return WORK / f"{name}.mp4"


def video(name: str) -> Path:
    path = video_path(name)
    if not path.exists():
        write_clips({path: (*VIDEOS[name], VIDEO_SEED)})
    return path


def write_clips(jobs: dict) -> None:
    """Write every clip of ``jobs`` (path -> (seconds, fps, width, height, seed))
    that does not exist yet, one process each: on a fresh host the 720p clips take
    over a minute apiece, and written one after the other they ate a device call
    (docs/gpu-runs.md, 2026-12-03 b). Call it with several clips only before any
    engine or thread starts (serving.py does); one clip is written in this process.
    tools.media writes each file whole or not at all."""
    from concurrent.futures import ProcessPoolExecutor

    from tools.media import write_video

    todo = {path: spec for path, spec in jobs.items() if not Path(path).exists()}
    if not todo:
        return
    WORK.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if len(todo) == 1:  # in this process: no fork beside an engine's threads
        ((path, spec),) = todo.items()
        write_video(path, *spec[:4], seed=spec[4])
    else:
        workers = min(len(todo), os.cpu_count() or 1)
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(write_video, path, *spec[:4], seed=spec[4])
                for path, spec in todo.items()
            ]
            for future in futures:
                future.result()
    names = ", ".join(Path(p).name for p in todo)
    print(f"wrote {names} in {time.perf_counter() - start:.1f} s", flush=True)


def generate_video(engine, path: Path, new_tokens: int, **extra) -> dict:
    """One greedy request of PROMPT about the video at ``path``, with the
    log-probabilities from the first prompt position (so that meta_info reports
    the prompt ids); ``extra``: more Engine.generate arguments."""
    return engine.generate(
        prompt=PROMPT,
        video_data=[str(path)],
        sampling_params={"temperature": 0, "max_new_tokens": new_tokens},
        return_logprob=True,
        logprob_start_len=0,
        **extra,
    )


def write_result(name: str, result: dict) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / f"{name}.json"
    path.write_text(json.dumps(result, indent=1, default=str))
    print(f"== {name}: {json.dumps(result, default=str)[:2000]}", flush=True)
    return path


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self.start, 3)
