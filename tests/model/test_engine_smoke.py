"""The real sglang.Engine from the patched tree, on CPU, against transformers.

A tiny random Qwen2 checkpoint and a locally trained byte-level BPE tokenizer are
written to a temp dir (no hub).  The Engine runs in a child process (it spawns its
scheduler and detokenizer), started as this file's ``__main__``; the test kills the
whole process tree if it fails or takes too long.
"""

import json
import sys
import time
from pathlib import Path

import pytest

if __name__ == "__main__":  # the Engine's child process: the project root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.helpers.project import (  # noqa: E402
    BUILD_TREE,
    PROJECT_ROOT,
    SGLANG_VERSION,
    run_in_own_group,
)
from tools.pin import pinned_releases  # noqa: E402

MAX_NEW_TOKENS = 16
PROMPTS = ["hello world, this is a tiny test", "the quick brown fox"]
ENGINE_TIMEOUT_S = 420

# what SGLang (0.5.17, 0.5.23) needs on a CPU host (see docs/design.md, "CPU hosts")
ENGINE_ARGS = dict(
    device="cpu",
    attention_backend="torch_native",
    max_total_tokens=4096,
    dtype="float32",
    random_seed=0,
    log_level="error",
)


def build_tokenizer(directory: Path):
    """A small byte-level BPE (Qwen2-style pre-tokenizer) saved as a fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "hello world, this is a tiny test of the tokenizer",
        "the quick brown fox jumps over the lazy dog",
        "a video language model watches frames and answers questions",
    ] * 20
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    fast.save_pretrained(directory)
    return fast


def build_tiny_qwen2(directory: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    # a plain Qwen2 of its own: tools/checkpoints/tiny.py's TEXT only in shape
    config = Qwen2Config(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():  # larger weights: greedy picks that are far from ties
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def transformers_greedy(model_dir: Path, prompts):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.eval()
    model.generation_config.eos_token_id = None  # never stop early: 16 tokens each
    outputs = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=MAX_NEW_TOKENS,
                pad_token_id=tokenizer.pad_token_id,
            )
        outputs.append(out[0, ids.shape[1] :].tolist())
    return outputs


@pytest.fixture(scope="module")
def tiny_qwen2(tmp_path_factory):
    return build_tiny_qwen2(tmp_path_factory.mktemp("tiny-qwen2"))


def test_engine_matches_transformers_greedy(tiny_qwen2, tmp_path):
    out_file = tmp_path / "engine.json"
    cmd = [sys.executable, __file__, str(tiny_qwen2), str(out_file)]
    start = time.monotonic()
    code, output = run_in_own_group(cmd, ENGINE_TIMEOUT_S)
    if code is None:
        pytest.fail(f"Engine run exceeded {ENGINE_TIMEOUT_S}s:\n{output[-6000:]}")
    assert code == 0, f"Engine run failed:\n{output[-6000:]}"
    result = json.loads(out_file.read_text())

    # the Engine ran from the patched tree, not from some installed sglang
    assert Path(result["sglang_file"]).is_relative_to(BUILD_TREE / "python"), result
    # ... of the release under test (make test PIN=...), one of the pinned ones
    assert result["version"] == SGLANG_VERSION, result
    assert SGLANG_VERSION in pinned_releases(PROJECT_ROOT / "pin.toml")[1]

    expected = transformers_greedy(tiny_qwen2, PROMPTS)
    assert [len(ids) for ids in expected] == [MAX_NEW_TOKENS] * len(PROMPTS)
    assert result["output_ids"] == expected
    print(
        f"engine start {result['start_s']:.1f}s, total {time.monotonic() - start:.1f}s"
    )


def _engine_main(model_dir: str, out_file: str) -> None:
    import inspect

    import sglang

    start = time.monotonic()
    engine = sglang.Engine(model_path=model_dir, **ENGINE_ARGS)
    started = time.monotonic() - start
    try:
        params = {"temperature": 0.0, "max_new_tokens": MAX_NEW_TOKENS}
        params["ignore_eos"] = True
        outs = engine.generate(prompt=PROMPTS, sampling_params=params)
        output_ids = [out["output_ids"] for out in outs]
    finally:
        engine.shutdown()
    Path(out_file).write_text(
        json.dumps(
            {
                "sglang_file": inspect.getfile(sglang),
                "version": sglang.__version__,
                "start_s": started,
                "output_ids": output_ids,
            }
        )
    )


if __name__ == "__main__":
    _engine_main(sys.argv[1], sys.argv[2])
