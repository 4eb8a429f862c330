"""Run Quicksviewer's SGLang processor and pad_input_ids (the final prompt layout,
cubing included) for a list of requests, in this process.

Usage: sglang_layout.py JOBS.json OUT.pt

JOBS.json is a list of {"ckpt": converted dir, "dtype": "fp32"|"bf16", "prompt":
text with <video>/<image> placeholders, "videos": [...], "images": [...]}. For each
job OUT.pt gets the final input ids with every visual position as -200 (the
original's sentinel) and the cube start frames of each video. It runs in its own
process because it initialises SGLang's (single-rank) distributed state.
"""

import asyncio
import json
import sys
from pathlib import Path

import torch
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.managers.schedule_batch import MultimodalInputs

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project's tools
from tools.sglang_inprocess import init_single_rank, load_model  # noqa: E402

SENTINEL = -200


def layout(job: dict, models: dict) -> dict:
    ckpt = job["ckpt"]
    if ckpt not in models:
        models[ckpt] = load_model(ckpt, job["dtype"])
    processor, model = models[ckpt]
    request = GenerateReqInput(
        text=job["prompt"],
        video_data=job.get("videos") or None,
        image_data=job.get("images") or None,
    )
    output = asyncio.run(
        processor.process_mm_data_async(
            job.get("images") or [], None, job["prompt"], request
        )
    )
    mm_inputs = MultimodalInputs.from_processor_output(output)
    pad_values = {item.pad_value for item in mm_inputs.mm_items}
    ids = model.pad_input_ids(list(output.input_ids), mm_inputs)
    return {
        "input_ids": [SENTINEL if t in pad_values else t for t in ids],
        "offsets": [item.offsets for item in mm_inputs.mm_items],
    }


def main(jobs_path: str, out: str) -> None:
    jobs = json.loads(Path(jobs_path).read_text())
    init_single_rank(jobs[0]["ckpt"])
    models: dict = {}
    torch.save([layout(job, models) for job in jobs], out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
