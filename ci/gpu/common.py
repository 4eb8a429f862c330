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
    attention_backend="triton",
    sampling_backend="pytorch",
    # SDPA like the original SigLIP: closest first-token log-probabilities (0.19 vs
    # 0.37 with triton_attn, docs/gpu-runs.md) at about the same speed
    mm_attention_backend="sdpa",
    mem_fraction_static=0.6,
    cuda_graph_max_bs_decode=8,
    # decode after long video prompts: 16 splits beat the default 8 at batch 1 and
    # 8 (docs/performance.md, 2026-12-01 session 3)
    triton_attention_num_kv_splits=16,
    log_level="warning",
)


def checkpoint_dirs() -> tuple[Path, Path]:
    """(original-format, converted) full-size random checkpoints."""
    return WORK / "ckpt-original", WORK / "ckpt-converted"


def video(name: str) -> Path:
    from tools.media import write_video

    seconds, fps, width, height = VIDEOS[name]
    path = WORK / f"{name}.mp4"
    if not path.exists():
        WORK.mkdir(parents=True, exist_ok=True)
        write_video(path, seconds, fps, width, height, seed=1)
    return path


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
