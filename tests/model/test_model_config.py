"""How SGLang sees a converted Quicksviewer checkpoint: config, registry, template.

* ``AutoConfig`` (once SGLang registered its configs) and SGLang's own
  ``get_config`` give ``QuicksviewerConfig`` with Qwen2 / SigLIP sub-configs and the
  8 marker ids of the tokenizer;
* ``QuicksviewerForCausalLM`` is a multimodal architecture that keeps chunked
  prefill, and ``ModelConfig`` says multimodal;
* the "quicksviewer" conversation template is matched from the checkpoint and renders
  the original conv_qwen2 prompt for a chat request with a video and a question;
* a wrong checkpoint fails clearly and quickly: an Engine (in a subprocess, so a hang
  is a timeout) on a config whose marker ids disagree with the tokenizer exits
  non-zero with the processor's "do not match" message, and on a checkpoint without
  its safetensors with an error about missing weights.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers.model_fixtures import QUESTION
from tests.helpers.project import PROJECT_ROOT

# the original tokenizer adds the markers in this order on top of Qwen2.5's 151665
# tokens (qsv_reference/constants.py, MARKERS)
MARKER_IDS = {
    "patch_start": 151665,
    "patch_end": 151666,
    "video_start": 151667,
    "video_end": 151668,
    "im_start": 151669,
    "im_end": 151670,
    "thumbnail_start": 151671,
    "thumbnail_end": 151672,
}
ENGINE_TIMEOUT_S = 240


@pytest.fixture(scope="module")
def converted(checkpoints) -> Path:
    return checkpoints.converted("fp32")


def check_config(config, converted: Path) -> None:
    from sglang.srt.configs.quicksviewer import QuicksviewerConfig
    from transformers import AutoTokenizer, Qwen2Config, SiglipVisionConfig

    assert type(config) is QuicksviewerConfig
    assert config.model_type == "quicksviewer"
    assert config.architectures == ["QuicksviewerForCausalLM"]
    assert type(config.text_config) is Qwen2Config
    assert type(config.vision_config) is SiglipVisionConfig
    assert config.text_config.hidden_size == 128
    assert config.vision_config.image_size == 384
    tokenizer = AutoTokenizer.from_pretrained(converted)
    for name, token_id in MARKER_IDS.items():
        assert getattr(config, f"{name}_token_id") == token_id, name
        assert tokenizer.convert_tokens_to_ids(f"<{name}>") == token_id, name
    assert config.marker_token_ids() == MARKER_IDS


def test_autoconfig_gives_quicksviewer_config(converted):
    import sglang.srt.utils.hf_transformers  # noqa: F401 (registers SGLang's configs)
    from transformers import AutoConfig

    check_config(AutoConfig.from_pretrained(converted), converted)


def test_sglang_get_config(converted):
    from sglang.srt.utils.hf_transformers.config import get_config

    config = get_config(str(converted), trust_remote_code=False)
    check_config(config, converted)


def test_architecture_is_multimodal_with_chunked_prefill(converted):
    from sglang.srt.configs import model_config

    assert "QuicksviewerForCausalLM" in model_config.multimodal_model_archs
    assert model_config.is_multimodal_chunked_prefill_supported(
        ["QuicksviewerForCausalLM"]
    )
    # the function is the exclusion list: an excluded architecture is refused
    assert not model_config.is_multimodal_chunked_prefill_supported(
        ["LlavaLlamaForCausalLM"]
    )

    config = model_config.ModelConfig(str(converted))
    assert config.hf_config.architectures == ["QuicksviewerForCausalLM"]
    assert config.is_multimodal
    assert config.is_image_understandable_model
    assert config.is_multimodal_chunked_prefill_supported
    assert not config.is_audio_model
    assert config.hf_text_config is config.hf_config.text_config
    assert config.vocab_size == 151673


def chat_request(content):
    from sglang.srt.entrypoints.openai.protocol import ChatCompletionRequest

    return ChatCompletionRequest(
        model="quicksviewer", messages=[{"role": "user", "content": content}]
    )


def test_conversation_template(converted):
    from sglang.srt.parser.conversation import (
        generate_chat_conv,
        get_conv_template_by_model_path,
    )

    assert get_conv_template_by_model_path(str(converted)) == "quicksviewer"

    url = "/videos/clip.mp4"
    conv = generate_chat_conv(
        chat_request(
            [
                {"type": "video_url", "video_url": {"url": url}},
                {"type": "text", "text": QUESTION},
            ]
        ),
        "quicksviewer",
    )
    # conv_qwen2 of the original: no system turn, the video before the question
    assert conv.get_prompt() == (
        f"<|im_start|>user\n<video>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert conv.video_data == [url]
    assert "<|im_end|>" in conv.stop_str

    conv = generate_chat_conv(
        chat_request(
            [
                {"type": "image_url", "image_url": {"url": "/a.png"}},
                {"type": "image_url", "image_url": {"url": "/b.png"}},
                {"type": "text", "text": "Compare them."},
            ]
        ),
        "quicksviewer",
    )
    assert conv.get_prompt() == (
        "<|im_start|>user\n<image>\n<image>\nCompare them.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert conv.image_data and len(conv.image_data) == 2

    conv = generate_chat_conv(chat_request("Hello"), "quicksviewer")
    assert (
        conv.get_prompt()
        == "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )


ENGINE_SCRIPT = """
import sys

import sglang

if __name__ == "__main__":
    engine = sglang.Engine(
        model_path=sys.argv[1],
        device="cpu",
        attention_backend="torch_native",
        mm_attention_backend="sdpa",
        dtype="float32",
        max_total_tokens=16384,
        log_level="error",
    )
    engine.shutdown()
    print("ENGINE STARTED")
"""


def copy_checkpoint(src: Path, dst: Path, weights: bool) -> Path:
    """Copy ``src`` (weights as symlinks, or none at all)."""
    dst.mkdir()
    for item in src.iterdir():
        if item.suffix == ".safetensors":
            if weights:
                (dst / item.name).symlink_to(item)
        elif item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy(item, dst / item.name)
    return dst


def start_engines(script: Path, models: dict[str, Path], log_dir: Path) -> dict:
    """Start one Engine per model at once (2 cores: they overlap), each in its own
    process group; wait for all, killing any that outlives the timeout."""
    procs = {}
    for name, model in models.items():
        log = open(log_dir / f"{name}.log", "wb")
        procs[name] = (
            subprocess.Popen(
                [sys.executable, str(script), str(model)],
                cwd=PROJECT_ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            ),
            log,
        )
    deadline = time.monotonic() + ENGINE_TIMEOUT_S
    results = {}
    try:
        for name, (proc, log) in procs.items():
            try:
                code = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                code = None  # a hang
            results[name] = (
                code,
                (log_dir / f"{name}.log").read_text(errors="replace"),
            )
    finally:
        for proc, log in procs.values():
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
            log.close()
    return results


def test_wrong_checkpoints_fail_clearly(converted, tmp_path):
    mismatch = copy_checkpoint(converted, tmp_path / "mismatch", weights=True)
    config = json.loads((mismatch / "config.json").read_text())
    config["im_start_token_id"], config["im_end_token_id"] = (
        config["im_end_token_id"],
        config["im_start_token_id"],
    )
    (mismatch / "config.json").write_text(json.dumps(config, indent=2))

    no_weights = copy_checkpoint(converted, tmp_path / "no_weights", weights=False)
    assert not list(no_weights.glob("*.safetensors"))

    script = tmp_path / "start_engine.py"
    script.write_text(ENGINE_SCRIPT)
    results = start_engines(
        script, {"mismatch": mismatch, "no_weights": no_weights}, tmp_path
    )

    code, log = results["mismatch"]
    tail = f"exit code {code}, log tail:\n{log[-4000:]}"
    assert code is not None, f"Engine hung on mismatched marker ids: {tail}"
    assert code != 0 and "ENGINE STARTED" not in log, tail
    assert (
        "config says <im_start> is token 151670, the tokenizer says 151669" in log
    ), tail
    assert "the checkpoint's config and tokenizer do not match" in log, tail

    code, log = results["no_weights"]
    tail = f"exit code {code}, log tail:\n{log[-4000:]}"
    assert code is not None, f"Engine hung without weights: {tail}"
    assert code != 0 and "ENGINE STARTED" not in log, tail
    assert f"Cannot find any model weights with `{no_weights}`" in log, tail
