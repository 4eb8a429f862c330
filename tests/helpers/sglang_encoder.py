"""Run Quicksviewer's SGLang processor and visual encoder in this process.

Usage: sglang_encoder.py CONVERTED_CKPT DTYPE OUT.pt VIDEO [VIDEO ...]

For every video it saves the processor's pixels (fp16, after the model's table), the frame timestamps,
the cube start frames and the (K + 1, Q, D) visual embeddings computed by
QuicksviewerForCausalLM.encode_video. It runs in its own process because it
initialises SGLang's (single-rank) distributed state and global server args.
"""

import asyncio
import sys
from pathlib import Path

import torch
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.models.quicksviewer import lookup_pixels

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the project's tools
from tools.sglang_inprocess import init_single_rank, load_model  # noqa: E402


def main(ckpt: str, dtype: str, out: str, videos: list[str]) -> None:
    init_single_rank(ckpt)
    processor, model = load_model(ckpt, dtype)
    results = []
    for video in videos:
        request = GenerateReqInput(text="<video>\n", video_data=[video])
        output = asyncio.run(
            processor.process_mm_data_async([], None, "<video>\n", request)
        )
        (item,) = output.mm_items
        frames, table = item.feature, item.model_specific_data["pixel_table"]
        # the fp16 pixels the tower sees (the model applies the table on its device)
        pixels = lookup_pixels(frames, table)
        embeddings, starts = model.encode_video(frames, table)
        results.append(
            {
                "video": video,
                "pixels": pixels,
                "timestamp_token_ids": item.model_specific_data["timestamp_token_ids"],
                "input_ids": output.input_ids,
                "offsets": item.offsets,
                "starts": starts,
                "embeddings": embeddings.float(),
            }
        )
    torch.save(results, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
