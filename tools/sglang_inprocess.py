"""SGLang's Quicksviewer processor and model in this process, as a scheduler sets
them up: the global server args, the single-rank distributed state, the weights of a
converted checkpoint. Shared by the tests' helper scripts (tests/helpers/), the GPU
CI's image stages and the component benchmark. Import it only where the patched
SGLang is importable.
"""

import inspect
from pathlib import Path

import torch
from safetensors import safe_open
from sglang.srt.configs.quicksviewer import QuicksviewerConfig
from sglang.srt.distributed import (
    init_distributed_environment,
    initialize_model_parallel,
)
from sglang.srt.models.quicksviewer import QuicksviewerForCausalLM
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
    publish_as_scheduler(server_args)
    return server_args


def publish_as_scheduler(server_args: ServerArgs) -> None:
    """Publish ``server_args`` as a (single-rank) scheduler process does."""
    kwargs = {}
    if "ranks" in inspect.signature(publish).parameters:
        # SGLang >= 0.5.23: a scheduler publishes its place in the topology too
        from sglang.srt.runtime_context import SpawnRanks

        gpu_id = None if server_args.device == "cpu" else 0
        kwargs["ranks"] = SpawnRanks(world_rank=0, gpu_id=gpu_id)
    publish(server_args, role="scheduler", **kwargs)


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


def weights(ckpt: Path):
    for path in sorted(ckpt.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)
