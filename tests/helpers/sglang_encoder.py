"""Run Quicksviewer's SGLang processor and visual encoder in this process.

Usage: sglang_encoder.py CONVERTED_CKPT DTYPE OUT.pt VIDEO [VIDEO ...]

For every video it saves the processor's pixels (fp16, after the model's table), the frame timestamps,
the cube start frames and the (K + 1, Q, D) visual embeddings computed by
QuicksviewerForCausalLM.encode_video. It runs in its own process because it
initialises SGLang's (single-rank) distributed state and global server args.
"""

import asyncio
import inspect
import sys
from pathlib import Path

import torch
from safetensors import safe_open
from sglang.srt.configs.quicksviewer import QuicksviewerConfig
from sglang.srt.distributed import (
    init_distributed_environment,
    initialize_model_parallel,
)
from sglang.srt.managers.io_struct import GenerateReqInput
from sglang.srt.models.quicksviewer import QuicksviewerForCausalLM, lookup_pixels
from sglang.srt.multimodal.processors.quicksviewer import QuicksviewerProcessor
from sglang.srt.runtime_context import publish
from sglang.srt.server_args import ServerArgs
from sglang.srt.utils.network import get_free_port
from transformers import AutoTokenizer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def publish_server_args(ckpt: str, device: str = "cpu") -> ServerArgs:
    """The global server args SGLang's layers read, as a scheduler sets them."""
    server_args = ServerArgs(
        model_path=ckpt,
        device=device,
        attention_backend="torch_native" if device == "cpu" else "triton",
        mm_attention_backend="sdpa",
    )
    kwargs = {}
    if "ranks" in inspect.signature(publish).parameters:
        # SGLang >= 0.5.23: a scheduler publishes its place in the topology too
        from sglang.srt.runtime_context import SpawnRanks

        kwargs["ranks"] = SpawnRanks(
            world_rank=0, gpu_id=0 if device != "cpu" else None
        )
    publish(server_args, role="scheduler", **kwargs)
    return server_args


def init_single_rank(ckpt: str, device: str = "cpu") -> None:
    """The server args and the (single-rank) distributed state of a scheduler."""
    publish_server_args(ckpt, device)
    init_distributed_environment(
        backend="gloo",
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"tcp://127.0.0.1:{get_free_port()}",
    )
    initialize_model_parallel()  # one rank (0.5.23: widths from the server args)


def load_model(ckpt: str, dtype: str, device: str = "cpu"):
    """The processor and the QuicksviewerForCausalLM of a converted checkpoint
    (the default dtype stays ``dtype``, as in a model worker)."""
    server_args = publish_server_args(ckpt, device)
    config = QuicksviewerConfig.from_pretrained(ckpt)
    processor = QuicksviewerProcessor(
        config, server_args, AutoTokenizer.from_pretrained(ckpt), None
    )
    torch.set_default_dtype(DTYPES[dtype])
    with torch.device(device):
        model = QuicksviewerForCausalLM(config).eval()
    model.load_weights(weights(Path(ckpt)))
    return processor, model


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


def weights(ckpt: Path):
    for path in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:])
