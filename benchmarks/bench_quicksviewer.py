"""Quicksviewer benchmark: SGLang vs the reference implementation, same weights.

SGLang's ``bench_one_batch --input-images`` does not exist for videos; this is
the project's equivalent:

    python benchmarks/bench_quicksviewer.py --model CONVERTED --reference ORIGINAL \
        --video clip.mp4 [--video long.mp4] [--prompt "What happens?"]

For every video it reports the time to first token split into frame decoding +
preprocessing (the processor), visual encoder + cubing, and LLM prefill of the
final prompt length; decode tokens/s at batch 1 and 8; and the throughput of 8
concurrent video requests. The same is measured for the reference
implementation (transformers). Each phase runs in its own process so the GPU
holds one copy of the weights at a time. Prints a table, writes JSON (--out).

``--gpu-suite`` runs the GPU CI configuration (ci/gpu/common.py: the random 7B
checkpoint, a 60- and a 420-frame video) and writes $OUT/bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "ci" / "gpu")]

QUESTION = "What is happening in the video?"
DECODE_LEN = 128
BATCH = 8
THROUGHPUT_TOKENS = 64


def prompt_for(question: str) -> str:
    return f"<|im_start|>user\n<video>\n{question}<|im_end|>\n<|im_start|>assistant\n"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeat: int = 2):
    """Run ``fn`` ``repeat`` times (the first warms up); return (result, seconds)."""
    for _ in range(repeat):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        elapsed = time.perf_counter() - start
    return result, elapsed


# --------------------------------------------------------------------- SGLang
def sglang_components(args) -> dict:
    """Processor and visual encoder, in-process (single rank)."""
    import asyncio

    from sglang.srt.configs.quicksviewer import QuicksviewerConfig
    from sglang.srt.distributed import (
        init_distributed_environment,
        initialize_model_parallel,
    )
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.models.quicksviewer import QuicksviewerForCausalLM
    from sglang.srt.multimodal.processors.quicksviewer import QuicksviewerProcessor
    from sglang.srt.server_args import ServerArgs
    from sglang.srt.utils.network import get_free_port
    from transformers import AutoTokenizer

    from tools.sglang_inprocess import publish_as_scheduler, weights

    server_args = ServerArgs(
        model_path=args.model,
        device=args.device,
        attention_backend="triton" if args.device == "cuda" else "torch_native",
        mm_attention_backend=args.mm_attention_backend,
        # in-process: the frames stay a tensor (no CUDA IPC proxy)
        mm_feature_transport="cpu",
    )
    publish_as_scheduler(server_args)
    init_distributed_environment(
        backend="nccl" if args.device == "cuda" else "gloo",
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{get_free_port()}",
    )
    initialize_model_parallel()  # one rank (0.5.23: widths from the server args)
    config = QuicksviewerConfig.from_pretrained(args.model)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    processor = QuicksviewerProcessor(config, server_args, tokenizer, None)
    torch.set_default_dtype(getattr(torch, args.dtype))
    with torch.device(args.device):
        model = QuicksviewerForCausalLM(config).eval()
    model.load_weights(weights(Path(args.model)))
    model.to(args.device)

    results = {}
    for video in args.video:
        request = GenerateReqInput(text="<video>\n", video_data=[video])

        def process():
            return asyncio.run(
                processor.process_mm_data_async([], None, prompt_for(QUESTION), request)
            )

        output, t_process = timed(process, "cpu", repeat=1)
        (item,) = output.mm_items
        frames = item.feature.to(args.device)
        table = item.model_specific_data["pixel_table"]
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            with profile(
                activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]
            ) as prof:
                model.encode_video(frames, table)
                sync(args.device)
            print(
                prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
            )
        (_, starts, _), t_encode = timed(
            lambda: model.encode_video(frames, table), args.device
        )
        item.pad_value = 1 << 20
        ids = model.pad_input_ids(list(output.input_ids), _Inputs([item]))
        results[video] = {
            "frames": frames.shape[0],
            "cubes": len(starts),
            "prompt_tokens": len(ids),
            "decode_preprocess_s": t_process,
            "encoder_cubing_s": t_encode,
        }
    return results


class _Inputs:
    def __init__(self, items):
        self.mm_items = items


def sglang_engine(args, prompt_lengths: dict) -> dict:
    import sglang

    engine_args = dict(model_path=args.model, dtype=args.dtype, log_level="warning")
    if args.device == "cuda":
        from common import ENGINE_ARGS

        engine_args.update(ENGINE_ARGS)
    else:
        engine_args.update(
            device="cpu",
            attention_backend="torch_native",
            mm_attention_backend="sdpa",
            max_total_tokens=32768,
        )
    engine = sglang.Engine(**engine_args)
    vocab = len(engine.tokenizer_manager.tokenizer)
    gen = torch.Generator().manual_seed(0)

    def random_ids(n):
        return torch.randint(1000, vocab - 100, (n,), generator=gen).tolist()

    def latency(batch_ids, new_tokens):
        start = time.perf_counter()
        engine.generate(
            input_ids=batch_ids,
            sampling_params={
                "temperature": 0,
                "max_new_tokens": new_tokens,
                "ignore_eos": True,
            },
        )
        return time.perf_counter() - start

    results = {"videos": {}}
    for video, length in prompt_lengths.items():
        latency([random_ids(length)], 1)  # warm-up
        prefill = latency([random_ids(length)], 1)
        start = time.perf_counter()
        engine.generate(
            prompt=prompt_for(args.prompt),
            video_data=[video],
            sampling_params={"temperature": 0, "max_new_tokens": 1},
        )
        results["videos"][video] = {
            "llm_prefill_s": prefill,
            "end_to_end_ttft_s": time.perf_counter() - start,
        }
    for batch in (1, BATCH):
        prompts = [random_ids(512) for _ in range(batch)]
        latency(prompts, DECODE_LEN + 1)  # warm-up (and CUDA graph capture sizes)
        first = latency([random_ids(512) for _ in range(batch)], 1)
        full = latency([random_ids(512) for _ in range(batch)], DECODE_LEN + 1)
        results[f"decode_tok_s_batch{batch}"] = DECODE_LEN / (full - first)
    videos = throughput_videos(args)

    async def concurrent():
        import asyncio

        return await asyncio.gather(
            *(
                engine.async_generate(
                    prompt=prompt_for(args.prompt),
                    video_data=[video],
                    sampling_params={
                        "temperature": 0,
                        "max_new_tokens": THROUGHPUT_TOKENS,
                        "ignore_eos": True,
                    },
                )
                for video in videos
            )
        )

    start = time.perf_counter()
    engine.loop.run_until_complete(concurrent())
    wall = time.perf_counter() - start
    results["concurrent_videos"] = len(videos)
    results["concurrent_wall_s"] = wall
    results["concurrent_requests_per_s"] = len(videos) / wall
    engine.shutdown()
    return results


def throughput_videos(args) -> list[str]:
    """BATCH distinct copies of the first video's length (no cache sharing)."""
    import cv2

    from tools.media import write_video

    cap = cv2.VideoCapture(args.video[0])
    fps = cap.get(cv2.CAP_PROP_FPS)
    seconds = cap.get(cv2.CAP_PROP_FRAME_COUNT) / fps
    width, height = int(cap.get(3)), int(cap.get(4))
    cap.release()
    root = Path(args.work) / "throughput"
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in range(BATCH):
        path = root / f"clip{seed}.mp4"
        if not path.exists():
            write_video(path, seconds, fps, width, height, seed=100 + seed)
        paths.append(str(path))
    return paths


# ------------------------------------------------------------------ reference
def reference_all(args, prompt_lengths: dict) -> dict:
    from qsv_reference.model import QuicksviewerReference
    from qsv_reference.video import extract_frames

    dtype = getattr(torch, args.dtype)
    ref = QuicksviewerReference(args.reference, dtype=dtype, device=args.device)
    results = {"videos": {}}
    for video in args.video:
        frames, t_frames = timed(lambda: extract_frames(video), "cpu", repeat=1)
        pixels, t_pixels = timed(lambda: ref.pixels(frames.frames), "cpu", repeat=1)
        entry = {"decode_preprocess_s": t_frames + t_pixels}
        try:
            _, entry["encoder_cubing_s"] = timed(
                lambda: ref.encode_video(pixels), args.device
            )
            length = prompt_lengths[video]
            embeds = torch.randn(1, length, ref.llm.config.hidden_size, dtype=dtype)
            embeds = embeds.to(args.device)
            _, entry["llm_prefill_s"] = timed(
                lambda: ref.llm(inputs_embeds=embeds, logits_to_keep=1), args.device
            )
        except torch.OutOfMemoryError as e:
            # the original encodes all frames in one batch with every hidden state
            entry["error"] = f"out of memory: {str(e)[:200]}"
        del pixels
        if args.device == "cuda":
            torch.cuda.empty_cache()
        results["videos"][video] = entry
    vocab = ref.llm.config.vocab_size
    for batch in (1, BATCH):
        ids = torch.randint(1000, vocab - 100, (batch, 512)).to(args.device)

        def run(new_tokens):
            return ref.llm.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )

        _, first = timed(lambda: run(1), args.device)
        _, full = timed(lambda: run(DECODE_LEN + 1), args.device, repeat=1)
        results[f"decode_tok_s_batch{batch}"] = DECODE_LEN / (full - first)
    videos = throughput_videos(args)
    sync(args.device)
    start = time.perf_counter()
    for video in videos:  # the original chat() serves one request at a time
        ref.run_video(video, args.prompt, max_new_tokens=THROUGHPUT_TOKENS)
    sync(args.device)
    wall = time.perf_counter() - start
    results["concurrent_videos"] = len(videos)
    results["concurrent_wall_s"] = wall
    results["concurrent_requests_per_s"] = len(videos) / wall
    return results


# ----------------------------------------------------------------------- main
def run_phase(phase: str, args, extra: dict | None = None) -> dict:
    """Run one phase in a child process and return its JSON result."""
    out = Path(args.work) / f"phase-{phase}.json"
    if args.resume and out.exists():
        return json.loads(out.read_text())
    cmd = [sys.executable, __file__, "--phase", phase, "--phase-out", str(out)]
    cmd += ["--model", args.model, "--dtype", args.dtype, "--device", args.device]
    cmd += ["--work", args.work, "--prompt", args.prompt]
    cmd += ["--mm-attention-backend", args.mm_attention_backend]
    if args.reference:
        cmd += ["--reference", args.reference]
    if args.profile:
        cmd += ["--profile"]
    for video in args.video:
        cmd += ["--video", video]
    if extra:
        cmd += ["--extra", json.dumps(extra)]
    subprocess.run(cmd, check=True)
    return json.loads(out.read_text())


def table(results: dict) -> str:
    rows = [("metric", "sglang", "reference", "ratio")]
    sgl, ref = results["sglang"], results.get("reference", {})

    def add(name, a, b, higher_better):
        ratio = (a / b if higher_better else b / a) if (a and b) else None
        rows.append(
            (
                name,
                f"{a:.3f}" if a is not None else "-",
                f"{b:.3f}" if b is not None else "-",
                f"{ratio:.2f}x" if ratio else "-",
            )
        )

    for video, v in sgl["videos"].items():
        r = ref.get("videos", {}).get(video, {})
        tag = f"{Path(video).stem} ({v['frames']} frames, {v['prompt_tokens']} tokens)"
        for key in ("decode_preprocess_s", "encoder_cubing_s", "llm_prefill_s"):
            add(f"{tag} {key}", v[key], r.get(key), False)
        gpu_side = v["encoder_cubing_s"] + v["llm_prefill_s"]
        ref_gpu = (
            r["encoder_cubing_s"] + r["llm_prefill_s"] if "llm_prefill_s" in r else None
        )
        add(f"{tag} GPU-side TTFT s", gpu_side, ref_gpu, False)
        add(f"{tag} end-to-end TTFT s", v["end_to_end_ttft_s"], None, False)
    for batch in (1, BATCH):
        key = f"decode_tok_s_batch{batch}"
        add(key, sgl[key], ref.get(key), True)
    add(
        f"{sgl['concurrent_videos']} concurrent video requests/s",
        sgl["concurrent_requests_per_s"],
        ref.get("concurrent_requests_per_s"),
        True,
    )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in rows
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="converted checkpoint")
    parser.add_argument("--reference", help="original-format checkpoint")
    parser.add_argument("--video", action="append", default=[])
    parser.add_argument("--prompt", default=QUESTION)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    parser.add_argument("--work", default="/tmp/qsv-bench")
    parser.add_argument(
        "--mm-attention-backend",
        default="sdpa",
    )
    parser.add_argument("--out", help="write the results here (JSON)")
    parser.add_argument("--gpu-suite", action="store_true")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler table of one encode_video per video",
    )
    parser.add_argument(
        "--resume", action="store_true", help="reuse phase results in --work"
    )
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--phase-out", help=argparse.SUPPRESS)
    parser.add_argument("--extra", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.gpu_suite:
        import common

        original, converted = common.checkpoint_dirs()
        args.model, args.reference = str(converted), str(original)
        args.video = [str(common.video("60s")), str(common.video("420s"))]
        args.work = str(common.WORK / "bench")
        args.out = str(common.OUT / "bench.json")
    Path(args.work).mkdir(parents=True, exist_ok=True)

    if args.phase:
        extra = json.loads(args.extra) if args.extra else {}
        phases = {
            "components": lambda: sglang_components(args),
            "engine": lambda: sglang_engine(args, extra),
            "reference": lambda: reference_all(args, extra),
        }
        Path(args.phase_out).write_text(json.dumps(phases[args.phase](), default=str))
        return

    components = run_phase("components", args)
    lengths = {video: c["prompt_tokens"] for video, c in components.items()}
    engine = run_phase("engine", args, lengths)
    sglang_results = {"videos": {}}
    for video, c in components.items():
        sglang_results["videos"][video] = {**c, **engine["videos"][video]}
    sglang_results.update({k: v for k, v in engine.items() if k != "videos"})
    results = {
        "host": {
            "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
            "dtype": args.dtype,
            "torch": torch.__version__,
        },
        "sglang": sglang_results,
    }
    if args.reference:
        results["reference"] = run_phase("reference", args, lengths)
    print(table(results))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
