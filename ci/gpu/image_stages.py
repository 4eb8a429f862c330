"""Image parity in bf16, stage by stage: where SGLang and the reference part.

    python ci/gpu/image_stages.py [--device cuda] [--tokens 24] [--no-engine]

On the full-size random checkpoint of ci/gpu/make_checkpoint.py (or
``--original/--converted`` dirs), one image (anyres) and two images, bf16:

1. pixels: the processor's uint8 views through the model's fp16 table against the
   reference's SigLIP processor (fp32 -> fp16 -> bf16): must be identical;
2. SigLIP features (tower + 27x27 -> 24x24 resize): SGLang's Idefics2 tower vs
   transformers' SiglipVisionModel on the same pixels;
3. resampler: SGLang's on its own features vs the reference's on its own, and both
   on the REFERENCE features (the resampler's own share of the deviation);
4. the LLM (with ``--engine``): SGLang's greedy tokens and per-step log-probs
   against the reference's; at the first step where they part, the reference's own
   margin between its top-1 and top-2 logits (in logits and bf16 ulps of the top-1).

Each deviation is reported as max |a - b| / max |b| and in bf16 ulps of max |b|.
Writes $OUT/image_stages.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ENGINE_ARGS, Timer, checkpoint_dirs, write_result  # noqa: E402

QUESTION = "What is in the image?"
SIZES = {"one": [(640, 480)], "two": [(640, 480), (300, 900)]}


def write_images(directory: Path) -> dict[str, list[Path]]:
    from PIL import Image

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(7)
    out = {}
    for name, sizes in SIZES.items():
        out[name] = []
        for i, (w, h) in enumerate(sizes):
            path = directory / f"{name}-{i}.png"
            if not path.exists():
                # smooth gradients + noise: photo-like statistics
                y, x = np.mgrid[0:h, 0:w]
                base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200
                noise = rng.rand(h, w, 3) * 55
                Image.fromarray((base + noise).astype("uint8")).save(path)
            out[name].append(path)
    return out


def deviation(ours: torch.Tensor, ref: torch.Tensor) -> dict:
    ours, ref = ours.float(), ref.float()
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    ulp = 2.0 ** (math.floor(math.log2(max(scale, 1e-30))) - 7)
    return {
        "max_abs": diff,
        "relative": diff / scale if scale else 0.0,
        "bf16_ulps_of_max": diff / ulp,
        "identical": bool(torch.equal(ours, ref)),
    }


def reference_stages(original: Path, images: dict, device: str, tokens: int) -> dict:
    from qsv_reference.model import QuicksviewerReference

    ref = QuicksviewerReference(original, dtype=torch.bfloat16, device=device)
    out = {"prompt": {}}
    for name, paths in images.items():
        run = ref.run_images(paths, QUESTION, max_new_tokens=tokens)
        with torch.no_grad():
            tower = ref.vision(run.pixels)
            # teacher-forced logits of every generated step (fp32)
            step_ids = torch.tensor([run.tokens[:-1]], device=device)
            embeds = torch.cat(
                [
                    run.generation.inputs_embeds.unsqueeze(0),
                    ref.llm.get_input_embeddings()(step_ids),
                ],
                dim=1,
            )
            logits = ref.llm(inputs_embeds=embeds).logits[0].float()
        logits = logits[-len(run.tokens) :]
        top2 = torch.topk(logits, 2, dim=-1)
        out[name] = {
            "pixels": run.pixels.cpu(),
            "tower": tower.cpu(),
            "features": run.features.cpu(),
            "tokens": run.tokens,
            "margins": (top2.values[:, 0] - top2.values[:, 1]).tolist(),
            "top1_logits": top2.values[:, 0].tolist(),
            "logprobs": torch.log_softmax(logits, -1).cpu(),
            "prompt_tokens": len(run.expanded_input_ids),
            # what a client sends: SGLang's placeholders in the variant's template
            "serving_prompt": ref.template.prompt("<image>\n" * len(paths) + QUESTION),
        }
    resampler = ref.resampler
    out["cross"] = {}
    with torch.no_grad():
        for name in images:
            tower = out[name]["tower"].to(device)
            grid = [[0, 24], [0, 24]]
            out["cross"][name] = resampler(tower, [[0, 1], *grid]).cpu()
    del ref
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    return out


def sglang_stages(converted: Path, images: dict, device: str, ref: dict) -> dict:
    from sglang.srt.managers.io_struct import GenerateReqInput
    from sglang.srt.models.quicksviewer import lookup_pixels

    from tools.sglang_inprocess import init_single_rank, load_model

    init_single_rank(str(converted), device)
    processor, model = load_model(str(converted), "bf16", device)
    result = {}
    for name, paths in images.items():
        text = "<image>\n" * len(paths)
        request = GenerateReqInput(text=text, image_data=[str(p) for p in paths])
        output = asyncio.run(
            processor.process_mm_data_async(
                [str(p) for p in paths], None, text, request
            )
        )
        frames = torch.cat([item.feature for item in output.mm_items]).to(device)
        table = output.mm_items[0].model_specific_data["pixel_table"]
        with torch.no_grad():
            pixels = lookup_pixels(frames, table.to(device)).to(torch.bfloat16)
            tower = model.encode_frames(frames, table)
            features = model.resampler(tower)
            cross = model.resampler(ref[name]["tower"].to(device))
        result[name] = {
            "views": int(frames.shape[0]),
            "pixels": deviation(pixels.cpu(), ref[name]["pixels"]),
            "tower": deviation(tower.cpu(), ref[name]["tower"]),
            "resampler": deviation(features.cpu(), ref[name]["features"]),
            "resampler_on_reference_features": deviation(
                cross.cpu(), ref["cross"][name]
            ),
        }
    del model
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    return result


def engine_stages(converted: Path, images: dict, ref: dict, tokens: int) -> dict:
    import sglang

    engine = sglang.Engine(model_path=str(converted), **ENGINE_ARGS)
    result = {}
    try:
        for name, paths in images.items():
            r = ref[name]
            out = engine.generate(
                prompt=r["serving_prompt"],
                image_data=[str(p) for p in paths],
                sampling_params={"temperature": 0, "max_new_tokens": tokens},
                return_logprob=True,
                top_logprobs_num=2,
            )
            ours = out["output_ids"]
            part = next(
                (i for i, (a, b) in enumerate(zip(ours, r["tokens"])) if a != b),
                None,
            )
            info = {
                "prompt_tokens": out["meta_info"]["prompt_tokens"],
                "prompt_tokens_reference": r["prompt_tokens"],
                "tokens_sglang": ours,
                "tokens_reference": r["tokens"],
                "equal_steps": part if part is not None else len(ours),
            }
            steps = out["meta_info"]["output_token_logprobs"]
            diffs = [
                abs(lp - r["logprobs"][i, tok].item())
                for i, (lp, tok, _) in enumerate(steps[: part or len(steps)])
            ]
            info["max_logprob_diff_while_equal"] = max(diffs) if diffs else None
            if part is not None:
                top1 = r["top1_logits"][part]
                ulp = 2.0 ** (math.floor(math.log2(abs(top1))) - 7)
                info["reference_margin_at_part"] = r["margins"][part]
                info["reference_margin_at_part_bf16_ulps"] = r["margins"][part] / ulp
                info["reference_min_margin_before_part"] = min(r["margins"][:part])
            result[name] = info
    finally:
        engine.shutdown()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original", type=Path)
    parser.add_argument("--converted", type=Path)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--no-engine", action="store_true")
    parser.add_argument("--images-dir", type=Path, default=Path("/tmp/qsv-images"))
    args = parser.parse_args()
    original, converted = checkpoint_dirs()
    original, converted = args.original or original, args.converted or converted
    images = write_images(args.images_dir)
    timer = Timer()
    ref = reference_stages(original, images, args.device, args.tokens)
    result = {"stages": sglang_stages(converted, images, args.device, ref)}
    if not args.no_engine:
        result["llm"] = engine_stages(converted, images, ref, args.tokens)
    result["seconds"] = timer()
    if args.device == "cuda":
        result["device"] = torch.cuda.get_device_name(0)
    write_result("image_stages", result)


if __name__ == "__main__":
    main()
