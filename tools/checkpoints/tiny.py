"""Seeded tiny random Quicksviewer checkpoints in the ORIGINAL on-disk format.

The directory looks like a stage-3 training output of the original code base
(``LlavaQwenForCausalLM.save_pretrained`` + the slow-tokenizer save), scaled down:

* ``config.json``: ``model_type: quicksviewer_qwen``, ``architectures:
  ["LlavaQwenForCausalLM"]``, the Qwen2 keys of a tiny LLM (hidden 128, 2 layers, 4
  heads, 2 KV heads, intermediate 256, vocab 151673 = len(tokenizer)) and every key
  the original inference path reads (see ``original_config``), with the values of the
  released training scripts (stage3.sh / train/args.py);
* ``model-0000{1,2}-of-00002.safetensors`` + index, under the ORIGINAL key names:
  ``model.vision_tower.vision_tower.vision_model.*`` (incl. ``post_layernorm`` and
  the MAP ``head``, which inference never uses), ``model.vision_resampler.*``
  (``proj`` is a bare parameter used as ``x @ proj``), ``model.cubing.*``, the
  Qwen2 keys and ``lm_head``;
* the tokenizer of tools/checkpoints/tokenizer.py (Qwen2.5 + the 8 markers, built
  once into the cache directory and copied);
* ``siglip-tiny/``: the SigLIP directory ``mm_vision_tower`` points to (relative to
  the checkpoint), a SigLIP-so400m-shaped tower (384 px, patch 14 -> 27 x 27 = 729
  patches) scaled to hidden 64, 2 layers, 2 heads, with so400m's
  ``preprocessor_config.json`` and its OWN "pretrained" weights (another seed), since
  the original loads the tower from there and then overwrites it with the fine-tuned
  weights stored in the checkpoint;
* ``generation_config.json``: Qwen2.5-7B-Instruct's sampling defaults (do_sample,
  temperature 0.7, top_p 0.8, top_k 20, repetition_penalty 1.05), which a checkpoint
  trained from Qwen2.5-7B-Instruct with the HF Trainer carries. ``chat()`` passes no
  sampling arguments, so the original samples with these; parity tests must force
  greedy decoding on both sides, and keeping the file exercises exactly that.

Sizes are chosen so the original code handles them exactly: the resampler width (=
LLM hidden 128) is a multiple of 16 as the 3D sin-cos table needs (32 time + 48 row
+ 48 col channels) and ``num_heads: 2`` is written explicitly like the released
config (the original falls back to ``hidden // 128`` only when it is absent).

Weights are Gaussian with fan-in scaling so activations stay O(1) in bf16. The cubing
head's last layer is scaled so that the boundary logits ``z1 - z0`` of moving videos
spread over a few units: ``softmax(z / 0.5)[..., 1]`` then covers (0, 1) and the top-k
cut rarely meets a bf16 tie. The LLM embeddings have unit scale so the greedy tokens
follow the context instead of collapsing into one repeated token.

The rows of ``lm_head`` get log-normal scales (``LM_HEAD_ROW_SCALE``). With plain
Gaussian rows the logits over 151,673 tokens are nearly flat: in bf16 (whose logits
are quantised to 2^-8 of their size) the top two are often one ulp apart, and any
kernel difference between two correct implementations flips the greedy choice.
Heavy-tailed row norms spread the top of the distribution (as trained LMs do) so
greedy decoding compares implementations, not rounding.

CLI: ``python -m tools tiny --out DIR --seed N [--dtype bf16|fp32]`` (``make tiny``).
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from qsv_reference.constants import FEATURE_GRID, MARKERS
from tools.checkpoints.convert import so400m_preprocessor
from tools.checkpoints.tokenizer import (
    TOKENIZER_FILES,
    TokenizerBuildError,
    build_bpe_tokenizer,
    cached_quicksviewer_tokenizer,
)

TOWER_DIRNAME = "siglip-tiny"  # of the tiny shape
TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
RESAMPLER_PREFIX = "model.vision_resampler."
CUBING_PREFIX = "model.cubing."

# The candidate resolutions string of train/args.py, stored verbatim in the config.
IMAGE_GRID_PINPOINTS = (
    "[(224, 448), (224, 672), (224, 896), (448, 448), (448, 224), (672, 224), "
    "(896, 224)]"
)

# TEXT and VISION alike only in shape (config tables): the LM's and the tower's sizes
TEXT = dict(
    hidden_size=128,
    intermediate_size=256,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=32768,
    rope_theta=1000000.0,
    rms_norm_eps=1e-06,
)
VISION = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    image_size=384,
    patch_size=14,
    num_channels=3,
    hidden_act="gelu_pytorch_tanh",
    layer_norm_eps=1e-06,
    attention_dropout=0.0,
)
NUM_QUERIES = 64
RESAMPLER_HEADS = 2
RESAMPLER_MAX_SIZE = [300, FEATURE_GRID, FEATURE_GRID]


@dataclass(frozen=True)
class Shape:
    """Sizes of a generated checkpoint."""

    text: dict
    vision: dict
    resampler_heads: int
    tower_dirname: str


# The tiny default, and the released model's shapes (Qwen2.5-7B, SigLIP-so400m,
# 28 resampler heads) for GPU runs with random weights.
SHAPES = {
    "tiny": Shape(TEXT, VISION, RESAMPLER_HEADS, "siglip-tiny"),
    "7b": Shape(
        dict(
            TEXT,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        ),
        dict(
            VISION,
            hidden_size=1152,
            intermediate_size=4304,
            num_hidden_layers=27,
            num_attention_heads=16,
        ),
        28,
        "siglip-so400m-patch14-384",
    ),
}


# Std of the cubing head's output layer (see the module docstring).
CUBING_LOGIT_SCALE = 4.0
# Log-normal sigma of the lm_head row scales (see the module docstring).
LM_HEAD_ROW_SCALE = 0.6

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def tower_config(shape: Shape = SHAPES["tiny"]) -> dict:
    """The ``config.json`` of the SigLIP directory (a SiglipVisionConfig)."""
    return {
        "architectures": ["SiglipVisionModel"],
        "model_type": "siglip_vision_model",
        **shape.vision,
        "torch_dtype": "float32",
        "transformers_version": "4.44.0",
    }


def original_config(
    tokenizer,
    vocab_size: int,
    dtype: str,
    shape: Shape = SHAPES["tiny"],
    variant: str = "qwen",
) -> dict:
    """The checkpoint ``config.json`` as the original training run would save it.

    Keys read at inference: mm_vision_tower, mm_resampler_type, num_queries, num_heads,
    max_size (resampler), mm_projector_type, mm_cubing, mm_use_thumbnail,
    cubing_vit_forward_n_layers, is_cubing, mm_patch_merge_type, image_aspect_ratio,
    image_grid_pinpoints, mm_use_{im,patch,video,thumbnail}_start_end, pad_token_id.
    The rest is written by the original but ignored at inference (mm_vision_select_*,
    kv_dim, embed_dim, adaptive, use_mm_proj, cubing_type, tune/freeze flags, ...).
    Token ids come from the tokenizer. ``variant`` "llama" gives the Llama-3.1
    variant (``quicksviewer_llama``, ``LlavaLlamaForCausalLM``, Llama-3.1's keys).
    """
    hidden = shape.text["hidden_size"]
    bos = tokenizer.bos_token_id
    if bos is None:  # Qwen2.5: no BOS, config.json names <|endoftext|>
        bos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "quicksviewer_qwen",
        "adaptive": True,
        "attention_dropout": 0.0,
        "bos_token_id": bos,
        "cubing_type": "momentum",
        "cubing_vit_forward_n_layers": -1,
        "embed_dim": hidden,
        "eos_token_id": tokenizer.eos_token_id,
        "freeze_mm_adapter": False,
        "hidden_act": "silu",
        "image_aspect_ratio": "anyres",
        "image_grid_pinpoints": IMAGE_GRID_PINPOINTS,
        "initializer_range": 0.02,
        "is_cubing": True,
        "kv_dim": shape.vision["hidden_size"],
        "max_size": RESAMPLER_MAX_SIZE,
        "max_window_layers": shape.text["num_hidden_layers"],
        "mm_cubing": "momentum",
        "mm_hidden_size": hidden,
        "mm_patch_merge_type": "flat",
        "mm_projector_type": "identity",
        "mm_resampler_type": "qformer",
        "mm_use_im_start_end": True,
        "mm_use_patch_start_end": True,
        "mm_use_thumbnail": True,
        "mm_use_thumbnail_start_end": True,
        "mm_use_video_start_end": True,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": -2,
        "mm_vision_tower": shape.tower_dirname,
        "num_heads": shape.resampler_heads,
        "num_queries": NUM_QUERIES,
        "pad_token_id": tokenizer.pad_token_id,
        "patchify_video_feature": False,
        "rope_scaling": None,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": {"bf16": "bfloat16", "fp32": "float32"}[dtype],
        "transformers_version": "4.44.0",
        "tune_mm_adapter": True,
        "use_cache": True,
        "use_mm_proj": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        **shape.text,
    }
    if variant == "llama":
        for key in ("max_window_layers", "sliding_window", "use_sliding_window"):
            del config[key]
        config.update(LLAMA_KEYS)
    elif variant != "qwen":
        raise ValueError(f"variant must be 'qwen' or 'llama', not {variant!r}")
    return config


# What a Llama-3.1 based checkpoint has instead of Qwen2's keys (Llama-3.1-8B's
# config.json: llama3 rope scaling, no biases).
LLAMA_KEYS = {
    "architectures": ["LlavaLlamaForCausalLM"],
    "model_type": "quicksviewer_llama",
    "attention_bias": False,
    "mlp_bias": False,
    "pretraining_tp": 1,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rms_norm_eps": 1e-05,
}


def generation_config(tokenizer) -> dict:
    """Qwen2.5-7B-Instruct's ``generation_config.json`` (ids from the tokenizer; a
    tokenizer without Qwen's <|endoftext|> gets its own BOS and EOS)."""
    endoftext = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if endoftext is None or endoftext == tokenizer.unk_token_id:
        bos, eos = tokenizer.bos_token_id, [tokenizer.eos_token_id]
    else:
        bos, eos = endoftext, [tokenizer.eos_token_id, endoftext]
    return {
        "bos_token_id": bos,
        "pad_token_id": tokenizer.pad_token_id,
        "do_sample": True,
        "eos_token_id": eos,
        "repetition_penalty": 1.05,
        "temperature": 0.7,
        "top_p": 0.8,
        "top_k": 20,
        "transformers_version": "4.44.0",
    }


class _Init:
    """Draws seeded Gaussian tensors in a fixed order (fp32, cast at the end)."""

    def __init__(self, seed: int, device: str = "cpu"):
        self.device = device
        self.gen = torch.Generator(device=device).manual_seed(seed)
        self.tensors: dict[str, torch.Tensor] = {}

    def normal(self, name: str, shape, std: float, mean: float = 0.0) -> None:
        value = torch.randn(*shape, generator=self.gen, device=self.device)
        value = value * std + mean
        self.tensors[name] = value

    def linear(self, name: str, out_dim: int, in_dim: int, bias=True, gain=1.0):
        self.normal(f"{name}.weight", (out_dim, in_dim), gain / math.sqrt(in_dim))
        if bias:
            self.normal(f"{name}.bias", (out_dim,), 0.02)

    def norm(self, name: str, dim: int, bias=True) -> None:
        self.normal(f"{name}.weight", (dim,), 0.1, mean=1.0)
        if bias:
            self.normal(f"{name}.bias", (dim,), 0.02)


def _siglip_weights(init: _Init, prefix: str, vision: dict) -> None:
    """A SigLIP vision transformer incl. post_layernorm and the MAP head."""
    dim, inter = vision["hidden_size"], vision["intermediate_size"]
    patch, channels = vision["patch_size"], vision["num_channels"]
    positions = (vision["image_size"] // patch) ** 2
    fan_in = channels * patch * patch
    init.normal(
        f"{prefix}embeddings.patch_embedding.weight",
        (dim, channels, patch, patch),
        1 / math.sqrt(fan_in),
    )
    init.normal(f"{prefix}embeddings.patch_embedding.bias", (dim,), 0.02)
    init.normal(f"{prefix}embeddings.position_embedding.weight", (positions, dim), 0.5)
    for i in range(vision["num_hidden_layers"]):
        layer = f"{prefix}encoder.layers.{i}."
        init.norm(f"{layer}layer_norm1", dim)
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            init.linear(f"{layer}self_attn.{proj}", dim, dim)
        init.norm(f"{layer}layer_norm2", dim)
        init.linear(f"{layer}mlp.fc1", inter, dim)
        init.linear(f"{layer}mlp.fc2", dim, inter)
    init.norm(f"{prefix}post_layernorm", dim)
    init.normal(f"{prefix}head.probe", (1, 1, dim), 1.0)
    init.normal(
        f"{prefix}head.attention.in_proj_weight", (3 * dim, dim), 1 / math.sqrt(dim)
    )
    init.normal(f"{prefix}head.attention.in_proj_bias", (3 * dim,), 0.02)
    init.linear(f"{prefix}head.attention.out_proj", dim, dim)
    init.norm(f"{prefix}head.layernorm", dim)
    init.linear(f"{prefix}head.mlp.fc1", inter, dim)
    init.linear(f"{prefix}head.mlp.fc2", dim, inter)


def _multimodal_weights(init: _Init, shape: Shape) -> None:
    """Resampler (64 queries, width = LLM hidden) and cubing network."""
    dim, kv_dim = shape.text["hidden_size"], shape.vision["hidden_size"]
    r = RESAMPLER_PREFIX
    init.normal(f"{r}query", (NUM_QUERIES, dim), 1.0)
    init.linear(f"{r}kv_proj", dim, kv_dim, bias=False)
    init.normal(f"{r}attn.in_proj_weight", (3 * dim, dim), 1 / math.sqrt(dim))
    init.normal(f"{r}attn.in_proj_bias", (3 * dim,), 0.02)
    init.linear(f"{r}attn.out_proj", dim, dim)
    for ln in ("ln_q", "ln_kv", "ln_post"):
        init.norm(f"{r}{ln}", dim)
    init.normal(f"{r}proj", (dim, dim), 1 / math.sqrt(dim))
    c = CUBING_PREFIX
    init.linear(f"{c}agg_frame_fn.0", kv_dim, kv_dim)
    init.norm(f"{c}proj_fn.0", kv_dim)
    init.linear(f"{c}proj_fn.1", kv_dim, kv_dim)
    init.linear(f"{c}proj_fn.3", 2, kv_dim, gain=CUBING_LOGIT_SCALE)
    init.linear(f"{c}thumbnail_fn.1", dim, kv_dim)


def _llm_weights(init: _Init, vocab_size: int, text: dict, qkv_bias: bool) -> None:
    """Qwen2 (q/k/v biases) or Llama (none) decoder weights."""
    dim, inter = text["hidden_size"], text["intermediate_size"]
    head_dim = dim // text["num_attention_heads"]
    kv = text["num_key_value_heads"] * head_dim
    init.normal("model.embed_tokens.weight", (vocab_size, dim), 1.0)
    for i in range(text["num_hidden_layers"]):
        layer = f"model.layers.{i}."
        init.norm(f"{layer}input_layernorm", dim, bias=False)
        init.linear(f"{layer}self_attn.q_proj", dim, dim, bias=qkv_bias)
        init.linear(f"{layer}self_attn.k_proj", kv, dim, bias=qkv_bias)
        init.linear(f"{layer}self_attn.v_proj", kv, dim, bias=qkv_bias)
        init.linear(f"{layer}self_attn.o_proj", dim, dim, bias=False)
        init.norm(f"{layer}post_attention_layernorm", dim, bias=False)
        init.linear(f"{layer}mlp.gate_proj", inter, dim, bias=False)
        init.linear(f"{layer}mlp.up_proj", inter, dim, bias=False)
        init.linear(f"{layer}mlp.down_proj", dim, inter, bias=False)
    init.norm("model.norm", dim, bias=False)
    init.linear("lm_head", vocab_size, dim, bias=False)
    row_scale = torch.randn(vocab_size, 1, generator=init.gen, device=init.device)
    row_scale = row_scale * LM_HEAD_ROW_SCALE
    init.tensors["lm_head.weight"] *= row_scale.exp()


def _save_sharded(out_dir: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Two shards + ``model.safetensors.index.json``, like a sharded HF save."""
    from safetensors.torch import save_file

    names = sorted(tensors)
    big = {"model.embed_tokens.weight", "lm_head.weight"}
    shards = [[n for n in names if n not in big], [n for n in names if n in big]]
    weight_map, total = {}, 0
    for i, shard in enumerate(shards, start=1):
        filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        part = {n: tensors[n].contiguous().cpu() for n in shard}
        save_file(part, str(out_dir / filename), metadata={"format": "pt"})
        (out_dir / filename).chmod(0o644)
        for n in shard:
            weight_map[n] = filename
            total += tensors[n].numel() * tensors[n].element_size()
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    _write_json(out_dir / "model.safetensors.index.json", index)


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def make_tiny_checkpoint(
    out_dir: Path,
    seed: int = 0,
    dtype: str = "bf16",
    *,
    tokenizer_cache_dir: Path | None = None,
    shape: str = "tiny",
    device: str = "cpu",
    variant: str = "qwen",
    tokenizer: str = "qwen",
) -> Path:
    """Write a random Quicksviewer checkpoint (original format) into ``out_dir``.

    ``shape`` is a key of ``SHAPES``: "tiny" for tests, "7b" for the released
    model's sizes (generate those on a GPU: ``device="cuda"``). ``variant`` is the
    language model ("qwen": Qwen2, "llama": Llama-3.1 keys and weights);
    ``tokenizer`` "qwen" is Qwen2.5's + the markers, "bpe" a locally trained
    byte-level BPE with a BOS and Llama-3's turn tokens (tokenizer.py) + the
    markers. Deterministic: the same arguments give byte-identical files.
    """
    from transformers import AutoTokenizer

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, not {dtype!r}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer == "qwen":
        tokenizer_dir = cached_quicksviewer_tokenizer(tokenizer_cache_dir)
        for name in TOKENIZER_FILES:
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
    elif tokenizer == "bpe":
        build_bpe_tokenizer(out_dir)
    else:
        raise ValueError(f"tokenizer must be 'qwen' or 'bpe', not {tokenizer!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(out_dir))
    vocab_size = len(tokenizer)
    for marker in MARKERS.values():
        if tokenizer.convert_tokens_to_ids(marker) >= vocab_size:
            raise TokenizerBuildError(f"{marker} is not in the tokenizer")

    sizes = SHAPES[shape]
    init = _Init(seed, device)
    _siglip_weights(init, TOWER_PREFIX, sizes.vision)
    _multimodal_weights(init, sizes)
    _llm_weights(init, vocab_size, sizes.text, qkv_bias=variant == "qwen")
    torch_dtype = DTYPES[dtype]
    _save_sharded(out_dir, {k: v.to(torch_dtype) for k, v in init.tensors.items()})
    del init
    _write_json(
        out_dir / "config.json",
        original_config(tokenizer, vocab_size, dtype, sizes, variant),
    )
    _write_json(out_dir / "generation_config.json", generation_config(tokenizer))

    _write_tower_dir(out_dir / sizes.tower_dirname, seed + 1, sizes, device)
    return out_dir


def _write_tower_dir(tower_dir: Path, seed: int, sizes: Shape, device: str) -> None:
    """The SigLIP directory ``mm_vision_tower`` names, with its own weights."""
    from safetensors.torch import save_file

    tower_dir.mkdir(exist_ok=True)
    tower = _Init(seed, device)
    _siglip_weights(tower, "vision_model.", sizes.vision)
    save_file(
        {k: tower.tensors[k].contiguous().cpu() for k in sorted(tower.tensors)},
        str(tower_dir / "model.safetensors"),
        metadata={"format": "pt"},
    )
    (tower_dir / "model.safetensors").chmod(0o644)
    _write_json(tower_dir / "config.json", tower_config(sizes))
    _write_json(
        tower_dir / "preprocessor_config.json",
        so400m_preprocessor(sizes.vision["image_size"]),
    )


def make_tiny_model_base(
    out_dir: Path, seed: int = 0, *, embed_tokens: bool = False
) -> tuple[Path, Path]:
    """The original's base-plus-projector layout (builder.py:43-69), Llama variant,
    fp32: returns (stage, base) under ``out_dir``.

    * ``base``: a Llama LLM (``config.json``, ``model.safetensors``,
      ``generation_config.json``) with the BPE tokenizer of a base model (no markers,
      no pad, like Llama-3.1's);
    * ``stage``: ``config.json`` as training saves it (vocab_size and pad_token_id
      after [PAD] and the 8 markers were added), ``mm_projector.bin`` as
      train.py:136-153 saves it (the resampler, the cubing network and, with
      ``embed_tokens``, the trained input embeddings), and the SigLIP directory.
    """
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    out_dir = Path(out_dir)
    stage, base = out_dir / "stage", out_dir / "base"
    stage.mkdir(parents=True, exist_ok=True)
    build_bpe_tokenizer(base, base=True)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    rows, sizes = len(tokenizer), SHAPES["tiny"]
    vocab_size = rows + 1 + len(MARKERS)
    init = _Init(seed)
    _multimodal_weights(init, sizes)
    _llm_weights(init, rows, sizes.text, qkv_bias=False)
    init.normal("trained_embed_tokens", (vocab_size, sizes.text["hidden_size"]), 1.0)
    trained = init.tensors.pop("trained_embed_tokens")
    adapter = {
        k: init.tensors.pop(k)
        for k in list(init.tensors)
        if k.startswith((RESAMPLER_PREFIX, CUBING_PREFIX))
    }
    if embed_tokens:
        adapter["model.embed_tokens.weight"] = trained
    torch.save(adapter, stage / "mm_projector.bin")
    save_file(init.tensors, str(base / "model.safetensors"), metadata={"format": "pt"})
    config = original_config(tokenizer, vocab_size, "fp32", sizes, "llama")
    config["pad_token_id"] = rows  # [PAD]
    _write_json(stage / "config.json", config)
    text = {k: v for k, v in config.items() if k in sizes.text or k in LLAMA_KEYS}
    base_config = dict(text, architectures=["LlamaForCausalLM"], model_type="llama")
    _write_json(base / "config.json", dict(base_config, vocab_size=rows))
    _write_json(base / "generation_config.json", generation_config(tokenizer))
    _write_tower_dir(stage / sizes.tower_dirname, seed + 1, sizes, "cpu")
    return stage, base
