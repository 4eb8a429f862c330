"""Checkpoints other than the released one, served like the original serves them.

* A tokenizer that is not Qwen's: a byte-level BPE trained here (a BOS that the
  tokenizer prepends, Llama-3's turn tokens, the 8 markers at ids 1024..1031
  instead of Qwen's 151665..151672), for the Qwen2 language model and for the
  Llama-3.1 variant.
* The Llama-3.1 variant (``quicksviewer_llama``): SGLang's own LlamaForCausalLM,
  the original's ``llama_3_chat`` template (through the HTTP server's chat
  completions), video and image parity with the reference: prompt ids, greedy ids.
* Every configuration key the original's prompt and preprocessing code reads is
  honoured: thumbnail on/off, the four start/end marker flags, image_aspect_ratio
  "anyres" or a plain resize. For each, the final prompt layout SGLang builds
  (processor + pad_input_ids, cubes included) equals the reference's.
* Values the port does not implement are refused by the converter with the key,
  the value and what is supported.
* Weight layouts: single and sharded safetensors, single and sharded PyTorch .bin,
  and the original's base-plus-projector layout (``--model-base``: a stage folder with
  ``mm_projector.bin`` on top of a base LLM).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers.http_server import start_server
from tests.helpers.model_fixtures import QUESTION, engine_kwargs, run_script
from tools.sglang_outputs import as_reported, reported_input_ids

NEW_TOKENS = 12
IMAGE_QUESTION = "What is in the image?"
SENTINEL = -200


def derive(src: Path, dst: Path, **config) -> Path:
    """A copy of an original checkpoint (weights hard-linked) with config keys
    changed (None deletes the key)."""
    if dst.exists():
        return dst
    shutil.copytree(src, dst, copy_function=os.link)
    path = dst / "config.json"
    values = json.loads(path.read_text())
    path.unlink()  # a hard link: do not write through it
    for key, value in config.items():
        if value is None:
            values.pop(key, None)
        else:
            values[key] = value
    path.write_text(json.dumps(values, indent=2))
    return dst


class Variants:
    """Tiny original-format checkpoints (fp32) and their conversions, by name."""

    def __init__(self, root: Path):
        self.root = root

    @functools.cache
    def original(self, name: str) -> Path:
        from tools.checkpoints.tiny import make_tiny_checkpoint

        variant, tokenizer = {"llama": ("llama", "bpe"), "qwen-bpe": ("qwen", "bpe")}[
            name
        ]
        return make_tiny_checkpoint(
            self.root / name, seed=3, dtype="fp32", variant=variant, tokenizer=tokenizer
        )

    @functools.cache
    def converted(self, original: Path) -> Path:
        from tools.checkpoints.convert import convert_checkpoint

        dst = original.with_name(original.name + "-converted")
        convert_checkpoint(original, dst, log=lambda _: None)
        return dst

    @functools.cache
    def reference(self, original: Path):
        from qsv_reference.model import QuicksviewerReference

        return QuicksviewerReference(original, dtype=torch.float32)


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> Variants:
    return Variants(tmp_path_factory.mktemp("variants"))


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    directory = tmp_path_factory.mktemp("images")
    rng = np.random.RandomState(5)
    paths = []
    for i, (w, h) in enumerate([(320, 240), (200, 700)]):
        path = directory / f"image{i}.png"
        Image.fromarray((rng.rand(h, w, 3) * 255).astype("uint8")).save(path)
        paths.append(path)
    return paths


def test_the_bpe_tokenizer_is_not_qwens(variants):
    """The premise of the tests below: other ids, a BOS, no Qwen pad tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(variants.original("qwen-bpe")))
    assert tokenizer.convert_tokens_to_ids("<patch_start>") == 1024
    assert tokenizer.convert_tokens_to_ids("<thumbnail_end>") == 1031
    assert tokenizer("x").input_ids[0] == tokenizer.bos_token_id
    for qwen_token in ("<|image_pad|>", "<|video_pad|>", "<|im_start|>"):
        assert tokenizer.convert_tokens_to_ids(qwen_token) in (
            None,
            tokenizer.unk_token_id,
        )


# --------------------------------------------------------------- Engine parity
@pytest.fixture
def qwen_bpe_engine(variants, engine_slot):
    import sglang

    path = variants.converted(variants.original("qwen-bpe"))
    return engine_slot.get(
        ("qwen-bpe", path), lambda: sglang.Engine(**engine_kwargs(path, "fp32"))
    )


def check_generation(out: dict, run, vocab_size: int) -> None:
    assert reported_input_ids(out["meta_info"]) == as_reported(
        run.expanded_input_ids, vocab_size
    )
    assert out["output_ids"] == run.tokens[:NEW_TOKENS]


def test_non_qwen_tokenizer_video_matches_reference(qwen_bpe_engine, variants, videos):
    reference = variants.reference(variants.original("qwen-bpe"))
    run = reference.run_video(videos["12s_30fps"], QUESTION, NEW_TOKENS)
    out = qwen_bpe_engine.generate(
        prompt=reference.template.prompt("<video>\n" + QUESTION),
        video_data=[str(videos["12s_30fps"])],
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
        return_logprob=True,
        logprob_start_len=0,
    )
    # the BOS once, first: the original's tokenizer_image_token
    assert run.expanded_input_ids[0] == reference.tokenizer.bos_token_id
    check_generation(out, run, len(reference.tokenizer))


def test_non_qwen_tokenizer_images_match_reference(qwen_bpe_engine, variants, images):
    reference = variants.reference(variants.original("qwen-bpe"))
    run = reference.run_images(images, IMAGE_QUESTION, NEW_TOKENS)
    out = qwen_bpe_engine.generate(
        prompt=reference.template.prompt("<image>\n<image>\n" + IMAGE_QUESTION),
        image_data=[str(p) for p in images],
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
        return_logprob=True,
        logprob_start_len=0,
    )
    check_generation(out, run, len(reference.tokenizer))


# ------------------------------------------------- the Llama variant over HTTP
@pytest.fixture
def llama_server(variants, tmp_path_factory, engine_slot):
    """In the engine slot too: an Engine's shutdown would kill it."""
    model = variants.converted(variants.original("llama"))

    def start():
        return start_server(
            model, tmp_path_factory.mktemp("llama-server") / "server.log"
        )

    return engine_slot.get(("llama-server", model), start, lambda s: s.stop())


def test_llama_variant_chat_template_is_llama_3_chat(llama_server, variants):
    """The server picks the original's llama_3_chat prompt for a Llama checkpoint:
    its /generate reports the same ids as the chat route builds."""
    reference = variants.reference(variants.original("llama"))
    expected = reference.template.prompt(QUESTION)
    assert expected == (
        "<|start_header_id|>user<|end_header_id|>\n\n"
        + QUESTION
        + "<|eot_id|><|start_header_id|>system<|end_header_id|>\n\n"
    )
    body = llama_server.ok(
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": [{"role": "user", "content": QUESTION}],
            "max_tokens": NEW_TOKENS,
            "temperature": 0,
        },
    )
    ids = reference.tokenizer(expected).input_ids
    assert body["usage"]["prompt_tokens"] == len(ids)


@pytest.mark.parametrize("media", ["video", "images"])
def test_llama_variant_matches_reference(media, llama_server, variants, videos, images):
    reference = variants.reference(variants.original("llama"))
    if media == "video":
        run = reference.run_video(videos["12s_30fps"], QUESTION, NEW_TOKENS)
        parts = [{"type": "video_url", "video_url": {"url": str(videos["12s_30fps"])}}]
        question = QUESTION
    else:
        run = reference.run_images(images, IMAGE_QUESTION, NEW_TOKENS)
        parts = [{"type": "image_url", "image_url": {"url": str(p)}} for p in images]
        question = IMAGE_QUESTION
    body = llama_server.ok(
        "/v1/chat/completions",
        {
            "model": "default",
            "messages": [
                {
                    "role": "user",
                    "content": parts + [{"type": "text", "text": question}],
                }
            ],
            "max_tokens": NEW_TOKENS,
            "temperature": 0,
        },
    )
    assert body["usage"]["prompt_tokens"] == len(run.expanded_input_ids)
    expected = reference.tokenizer.decode(run.tokens[:NEW_TOKENS])
    assert body["choices"][0]["message"]["content"] == expected.strip() or (
        body["choices"][0]["message"]["content"] == expected
    )
    # the same request through /generate: the ids themselves
    out = llama_server.ok(
        "/generate",
        {
            "text": reference.template.prompt(
                ("<video>\n" if media == "video" else "<image>\n<image>\n") + question
            ),
            ("video_data" if media == "video" else "image_data"): [
                str(p) for p in ([videos["12s_30fps"]] if media == "video" else images)
            ],
            "sampling_params": {"temperature": 0, "max_new_tokens": NEW_TOKENS},
            "return_logprob": True,
            "logprob_start_len": 0,
        },
    )
    check_generation(out, run, len(reference.tokenizer))


# ------------------------------------------------------ configuration keys
# key changes of the released config -> what the original then does differently
FLAGS = {
    "released": {},
    "no_thumbnail": {"mm_use_thumbnail": False},
    "bare_thumbnail": {"mm_use_thumbnail_start_end": False},
    "no_video_markers": {"mm_use_video_start_end": False},
    "no_im_markers": {"mm_use_im_start_end": False},
    "no_patch_markers": {"mm_use_patch_start_end": False},
    "square_images": {"image_aspect_ratio": "square"},
    "no_aspect_ratio": {"image_aspect_ratio": None, "image_grid_pinpoints": None},
}


def test_every_honoured_key_gives_the_reference_layout(
    variants, videos, images, tmp_path
):
    """Processor + pad_input_ids (cubing included) for each flag, on the Llama
    variant with the BOS tokenizer: the final ids are the reference's."""
    jobs, expected = [], []
    base = variants.original("llama")
    for name, change in FLAGS.items():
        original = derive(base, base.with_name(f"llama-{name}"), **change)
        reference = variants.reference(original)
        video = reference.run_video(videos["12s_30fps"], QUESTION, max_new_tokens=1)
        image = reference.run_images(images, IMAGE_QUESTION, max_new_tokens=1)
        converted = str(variants.converted(original))
        prompts = {
            "video": reference.template.prompt("<video>\n" + QUESTION),
            "images": reference.template.prompt("<image>\n<image>\n" + IMAGE_QUESTION),
        }
        jobs.append(
            {
                "ckpt": converted,
                "dtype": "fp32",
                "prompt": prompts["video"],
                "videos": [str(videos["12s_30fps"])],
            }
        )
        jobs.append(
            {
                "ckpt": converted,
                "dtype": "fp32",
                "prompt": prompts["images"],
                "images": [str(p) for p in images],
            }
        )
        expected += [(name, "video", video), (name, "images", image)]
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    run_script("sglang_layout.py", jobs_file, tmp_path / "layouts.pt")
    layouts = torch.load(tmp_path / "layouts.pt", weights_only=False)
    seen = {}
    for (name, media, run), got in zip(expected, layouts):
        assert got["input_ids"] == run.expanded_input_ids, (name, media)
        seen[(name, media)] = len(run.expanded_input_ids)
    # each key changes the layout (the test would not notice an ignored key)
    for name in FLAGS:
        if name == "released":
            continue
        media = "video" if "thumbnail" in name or "video" in name else "images"
        assert seen[(name, media)] != seen[("released", media)], name


REFUSED = [
    ({"image_aspect_ratio": "pad"}, "image_aspect_ratio='pad'"),
    ({"image_aspect_ratio": "highres"}, "image_aspect_ratio='highres'"),
    ({"image_aspect_ratio": "crop_split"}, "image_aspect_ratio='crop_split'"),
    ({"mm_resampler_type": "spatial_pool"}, "mm_resampler_type='spatial_pool'"),
    ({"mm_projector_type": "mlp2x_gelu"}, "mm_projector_type='mlp2x_gelu'"),
    ({"mm_patch_merge_type": "spatial_unpad"}, "mm_patch_merge_type='spatial_unpad'"),
    ({"mm_cubing": "identity"}, "mm_cubing='identity'"),
    ({"is_cubing": False}, "is_cubing=False"),
    ({"cubing_vit_forward_n_layers": 12}, "cubing_vit_forward_n_layers=12"),
    ({"pretraining_tp": 2}, "pretraining_tp=2"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"model_type": "quicksviewer_mistral"}, "'quicksviewer_mistral'"),
]


@pytest.mark.parametrize("change, named", REFUSED, ids=[n for _, n in REFUSED])
def test_unsupported_values_are_refused_with_the_key(change, named, variants, tmp_path):
    from tools.checkpoints.convert import ConvertError, convert_checkpoint

    base = variants.original("llama")
    original = derive(base, tmp_path / "refused", **change)
    with pytest.raises(ConvertError) as error:
        convert_checkpoint(original, tmp_path / "out", log=lambda _: None)
    message = str(error.value)
    assert named in message, message
    assert "implemented" in message or "expected" in message or "supported" in message
    assert not (tmp_path / "out" / "config.json").exists()


def test_converted_config_keeps_only_what_the_code_reads(variants):
    config = json.loads(
        (variants.converted(variants.original("llama")) / "config.json").read_text()
    )
    assert "resampler_max_size" not in config
    assert config["text_config"]["model_type"] == "llama"
    assert config["text_config"]["rope_scaling"]["rope_type"] == "llama3"
    assert config["image_aspect_ratio"] == "anyres"


# ------------------------------------------------------------ weight layouts
def relayout(src: Path, dst: Path, layout: str) -> Path:
    """The same checkpoint saved as one safetensors file or as PyTorch .bin files."""
    from safetensors.torch import save_file

    from qsv_reference.checkpoint import load_state_dict

    state = load_state_dict(src)
    shutil.copytree(
        src,
        dst,
        ignore=shutil.ignore_patterns("model-*.safetensors", "model.safetensors.*"),
    )
    if layout == "safetensors":
        save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})
    elif layout == "bin":
        torch.save(state, dst / "pytorch_model.bin")
    else:  # two .bin shards + index
        names = sorted(state)
        shards = {"pytorch_model-00001-of-00002.bin": names[::2]}
        shards["pytorch_model-00002-of-00002.bin"] = names[1::2]
        weight_map = {}
        for filename, part in shards.items():
            torch.save({n: state[n] for n in part}, dst / filename)
            weight_map.update({n: filename for n in part})
        (dst / "pytorch_model.bin.index.json").write_text(
            json.dumps({"metadata": {}, "weight_map": weight_map})
        )
    return dst


@pytest.mark.parametrize("layout", ["safetensors", "bin", "bin-sharded"])
def test_weight_layouts_convert_and_load_the_same_weights(layout, variants, tmp_path):
    from qsv_reference.checkpoint import load_state_dict, weight_files

    base = variants.original("qwen-bpe")
    original = relayout(base, tmp_path / layout, layout)
    converted = variants.converted(original)
    expected = load_state_dict(base)
    got = load_state_dict(converted)
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    names = {p.name for p in weight_files(converted)}
    assert any(n.endswith(".safetensors") for n in names) == (layout == "safetensors")


def test_bin_weights_serve_the_same_tokens(
    qwen_bpe_engine, variants, videos, tmp_path, engine_slot
):
    """SGLang's own loader reads the .bin layout (weights_only) to the same model."""
    import sglang

    original = relayout(variants.original("qwen-bpe"), tmp_path / "bin", "bin")
    request = dict(
        prompt=variants.reference(original).template.prompt("<video>\n" + QUESTION),
        video_data=[str(videos["12s_30fps"])],
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
    )
    expected = qwen_bpe_engine.generate(**request)["output_ids"]
    path = variants.converted(original)
    engine = engine_slot.get(
        ("bin", path), lambda: sglang.Engine(**engine_kwargs(path, "fp32"))
    )
    assert engine.generate(**request)["output_ids"] == expected


def test_adapter_only_checkpoint_is_refused_with_the_reason(variants, tmp_path):
    """The original's model_base layout (config + mm_projector.bin) is named."""
    from tools.checkpoints.convert import ConvertError, convert_checkpoint

    base = variants.original("qwen-bpe")
    adapter = tmp_path / "adapter"
    shutil.copytree(
        base,
        adapter,
        ignore=shutil.ignore_patterns("model-*.safetensors", "model.safetensors.*"),
    )
    torch.save(
        {"model.vision_resampler.query": torch.zeros(1)}, adapter / "mm_projector.bin"
    )
    with pytest.raises(ConvertError, match="holds only mm_projector.bin.*--model-base"):
        convert_checkpoint(adapter, tmp_path / "out", log=lambda _: None)


# ----------------------------------------------- the base-plus-projector layout
@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    """(stage, base, converted) of the tiny model_base layout, and the reference
    that loads the stage folder on top of the base like the original's builder."""
    from qsv_reference.model import QuicksviewerReference
    from tools.checkpoints.convert import convert_checkpoint
    from tools.checkpoints.tiny import make_tiny_model_base

    root = tmp_path_factory.mktemp("model-base")
    stage, base = make_tiny_model_base(root, seed=4)
    converted = root / "converted"
    convert_checkpoint(stage, converted, log=lambda _: None, model_base=base)
    reference = QuicksviewerReference(stage, dtype=torch.float32, model_base=base)
    return stage, base, converted, reference


@pytest.mark.parametrize("embed_tokens", [False, True])
def test_model_base_merge_builds_the_originals_weights(embed_tokens, tmp_path):
    """builder.py:43-69 for the Llama variant: the base's tokenizer and LLM in bf16,
    [PAD] then the markers added with mean rows (input and output embeddings),
    mm_projector.bin on top, the tower from mm_vision_tower."""
    from qsv_reference.checkpoint import MARKERS, load_state_dict, merge_model_base
    from tools.checkpoints.tiny import make_tiny_model_base

    stage, base = make_tiny_model_base(tmp_path, seed=4, embed_tokens=embed_tokens)
    merged = merge_model_base(stage, base, stage / "siglip-tiny")
    tokenizer = merged.tokenizer
    assert tokenizer.pad_token == "[PAD]" and tokenizer.pad_token_id == 1024
    ids = [tokenizer.convert_tokens_to_ids(m) for m in MARKERS.values()]
    assert ids == list(range(1025, 1033))
    assert (merged.config["vocab_size"], merged.config["pad_token_id"]) == (1033, 1024)
    llm = {k: v.bfloat16() for k, v in load_state_dict(base).items()}
    adapter = torch.load(stage / "mm_projector.bin", weights_only=True)
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        got, old = merged.state[name], llm[name]
        assert got.dtype == torch.bfloat16 and got.shape == (1033, 128)
        if name in adapter:
            assert torch.equal(got, adapter[name].bfloat16())
            continue
        pad = old.mean(0)
        assert torch.equal(got[:1024], old) and torch.equal(got[1024], pad)
        markers = torch.cat([old, pad[None]]).mean(0)
        assert all(torch.equal(row, markers) for row in got[1025:])
    for name, tensor in adapter.items():
        assert torch.equal(merged.state[name], tensor.bfloat16())
    tower = load_state_dict(stage / "siglip-tiny")
    for name, tensor in tower.items():
        tower_name = "model.vision_tower.vision_tower." + name
        assert torch.equal(merged.state[tower_name], tensor.bfloat16())
    assert len(merged.state) == len(llm) + len(adapter) - embed_tokens + len(tower)


def test_model_base_converts_to_the_merged_layout(model_base):
    stage, base, converted, reference = model_base
    config = json.loads((converted / "config.json").read_text())
    assert config["quicksviewer_conversion"]["model_base"] == str(base)
    assert config["vocab_size"] == len(reference.tokenizer) == 1033
    assert config["pad_token_id"] == 1024 and config["im_start_token_id"] == 1029
    assert (converted / "config.original.json").read_bytes() == (
        stage / "config.json"
    ).read_bytes()
    assert not [p for p in converted.iterdir() if p.name.startswith(".")]


@pytest.fixture
def model_base_engine(model_base, engine_slot):
    import sglang

    path = model_base[2]
    return engine_slot.get(
        ("model-base", path), lambda: sglang.Engine(**engine_kwargs(path, "fp32"))
    )


@pytest.mark.parametrize("media", ["video", "images"])
def test_model_base_serves_the_reference_tokens(
    media, model_base, model_base_engine, videos, images
):
    """The converted folder in the real Engine: prompt ids and greedy tokens equal
    the reference's on the same layout."""
    reference = model_base[3]
    if media == "video":
        run = reference.run_video(videos["12s_30fps"], QUESTION, NEW_TOKENS)
        data = {"video_data": [str(videos["12s_30fps"])]}
        text = "<video>\n" + QUESTION
    else:
        run = reference.run_images(images, IMAGE_QUESTION, NEW_TOKENS)
        data = {"image_data": [str(p) for p in images]}
        text = "<image>\n<image>\n" + IMAGE_QUESTION
    out = model_base_engine.generate(
        prompt=reference.template.prompt(text),
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
        return_logprob=True,
        logprob_start_len=0,
        **data,
    )
    check_generation(out, run, len(reference.tokenizer))


def _break_projector(stage: Path, change) -> None:
    path = stage / "mm_projector.bin"
    adapter = torch.load(path, weights_only=True)
    change(adapter)
    path.unlink()
    torch.save(adapter, path)


MODEL_BASE_REFUSED = {
    "qwen": ("config", {"model_type": "quicksviewer_qwen"}, "LlavaLlamaForCausalLM"),
    "no_projector": ("unlink", "mm_projector.bin", "has no mm_projector.bin"),
    "unknown_key": (
        "projector",
        lambda a: a.update({"model.vlm_att.weight": torch.zeros(1)}),
        "unknown tensors ['model.vlm_att.weight']",
    ),
    "no_cubing": (
        "projector",
        lambda a: [a.pop(k) for k in list(a) if k.startswith("model.cubing.")],
        "no ['model.cubing.']",
    ),
    "embed_shape": (
        "projector",
        lambda a: a.update({"model.embed_tokens.weight": torch.zeros(7, 128)}),
        "model.embed_tokens.weight is (7, 128)",
    ),
    "base_rows": ("base_tokenizer", None, "1024 rows, its tokenizer 1025 tokens"),
    "no_pad_id": ("config", {"pad_token_id": None}, "lacks ['pad_token_id']"),
    "no_base": ("base", None, "is not a directory"),
}


@pytest.mark.parametrize("case", MODEL_BASE_REFUSED)
def test_model_base_errors_name_the_bad_piece(case, tmp_path):
    from tools.checkpoints.convert import ConvertError, convert_checkpoint
    from tools.checkpoints.tiny import make_tiny_model_base

    stage, base = make_tiny_model_base(tmp_path, seed=4)
    how, what, message = MODEL_BASE_REFUSED[case]
    if how == "config":
        derive(stage, tmp_path / "derived", **what)
        shutil.rmtree(stage)
        (tmp_path / "derived").rename(stage)
    elif how == "unlink":
        (stage / what).unlink()
    elif how == "projector":
        _break_projector(stage, what)
    elif how == "base_tokenizer":  # a token more than the base's embedding rows
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(base))
        tokenizer.add_tokens(["<extra>"])
        tokenizer.save_pretrained(str(base))
    else:
        base = tmp_path / "missing"
    with pytest.raises(ConvertError) as error:
        convert_checkpoint(stage, tmp_path / "out", log=lambda _: None, model_base=base)
    assert message in str(error.value)
    assert not (tmp_path / "out" / "config.json").exists()


def test_model_base_cli(tmp_path):
    """``python -m tools convert STAGE DST --model-base BASE``; without it the stage
    folder is refused with the option named."""
    from tests.helpers.project import run_tools
    from tools.checkpoints.tiny import make_tiny_model_base

    stage, base = make_tiny_model_base(tmp_path, seed=4)
    refused = run_tools("convert", stage, tmp_path / "out", check=2)
    assert "--model-base" in refused.stderr
    run_tools("convert", stage, tmp_path / "out", "--model-base", base, check=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()
