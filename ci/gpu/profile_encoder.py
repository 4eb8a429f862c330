"""Where the video encoder's time goes on the GPU: one stage at a time, then the
kernels (torch.profiler). Writes $OUT/profile_encoder.json.

    python ci/gpu/profile_encoder.py [--frames 60 420] [--repeat 3]

On the full-size random checkpoint of ci/gpu/make_checkpoint.py, bf16, the model
loaded in this process (tools/sglang_inprocess.py, one rank), random uint8 frames at
the tower's size (the processor's output). For each frame count:

- ``encode_video`` end to end (synchronised, best of ``--repeat``) on every SM;
- the same split into its stages, each synchronised: pixel lookup + SigLIP tower +
  grid resize (``encode_frames``), the cubing head (``boundary_scores``), the cube
  choice and the one device-to-host copy, the thumbnail, the per-cube resampler
  calls; with the CPU time of the thread beside the wall time (launch-bound stages
  show CPU time close to their wall time);
- the 25 CUDA kernels with the largest total time and the 15 CPU operators with the
  largest self time (torch.profiler, one encode);
- the grid resize (27x27 -> 24x24 bilinear, fp32, of the tower's output), the
  largest single kernel of the first profile: the original's call (an NCHW copy),
  the model's (``resize_patch_grid``, channels-last) and the original's on 8 streams
  in frame slices, on the real tower output and on random values, each timed and
  compared bit for bit with the original's, with the kernel each one ran;
- contention: a stand-in for the scheduler's decode loop on the main thread (a
  high-priority stream; per step 64 small operators, a matrix-vector product over
  2 GB of weights, a wait for the step), its step times alone and while a worker
  thread encodes the video on another stream (every SM, and the model's green
  context), at Python's default GIL switch interval (5 ms) and at 0.5 ms; it tells
  GIL contention (fixed by the interval) from GPU contention (not).

Not a CI stage: a profile for development (docs/performance.md cites it).
``--device cpu --checkpoint DIR`` runs the same code on a CPU host (a tiny
converted checkpoint; no streams, so no slices and no contention part), to try the
script before a GPU call.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import checkpoint_dirs, write_result  # noqa: E402


DEVICE = "cuda"


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(fn, repeat: int) -> tuple:
    """(result, best wall seconds, CPU seconds of that run) of ``fn``, synchronised."""
    best = None
    for _ in range(repeat):
        sync()
        wall, cpu = time.perf_counter(), time.thread_time()
        result = fn()
        sync()
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        if best is None or wall < best[1]:
            best = (result, wall, cpu)
    return best


def stages(model, frames, table, repeat: int) -> dict:
    from sglang.srt.models.quicksviewer import select_cubes

    cubing = model.cubing
    out = {}
    video, out["encode_frames_s"], out["encode_frames_cpu_s"] = timed(
        lambda: model.encode_frames(frames, table), repeat
    )
    scores, out["boundary_scores_s"], out["boundary_scores_cpu_s"] = timed(
        lambda: cubing.boundary_scores(video), repeat
    )
    num = video.shape[0]

    def choose():
        weights = select_cubes(scores, num, cubing.frames_per_cube)
        host = torch.cat([weights, weights.sum()[None], scores]).tolist()
        return weights, host

    (weights, host), out["select_and_copy_s"], _ = timed(choose, repeat)
    starts = [i for i, w in enumerate(host[:num]) if w != 0]
    _, out["thumbnail_s"], _ = timed(
        lambda: cubing.thumbnail(video, weights, host[num]), repeat
    )

    def resample():
        ends = starts[1:] + [num]
        return [
            model.resampler(video[s:e].reshape(1, -1, video.shape[-1]), frame_start=s)
            for s, e in zip(starts, ends)
        ]

    _, out["resampler_s"], out["resampler_cpu_s"] = timed(resample, repeat)
    out["cubes"] = len(starts)
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in out.items()}


def kernels(model, frames, table) -> dict:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if DEVICE == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities) as prof:
        model.encode_video(frames, table)
        sync()
    events = prof.key_averages()
    cuda = sorted(events, key=lambda e: e.device_time_total, reverse=True)
    cpu = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)
    return {
        "cuda_total_ms": round(sum(e.self_device_time_total for e in events) / 1e3, 2),
        "cuda_top": [
            [e.key[:90], e.count, round(e.self_device_time_total / 1e3, 2)]
            for e in sorted(
                events, key=lambda e: e.self_device_time_total, reverse=True
            )[:25]
        ],
        "cuda_inclusive_top": [
            [e.key[:90], e.count, round(e.device_time_total / 1e3, 2)]
            for e in cuda[:15]
        ],
        "cpu_self_top": [
            [e.key[:90], e.count, round(e.self_cpu_time_total / 1e3, 2)]
            for e in cpu[:15]
        ],
    }


def original_interpolate(features):
    """The original's SiglipVisionTower.interpolate (an NCHW-contiguous copy)."""
    import torch.nn.functional as F

    b, tokens, dim = features.shape
    side = int(tokens**0.5)
    grid = features.view(b, side, side, dim).permute(0, 3, 1, 2).contiguous()
    grid = F.interpolate(
        grid.to(torch.float32), size=(24, 24), mode="bilinear", align_corners=False
    ).to(features.dtype)
    return grid.permute(0, 2, 3, 1).contiguous().flatten(1, 2)


def grid_resize_variants(hidden) -> dict:
    """The model's grid resize (resize_patch_grid), the original's and the frames
    in slices on 8 streams, on one (B, 729, 1152) tower output: each timed, with
    the kernel it ran, and compared bit for bit with the original's."""
    from torch.profiler import ProfilerActivity, profile

    from sglang.srt.models.quicksviewer import resize_patch_grid

    frames, side = hidden.shape[0], 27
    streams = [torch.cuda.Stream() for _ in range(8)] if DEVICE == "cuda" else []

    def sliced():
        out = torch.empty(
            (frames, 576, hidden.shape[-1]), device=DEVICE, dtype=hidden.dtype
        )
        main = torch.cuda.current_stream()
        step = -(-frames // len(streams))
        for i, stream in enumerate(streams):
            stream.wait_stream(main)
            with torch.cuda.stream(stream):
                part = slice(i * step, (i + 1) * step)
                out[part] = original_interpolate(hidden[part])
        for stream in streams:
            main.wait_stream(stream)
        return out

    variants = {
        "original": lambda: original_interpolate(hidden),
        "model": lambda: resize_patch_grid(hidden.view(frames, side, side, -1), 24),
    }
    if streams:
        variants["8_stream_slices"] = sliced
    reference = variants["original"]()
    activities = [ProfilerActivity.CPU]
    if DEVICE == "cuda":
        activities.append(ProfilerActivity.CUDA)
    out = {"input_strides": list(hidden.stride())}
    for name, fn in variants.items():
        result, seconds, _ = timed(fn, 5)
        with profile(activities=activities) as prof:
            fn()
            sync()
        kernels = sorted(
            {e.key[:80] for e in prof.key_averages() if "upsample" in e.key.lower()}
        )
        out[name] = {
            "ms": round(seconds * 1e3, 3),
            "identical_to_original": bool(torch.equal(result, reference)),
            "kernels": kernels,
        }
    return out


def tower_outputs(model, frames, table) -> dict:
    """grid_resize_variants on the real tower output of ``frames`` and on random
    bf16 values of the same shape."""
    from sglang.srt.models.quicksviewer import lookup_pixels

    weight = model.vision_tower.embeddings.patch_embedding.weight
    with torch.no_grad():
        pixels = lookup_pixels(frames, table).to(weight.dtype)
        hidden = model.vision_tower(pixels)
    gen = torch.Generator(device=DEVICE).manual_seed(frames.shape[0])
    noise = torch.randn(hidden.shape, device=DEVICE, generator=gen).to(hidden.dtype)
    return {
        "tower": grid_resize_variants(hidden),
        "random": grid_resize_variants(noise * 4),
        "transposed_stream": transposed_stream(model, pixels, hidden),
    }


def transposed_stream(model, pixels, hidden) -> dict:
    """The tower with the residual stream in the transposed layout that SGLang's
    Idefics2 embeddings had before patch 0015 (the original's layout too): its
    output compared bit for bit with the tower's, and both timed."""
    tower = model.vision_tower
    seq = hidden.shape[1]
    cu_seqlens = torch.arange(0, (pixels.shape[0] + 1) * seq, seq, dtype=torch.int32)
    from sglang.srt.layers.attention.vision import prepare_vision_attention_metadata

    def run():
        with torch.no_grad():
            emb = tower.embeddings(pixel_values=pixels)
            emb = emb.transpose(1, 2).contiguous().transpose(1, 2)
            meta = prepare_vision_attention_metadata(
                cu_seqlens, device=emb.device, max_seqlen=seq
            )
            out = tower.encoder(emb, cu_seqlens=cu_seqlens, forward_metadata=meta)
            return tower.post_layernorm(out)

    out, seconds, _ = timed(run, 3)

    def contiguous():
        with torch.no_grad():
            return tower(pixels)

    _, contiguous_s, _ = timed(contiguous, 3)
    return {
        "identical": bool(torch.equal(out, hidden)),
        "transposed_strides": list(out.stride()),
        "contiguous_strides": list(hidden.stride()),
        "transposed_s": round(seconds, 4),
        "contiguous_s": round(contiguous_s, 4),
    }


def decode_loop(stop, weights, steps: list, stream) -> None:
    """The stand-in decode loop on ``stream``: one step = 64 small operators (a
    scheduler's bookkeeping), one bandwidth-bound GEMV, then a wait for it."""
    x = torch.ones(1, weights.shape[0], device=weights.device, dtype=weights.dtype)
    small = torch.zeros(64, device=weights.device)
    last = time.perf_counter()
    with torch.cuda.stream(stream):
        while not stop():
            for _ in range(64):
                small.add_(1)
            (x @ weights).sum()
            stream.synchronize()
            now = time.perf_counter()
            steps.append(now - last)
            last = now


def gap_summary(steps: list) -> dict:
    if not steps:
        return {"steps": 0}
    ordered = sorted(steps)
    return {
        "steps": len(steps),
        "median_ms": round(statistics.median(ordered) * 1e3, 3),
        "p99_ms": round(
            ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1e3, 3
        ),
        "max_ms": round(ordered[-1] * 1e3, 3),
    }


def contention(model, frames, table) -> dict:
    """Step times of the stand-in decode loop, alone and beside an encode."""
    from sglang.srt.models.quicksviewer import encoder_stream

    weights = torch.randn(1 << 15, 1 << 15, device="cuda", dtype=torch.bfloat16)
    high = torch.cuda.Stream(priority=torch.cuda.Stream.priority_range()[1])
    green, context = encoder_stream(frames.device)
    plain = torch.cuda.Stream()
    out = {}
    for interval in (0.005, 0.0005):
        sys.setswitchinterval(interval)
        steps: list = []
        deadline = time.perf_counter() + 1.0
        decode_loop(lambda: time.perf_counter() > deadline, weights, steps, high)
        out[f"alone_{interval}"] = gap_summary(steps[1:])
        for name, stream in (("all_sms", plain), ("green", green)):
            if stream is None:
                continue
            done = threading.Event()
            encode_s = []

            def work():
                t = time.perf_counter()
                with torch.no_grad(), torch.cuda.stream(stream):
                    model.encode_video(frames, table)
                stream.synchronize()
                encode_s.append(time.perf_counter() - t)
                done.set()

            steps = []
            worker = threading.Thread(target=work)
            worker.start()
            decode_loop(done.is_set, weights, steps, high)
            worker.join()
            entry = gap_summary(steps[1:])
            entry["encode_s"] = round(encode_s[0], 4)
            out[f"{name}_{interval}"] = entry
    sys.setswitchinterval(0.005)
    del weights, context
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[60, 420])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--checkpoint", type=Path, default=None, help="a converted checkpoint"
    )
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device

    from tools.sglang_inprocess import init_single_rank, load_model

    converted = args.checkpoint or checkpoint_dirs()[1]
    init_single_rank(str(converted), DEVICE)
    processor, model = load_model(str(converted), "bf16", DEVICE)
    from sglang.srt.multimodal.quicksviewer_resize import PixelNormalizer

    table = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3).table.to(DEVICE)
    side = model.vision_tower.embeddings.image_size
    gpu = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu"
    result = {"gpu": gpu, "torch": torch.__version__}
    gen = torch.Generator(device=DEVICE).manual_seed(0)
    for n in args.frames:
        frames = torch.randint(
            0, 256, (n, side, side, 3), dtype=torch.uint8, device=DEVICE, generator=gen
        )
        with torch.no_grad():
            model.encode_video(frames, table)  # warm-up (autotuning, tables)
            _, wall, cpu = timed(lambda: model.encode_video(frames, table), args.repeat)
            entry = {
                "encode_video_s": round(wall, 4),
                "encode_video_cpu_s": round(cpu, 4),
            }
            entry.update(stages(model, frames, table, args.repeat))
            entry.update(kernels(model, frames, table))
            entry["grid_resize"] = tower_outputs(model, frames, table)
        result[f"{n}_frames"] = entry
        write_result("profile_encoder", result)  # kept if a later part runs out of time
        if n == max(args.frames) and DEVICE == "cuda":
            entry["contention"] = contention(model, frames, table)
        # the output tail is all a call that runs out of time returns: the summary
        brief = {k: v for k, v in entry.items() if not k.startswith("cuda")}
        print(f"== {n} frames: {json.dumps(brief)}", flush=True)
    write_result("profile_encoder", result)


if __name__ == "__main__":
    main()
