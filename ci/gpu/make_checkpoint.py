"""Build the full-size RANDOM Quicksviewer checkpoint on the GPU and convert it.

Qwen2.5-7B + SigLIP-so400m shapes, vocab 151673, bf16, original on-disk format
(tools/checkpoints/tiny.py, shape "7b", weights drawn on CUDA), then the
converter. The tokenizer is built from the carried qwen.tiktoken (QSV_CACHE_DIR).
"""

import os
from pathlib import Path

from common import Timer, checkpoint_dirs, write_result

from tools.checkpoints.convert import convert_checkpoint
from tools.checkpoints.tiny import make_tiny_checkpoint


def main():
    timer = Timer()
    original, converted = checkpoint_dirs()
    cache = Path(os.environ["QSV_CACHE_DIR"])
    if not (original / "config.json").exists():
        make_tiny_checkpoint(
            original,
            seed=0,
            dtype="bf16",
            tokenizer_cache_dir=cache,
            shape="7b",
            device="cuda",
        )
    made = timer()
    convert_checkpoint(original, converted, log=print)
    size = sum(f.stat().st_size for f in original.glob("*.safetensors"))
    write_result(
        "checkpoint",
        {"bytes": size, "make_s": made, "total_s": timer(), "dir": str(converted)},
    )


if __name__ == "__main__":
    main()
