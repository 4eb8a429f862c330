"""Convert an original Quicksviewer checkpoint into the layout SGLang loads.

``python -m tools convert SRC DST [--vision-tower PATH]`` (``make convert``)

SRC is a released / trained checkpoint (``model_type: quicksviewer_qwen``,
``architectures: ["LlavaQwenForCausalLM"]``, or the Llama-3.1 variant
``quicksviewer_llama`` / ``LlavaLlamaForCausalLM``). SRC is never modified; DST gets

* ``config.json`` (below); ``config.original.json``: SRC's config, verbatim;
* the weight files hard-linked from SRC (copied across filesystems), keys unchanged:
  the SGLang loader maps the original names;
* the tokenizer files, copied; ``generation_config.json`` copied with its
  ``eos_token_id`` set to the tokenizer's EOS: the original's ``chat()`` passes
  ``eos_token_id=tokenizer.eos_token_id`` to ``generate``, which overrides the list of
  the file (Qwen2.5's also stops at <|endoftext|>, Llama-3.1's at three ids), so the
  original stops at that one token only;
* ``preprocessor_config.json`` of the SigLIP directory (the original reads image
  preprocessing from ``mm_vision_tower``; SGLang reads it from the model directory).

Re-running rewrites the same files (idempotent). A directory that is not an original
Quicksviewer checkpoint, or lacks weights, tokenizer markers or a vision config, raises
``ConvertError``, a ``ToolError`` (the CLI prints it as ``error: ...`` and exits 2).

Vision config. ``mm_vision_tower`` is whatever path the training machine used (e.g.
``/data/models/siglip-so400m-patch14-384``; the original resolves it against the
current directory). We use ``--vision-tower`` if given, else the name as given, then
relative to SRC, then its basename inside SRC. If none is a SigLIP directory, the
vision config is derived from the tower weights stored in the checkpoint (patch size,
width, image size from the position table, depth, MLP width); the head count cannot be
derived, so it is 16 for width 1152 (SigLIP-so400m) and width // 64 otherwise, with
so400m's activation, LayerNorm eps and preprocessing. What was assumed is printed and
recorded under ``quicksviewer_conversion`` in the config.

Keys of the converted ``config.json``::

    model_type                 "quicksviewer"
    architectures              ["QuicksviewerForCausalLM"]
    text_config                Qwen2 (model_type "qwen2") or, for the Llama variant,
                               Llama (model_type "llama") config dict (hidden_size,
                               intermediate_size, num_hidden_layers,
                               num_attention_heads, num_key_value_heads, vocab_size,
                               rope_theta, rms_norm_eps, max_position_embeddings,
                               tie_word_embeddings, bos/eos/pad_token_id, torch_dtype ...)
    vision_config              SiglipVisionConfig dict (model_type
                               "siglip_vision_model"; hidden_size, intermediate_size,
                               num_hidden_layers, num_attention_heads, image_size,
                               patch_size, num_channels, hidden_act, layer_norm_eps)
    <marker>_token_id          8 ids from the tokenizer: patch_start, patch_end,
                               video_start, video_end, im_start, im_end,
                               thumbnail_start, thumbnail_end
    bos_token_id, eos_token_id, pad_token_id   from the tokenizer (bos: the original
                               config's when the tokenizer has none); pad also ends the
                               original's placeholder merge
    vocab_size, tie_word_embeddings, torch_dtype   copies of the text values
    num_queries                tokens per cube / image view (64)
    resampler_num_heads        MHA heads of the resampler (``num_heads``, else
                               hidden // 128 like the original)
    vision_feature_size        side of the resized SigLIP grid (24: 27x27 -> 24x24)
    cubing_momentum            0.8
    cubing_frames_per_cube     5 (k = max(round(N / 5) - 1, 1) boundaries)
    cubing_temperature         0.5
    use_thumbnail              mm_use_thumbnail
    image_aspect_ratio         "anyres", or "square" for every value that takes the
                               original's plain resize (None, "square", ...);
                               "pad", "highres", "crop_split" are refused
    image_grid_pinpoints       [[w, h], ...] parsed from the original string
    video_max_frames           420 (serve/cli.py and eval defaults)
    video_fps                  1
    mm_use_im_start_end, mm_use_patch_start_end, mm_use_video_start_end,
    mm_use_thumbnail_start_end booleans of the original config
    quicksviewer_conversion    {"source_model_type", "vision_config_source",
                               "vision_tower", "assumptions": [...]}
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from qsv_reference import checkpoint as ckpt
from qsv_reference.constants import (
    CUBING_MOMENTUM,
    CUBING_TEMPERATURE,
    FEATURE_GRID,
    FRAMES_PER_CUBE,
    MARKERS,
    VIDEO_FPS,
    VIDEO_MAX_FRAMES,
)
from qsv_reference.preprocess import parse_grid_pinpoints
from tools import ToolError

TARGET_MODEL_TYPE = "quicksviewer"
TARGET_ARCHITECTURE = "QuicksviewerForCausalLM"
ORIGINAL_CONFIG_BACKUP = "config.original.json"
PREPROCESSOR_CONFIG = "preprocessor_config.json"

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "chat_template.json",
)
GENERATION_CONFIG = "generation_config.json"

QWEN2_KEYS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "hidden_act",
    "max_position_embeddings",
    "initializer_range",
    "rms_norm_eps",
    "use_cache",
    "tie_word_embeddings",
    "rope_theta",
    "rope_scaling",
    "use_sliding_window",
    "sliding_window",
    "max_window_layers",
    "attention_dropout",
    "torch_dtype",
)
QWEN2_REQUIRED = QWEN2_KEYS[:6]
# Llama-3.1's keys (LlamaConfig); the converter refuses pretraining_tp != 1 and the
# biases (qsv_reference.checkpoint.check_supported).
LLAMA_KEYS = tuple(
    key
    for key in QWEN2_KEYS
    if key not in ("use_sliding_window", "sliding_window", "max_window_layers")
) + ("attention_bias", "mlp_bias", "head_dim", "pretraining_tp")
TEXT_KEYS = {"qwen2": QWEN2_KEYS, "llama": LLAMA_KEYS}
TEXT_ARCHITECTURES = {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}

SIGLIP_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_channels",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "attention_dropout",
)

# Input resolution of the public SigLIP checkpoints by (patch, grid side): the grid is
# image_size // patch, so the weights only bound image_size to [side * patch,
# side * patch + patch - 1] (so400m-patch14-384: 27 x 27 patches of 384 px images).
KNOWN_IMAGE_SIZES = {
    (14, 27): 384,
    (14, 16): 224,
    (16, 14): 224,
    (16, 16): 256,
    (16, 24): 384,
    (16, 32): 512,
}

# google/siglip-so400m-patch14-384 (the tower of the released model).
SO400M_HIDDEN = 1152
SO400M_HEADS = 16
SO400M_ACT = "gelu_pytorch_tanh"
SO400M_LN_EPS = 1e-6


def so400m_preprocessor(image_size: int = 384) -> dict:
    """SigLIP-so400m's ``preprocessor_config.json`` (slow SiglipImageProcessor)."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_processor_type": "SiglipImageProcessor",
        "image_std": [0.5, 0.5, 0.5],
        "processor_class": "SiglipProcessor",
        "resample": 3,
        "rescale_factor": 0.00392156862745098,
        "size": {"height": image_size, "width": image_size},
    }


class ConvertError(ToolError):
    """SRC cannot be converted; the message says why."""


@dataclass
class Conversion:
    """What ``convert_checkpoint`` wrote."""

    dst: Path
    config: dict
    vision_source: str  # "directory" or "weights"
    assumptions: list[str] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def _tower_config_from_dir(tower_dir: Path) -> dict:
    """The SigLIP vision config of a tower directory, with transformers' defaults."""
    from transformers import SiglipVisionConfig

    config = SiglipVisionConfig.from_pretrained(str(tower_dir)).to_dict()
    return _siglip_dict(config)


def _siglip_dict(values: dict) -> dict:
    out = {"model_type": "siglip_vision_model"}
    out.update({key: values[key] for key in SIGLIP_KEYS})
    return out


def _tower_config_from_weights(
    shapes: dict[str, tuple[int, ...]], assumptions: list[str]
) -> dict:
    """Derive the SigLIP vision config from the tower tensors in the checkpoint."""
    prefix = ckpt.TOWER_PREFIX
    patch = shapes.get(f"{prefix}embeddings.patch_embedding.weight")
    positions = shapes.get(f"{prefix}embeddings.position_embedding.weight")
    fc1 = shapes.get(f"{prefix}encoder.layers.0.mlp.fc1.weight")
    if not (patch and positions and fc1):
        raise ConvertError(
            "no SigLIP directory found and the checkpoint lacks the tower weights "
            f"({prefix}embeddings.*) to derive the vision config from"
        )
    hidden, channels, patch_size, _ = patch
    side = int(round(positions[0] ** 0.5))
    if side * side != positions[0]:
        raise ConvertError(
            f"position table of {positions[0]} rows is not a square grid"
        )
    image_size = KNOWN_IMAGE_SIZES.get((patch_size, side), side * patch_size)
    assumptions.append(
        f"image_size={image_size} ({side}x{side} patches of {patch_size} px)"
    )
    layers = {
        int(name[len(prefix) :].split(".")[2])
        for name in shapes
        if name.startswith(f"{prefix}encoder.layers.")
    }
    if hidden == SO400M_HIDDEN:
        heads = SO400M_HEADS
        assumptions.append(f"num_attention_heads={heads} (SigLIP-so400m, width 1152)")
    elif hidden % 64 == 0:
        heads = hidden // 64
        assumptions.append(
            f"num_attention_heads={heads} (width {hidden} / head dim 64)"
        )
    else:
        raise ConvertError(
            f"cannot guess the head count of a width-{hidden} SigLIP; "
            "pass --vision-tower"
        )
    assumptions.append(f"hidden_act={SO400M_ACT!r}, layer_norm_eps={SO400M_LN_EPS}")
    assumptions.append("image preprocessing of SigLIP-so400m (bicubic, mean/std 0.5)")
    return _siglip_dict(
        {
            "hidden_size": hidden,
            "intermediate_size": fc1[0],
            "num_hidden_layers": len(layers),
            "num_attention_heads": heads,
            "num_channels": channels,
            "image_size": image_size,
            "patch_size": patch_size,
            "hidden_act": SO400M_ACT,
            "layer_norm_eps": SO400M_LN_EPS,
            "attention_dropout": 0.0,
        }
    )


def _check_tower_shapes(vision: dict, shapes: dict, source: str) -> None:
    prefix = ckpt.TOWER_PREFIX
    expected = {
        "embeddings.patch_embedding.weight": (
            vision["hidden_size"],
            vision["num_channels"],
            vision["patch_size"],
            vision["patch_size"],
        ),
        "embeddings.position_embedding.weight": (
            (vision["image_size"] // vision["patch_size"]) ** 2,
            vision["hidden_size"],
        ),
        f"encoder.layers.{vision['num_hidden_layers'] - 1}.mlp.fc1.weight": (
            vision["intermediate_size"],
            vision["hidden_size"],
        ),
    }
    for name, shape in expected.items():
        actual = shapes.get(prefix + name)
        if actual != shape:
            raise ConvertError(
                f"vision config from {source} does not match the checkpoint: "
                f"{prefix + name} is {actual}, expected {shape}"
            )
    if f"{prefix}encoder.layers.{vision['num_hidden_layers']}.mlp.fc1.weight" in shapes:
        raise ConvertError(
            f"vision config from {source} has {vision['num_hidden_layers']} layers, "
            "the checkpoint has more"
        )


def _load_tokenizer(src: Path, text_config: dict):
    from transformers import CONFIG_MAPPING

    config = CONFIG_MAPPING[text_config["model_type"]](**text_config)
    try:
        return ckpt.load_tokenizer(src, config)
    except (OSError, ValueError) as exc:
        raise ConvertError(f"cannot load the tokenizer of {src}: {exc}") from None


def _marker_ids(tokenizer, vocab_size: int) -> dict[str, int]:
    ids = {}
    for name, marker in MARKERS.items():
        encoded = tokenizer(marker, add_special_tokens=False).input_ids
        if len(encoded) != 1 or encoded[0] != tokenizer.convert_tokens_to_ids(marker):
            raise ConvertError(
                f"the tokenizer has no {marker} token (it encodes to {encoded}); "
                "is this a Quicksviewer tokenizer?"
            )
        if encoded[0] >= vocab_size:
            raise ConvertError(
                f"{marker} has id {encoded[0]} >= vocab_size {vocab_size}"
            )
        ids[name] = encoded[0]
    return ids


def _text_config(original: dict) -> dict:
    """The language model's config: Qwen2's or Llama's keys, by the variant."""
    model_type = ckpt.VARIANTS[original["model_type"]][0]
    missing = [key for key in QWEN2_REQUIRED if key not in original]
    if missing:
        raise ConvertError(f"config.json lacks the {model_type} keys {missing}")
    text = {"model_type": model_type, "architectures": [TEXT_ARCHITECTURES[model_type]]}
    text.update(
        {key: original[key] for key in TEXT_KEYS[model_type] if key in original}
    )
    return text


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_or_copy(src: Path, dst: Path) -> str:
    """Hard-link ``src`` to ``dst`` (copy across filesystems); keep an existing link."""
    if _same_file(src, dst):
        return "linked"
    tmp = dst.with_name(dst.name + ".tmp")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
        how = "linked"
    except OSError:
        shutil.copy2(src, tmp)
        how = "copied"
    tmp.replace(dst)
    return how


def _copy(src: Path, dst: Path) -> None:
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.copyfile(src, tmp)
    tmp.replace(dst)


def convert_checkpoint(
    src: str | Path,
    dst: str | Path,
    vision_tower: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Conversion:
    """Write the SGLang layout of the original checkpoint ``src`` into ``dst``."""
    src, dst = Path(src).resolve(), Path(dst).resolve()
    if not src.is_dir():
        raise ConvertError(f"{src} is not a directory")
    if dst == src or src in dst.parents:
        raise ConvertError(
            f"DST {dst} must be outside SRC {src} (SRC is never modified)"
        )
    try:
        original = ckpt.read_original_config(src)
        weights = ckpt.weight_files(src)
        shapes = ckpt.read_tensor_shapes(src)
        override = Path(vision_tower) if vision_tower is not None else None
        tower_dir = ckpt.resolve_vision_tower(original, src, override)
        ckpt.check_supported(original)
    except ckpt.CheckpointError as exc:
        raise ConvertError(str(exc)) from None

    assumptions: list[str] = []
    if tower_dir is not None:
        vision = _tower_config_from_dir(tower_dir)
        vision_source = "directory"
        _check_tower_shapes(vision, shapes, str(tower_dir))
        preprocessor_path = tower_dir / PREPROCESSOR_CONFIG
        if preprocessor_path.is_file():
            preprocessor = _read_json(preprocessor_path)
        else:
            preprocessor = so400m_preprocessor(vision["image_size"])
            assumptions.append(
                f"{preprocessor_path} missing: SigLIP-so400m preprocessing"
            )
    else:
        tried = ckpt.tower_candidates(original["mm_vision_tower"], src)
        assumptions.append(
            f"mm_vision_tower {original['mm_vision_tower']!r} not found "
            f"(tried {', '.join(map(str, tried))}); vision config derived from the "
            "checkpoint's tower weights"
        )
        vision = _tower_config_from_weights(shapes, assumptions)
        vision_source = "weights"
        _check_tower_shapes(vision, shapes, "the tower weights")
        preprocessor = so400m_preprocessor(vision["image_size"])

    text = _text_config(original)
    tokenizer = _load_tokenizer(src, text)
    marker_ids = _marker_ids(tokenizer, text["vocab_size"])
    special = {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    if special["bos_token_id"] is None:
        special["bos_token_id"] = original.get("bos_token_id")
    if special["eos_token_id"] is None or special["pad_token_id"] is None:
        raise ConvertError("the tokenizer defines no eos or pad token")
    for key, value in special.items():
        if original.get(key) not in (None, value):
            assumptions.append(
                f"{key}: config.json says {original.get(key)}, the tokenizer "
                f"{value}; using the tokenizer's"
            )
    text.update(special)

    hidden = text["hidden_size"]
    use_thumbnail = bool(original.get("mm_use_thumbnail", True))
    config = {
        "model_type": TARGET_MODEL_TYPE,
        "architectures": [TARGET_ARCHITECTURE],
        "text_config": text,
        "vision_config": vision,
        **{f"{name}_token_id": token_id for name, token_id in marker_ids.items()},
        **special,
        "vocab_size": text["vocab_size"],
        "tie_word_embeddings": bool(text.get("tie_word_embeddings", False)),
        "torch_dtype": text.get("torch_dtype", "bfloat16"),
        "num_queries": int(original.get("num_queries", 64)),
        "resampler_num_heads": int(original.get("num_heads") or hidden // 128),
        "vision_feature_size": FEATURE_GRID,
        "cubing_momentum": CUBING_MOMENTUM,
        "cubing_frames_per_cube": FRAMES_PER_CUBE,
        "cubing_temperature": CUBING_TEMPERATURE,
        "use_thumbnail": use_thumbnail,
        "image_aspect_ratio": ckpt.aspect_ratio(original),
        "image_grid_pinpoints": [
            list(p)
            for p in parse_grid_pinpoints(original.get("image_grid_pinpoints") or "[]")
        ],
        "video_max_frames": VIDEO_MAX_FRAMES,
        "video_fps": VIDEO_FPS,
        "mm_use_im_start_end": bool(original.get("mm_use_im_start_end", False)),
        "mm_use_patch_start_end": bool(original.get("mm_use_patch_start_end", False)),
        "mm_use_video_start_end": bool(original.get("mm_use_video_start_end", False)),
        "mm_use_thumbnail_start_end": bool(
            original.get("mm_use_thumbnail_start_end", False)
        ),
        "quicksviewer_conversion": {
            "source_model_type": original["model_type"],
            "vision_config_source": vision_source,
            "vision_tower": (
                str(tower_dir) if tower_dir else original["mm_vision_tower"]
            ),
            "assumptions": assumptions,
        },
    }
    if hidden % 16 or hidden % config["resampler_num_heads"]:
        raise ConvertError(
            f"resampler width {hidden} must be divisible by 16 and by "
            f"{config['resampler_num_heads']} heads"
        )

    dst.mkdir(parents=True, exist_ok=True)
    _copy(src / "config.json", dst / ORIGINAL_CONFIG_BACKUP)
    for path in weights:
        if path.name.endswith(".index.json"):
            _copy(path, dst / path.name)
        else:
            _link_or_copy(path, dst / path.name)
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            _copy(src / name, dst / name)
    if (src / GENERATION_CONFIG).is_file():
        generation = _read_json(src / GENERATION_CONFIG)
        if generation.get("eos_token_id") != special["eos_token_id"]:
            # a rule of the conversion, not an assumption: printed, not recorded
            log(
                f"note: {GENERATION_CONFIG}: eos_token_id "
                f"{generation.get('eos_token_id')} -> {special['eos_token_id']} (the "
                "tokenizer's, as the original's chat() passes it)"
            )
        generation["eos_token_id"] = special["eos_token_id"]
        _write_json(dst / GENERATION_CONFIG, generation)
    _write_json(dst / PREPROCESSOR_CONFIG, preprocessor)
    _write_json(dst / "config.json", config)
    for note in assumptions:
        log(f"note: {note}")
    return Conversion(dst, config, vision_source, assumptions)
