"""GPU parity: reference implementation vs SGLang on the same random 7B weights.

bf16, a 60-frame video, greedy: the cube boundaries (visible in the prompt
layout), the final input ids, 16 greedy tokens and the first-token
log-probabilities are compared. Writes $OUT/parity.json.
"""

import gc

import torch
from common import (
    ENGINE_ARGS,
    QUESTION,
    Timer,
    checkpoint_dirs,
    generate_video,
    video,
    write_result,
)

from tools.sglang_outputs import as_reported, reported_input_ids

NEW_TOKENS = 16
TOP = 20


def reference_run(original, path):
    from qsv_reference.model import QuicksviewerReference

    timer = Timer()
    ref = QuicksviewerReference(original, dtype=torch.bfloat16, device="cuda")
    loaded = timer()
    run = ref.run_video(path, QUESTION, max_new_tokens=NEW_TOKENS)
    logprobs = torch.log_softmax(run.generation.first_logits.float(), dim=-1).cpu()
    result = {
        "load_s": loaded,
        "run_s": round(timer() - loaded, 3),
        "frames": len(run.frames.timestamps),
        "cube_starts": [s for s, _ in run.cube_bounds],
        "ids": run.expanded_input_ids,
        "tokens": run.tokens[:NEW_TOKENS],
        "logprobs": logprobs,
        "vocab": len(ref.tokenizer),
    }
    del ref, run
    gc.collect()
    torch.cuda.empty_cache()
    return result


def main():
    import sglang

    original, converted = checkpoint_dirs()
    path = video("60s")
    ref = reference_run(original, path)

    timer = Timer()
    engine = sglang.Engine(model_path=str(converted), **ENGINE_ARGS)
    started = timer()
    outs = []
    for _ in range(2):  # the second run hits the radix cache and warm kernels
        t = Timer()
        out = generate_video(engine, path, NEW_TOKENS, top_logprobs_num=TOP)
        outs.append((out, t()))
    engine.shutdown()

    out, _ = outs[0]
    ids = reported_input_ids(out["meta_info"])
    expected = as_reported(ref["ids"], ref["vocab"])
    top = out["meta_info"]["output_top_logprobs"][0]
    diffs = [abs(lp - ref["logprobs"][tok].item()) for lp, tok, _ in top]
    first_mismatch = next(
        (i for i, (a, b) in enumerate(zip(ids, expected)) if a != b), None
    )
    result = {
        "device": torch.cuda.get_device_name(0),
        "frames": ref["frames"],
        "cube_starts_reference": ref["cube_starts"],
        "ids_equal": ids == expected,
        "prompt_tokens": len(ids),
        "first_id_mismatch": first_mismatch,
        "tokens_reference": ref["tokens"],
        "tokens_sglang": out["output_ids"],
        "tokens_equal": out["output_ids"] == ref["tokens"],
        "second_run_tokens_equal": outs[1][0]["output_ids"] == out["output_ids"],
        "second_run_cached_tokens": outs[1][0]["meta_info"].get("cached_tokens"),
        "first_token_top20_max_abs_logprob_diff": max(diffs),
        "first_token_top1_sglang": top[0][1],
        "first_token_top1_reference": int(ref["logprobs"].argmax()),
        "reference_load_s": ref["load_s"],
        "reference_run_s": ref["run_s"],
        "engine_start_s": started,
        "sglang_request_s": [t for _, t in outs],
    }
    write_result("parity", result)


if __name__ == "__main__":
    main()
