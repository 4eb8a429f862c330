"""Tensor parallelism: TP=2 gives the same greedy output as TP=1 (2-GPU host).

Each rank runs the (replicated) visual encoder in pad_input_ids, so both ranks
must agree on the cubes; the prompt ids and greedy tokens of TP=1 and TP=2 are
compared. Writes $OUT/tp.json."""

import torch
from common import (
    ENGINE_ARGS,
    Timer,
    checkpoint_dirs,
    generate_video,
    video,
    write_result,
)

from tools.sglang_outputs import reported_input_ids

NEW_TOKENS = 32


def run(tp_size: int, path) -> dict:
    import sglang

    _, converted = checkpoint_dirs()
    timer = Timer()
    engine = sglang.Engine(model_path=str(converted), tp_size=tp_size, **ENGINE_ARGS)
    started = timer()
    out = generate_video(engine, path, NEW_TOKENS)
    engine.shutdown()
    return {
        "start_s": started,
        "total_s": timer(),
        "ids": reported_input_ids(out["meta_info"]),
        "tokens": out["output_ids"],
    }


def main():
    path = video("60s")
    one, two = run(1, path), run(2, path)
    write_result(
        "tp",
        {
            "gpus": torch.cuda.device_count(),
            "device": torch.cuda.get_device_name(0),
            "ids_equal": one["ids"] == two["ids"],
            "tokens_equal": one["tokens"] == two["tokens"],
            "tokens_tp1": one["tokens"],
            "tokens_tp2": two["tokens"],
            "prompt_tokens": len(one["ids"]),
            "tp1_s": (one["start_s"], one["total_s"]),
            "tp2_s": (two["start_s"], two["total_s"]),
        },
    )


if __name__ == "__main__":
    main()
