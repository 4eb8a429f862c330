"""``python -m qsv_reference --model CKPT (--video X.mp4 | --image A.jpg ...) --question Q``

Runs the reference on one video (or images) with greedy decoding and prints a JSON
summary: frame indices, timestamps, cube bounds, prompt length, generated token ids.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from qsv_reference.checkpoint import CheckpointError
from qsv_reference.model import QuicksviewerReference, summarize
from qsv_reference.video import VideoReadError

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qsv_reference", description=__doc__
    )
    parser.add_argument("--model", required=True, help="original-format checkpoint dir")
    media = parser.add_mutually_exclusive_group(required=True)
    media.add_argument("--video", help="video file")
    media.add_argument("--image", nargs="+", help="image file(s)")
    parser.add_argument("--question", required=True)
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--vision-tower", default=None, help="SigLIP dir override")
    parser.add_argument(
        "--model-base", default=None, help="base LLM (--model is then a stage folder)"
    )
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    try:
        model = QuicksviewerReference(
            args.model,
            dtype=DTYPES[args.dtype],
            device=args.device,
            vision_tower=args.vision_tower,
            model_base=args.model_base,
        )
        if args.video:
            run = model.run_video(args.video, args.question, args.max_new_tokens)
        else:
            run = model.run_images(args.image, args.question, args.max_new_tokens)
    except (CheckpointError, VideoReadError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summarize(run), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
