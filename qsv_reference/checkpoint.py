"""Reading checkpoints in the ORIGINAL Quicksviewer on-disk format.

Shared by the reference model and tools/checkpoints/convert.py:

* ``read_original_config``: ``config.json`` of a ``quicksviewer_qwen`` or
  ``quicksviewer_llama`` checkpoint;
* ``resolve_vision_tower``: where the SigLIP directory named by ``mm_vision_tower`` is.
  The original passes the string to ``SiglipVisionModel.from_pretrained`` as is, i.e.
  relative to the current directory (a training-machine path such as
  ``/data/models/siglip-so400m-patch14-384`` in a released config). We try it as
  given, then relative to the checkpoint directory, then its basename inside the
  checkpoint directory;
* ``weight_files`` / ``load_state_dict``: safetensors (single or sharded with an
  index) or PyTorch ``.bin`` files.
"""

from __future__ import annotations

import json
from pathlib import Path

from qsv_reference.constants import VARIANTS

TOWER_PREFIX = "model.vision_tower.vision_tower.vision_model."
RESAMPLER_PREFIX = "model.vision_resampler."
CUBING_PREFIX = "model.cubing."


class CheckpointError(ValueError):
    """The directory is not a usable original-format Quicksviewer checkpoint."""


def read_original_config(ckpt_dir: Path) -> dict:
    """Load ``config.json`` and check it is an original Quicksviewer config (the Qwen2
    or the Llama-3.1 variant)."""
    ckpt_dir = Path(ckpt_dir)
    path = ckpt_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{ckpt_dir} has no config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    model_type = config.get("model_type")
    if model_type not in VARIANTS:
        hint = ""
        if model_type == "quicksviewer":
            hint = " (it is already converted to the SGLang layout)"
        raise CheckpointError(
            f"{ckpt_dir} is not an original Quicksviewer checkpoint: model_type is "
            f"{model_type!r}, expected one of {sorted(VARIANTS)}{hint}"
        )
    if not config.get("mm_vision_tower"):
        raise CheckpointError(f"{path} has no mm_vision_tower (no vision modules)")
    return config


def load_tokenizer(ckpt_dir: Path, text_config):
    """The checkpoint's tokenizer as the original's ``AutoTokenizer`` gets it: the
    class that ``tokenizer_config.json`` names (transformers 4.44 reads it first;
    transformers 5 would let the config's model_type pick, e.g. Qwen2Tokenizer for
    any tokenizer of a Qwen2 config), else the class of the language model."""
    from transformers import AutoTokenizer
    from transformers.models.auto.tokenization_auto import tokenizer_class_from_name

    path = Path(ckpt_dir) / "tokenizer_config.json"
    name = None
    if path.is_file():
        name = json.loads(path.read_text(encoding="utf-8")).get("tokenizer_class")
    cls = tokenizer_class_from_name(name) if name else None
    if cls is not None:
        return cls.from_pretrained(str(ckpt_dir))
    return AutoTokenizer.from_pretrained(str(ckpt_dir), config=text_config)


# Variants of the original code base that the reference (and the port) implement.
SUPPORTED_VALUES = {
    "mm_resampler_type": "qformer",
    "mm_projector_type": "identity",
    "mm_patch_merge_type": "flat",
    "cubing_vit_forward_n_layers": -1,
    "is_cubing": True,
}


# image_aspect_ratio values of process_images (utils/mm_utils.py:227-262) that are not
# implemented; every other value is "anyres" or the plain per-view resize of its
# else branch.
UNSUPPORTED_ASPECT_RATIOS = {
    "highres": "process_highres_image is not implemented",
    "crop_split": "process_highres_image_crop_split is not implemented",
    "pad": (
        "the original cannot run it: it counts len() of each padded CHW tensor (3) "
        "as the image's views, so the prompt gets 3 placeholders for 1 view"
    ),
}
PLAIN_ASPECT_RATIO = "square"


def aspect_ratio(config: dict) -> str:
    """"anyres", or "square" for the else branch of process_images (one view per
    image resized to the tower's size: None, "square", "original", ...)."""
    value = config.get("image_aspect_ratio")
    return "anyres" if value == "anyres" else PLAIN_ASPECT_RATIO


def check_supported(config: dict) -> None:
    """Refuse configs that select code paths the port does not implement; the message
    names the key, the value and what is supported."""
    for key, value in SUPPORTED_VALUES.items():
        if config.get(key, value) != value:
            raise CheckpointError(
                f"unsupported {key}={config.get(key)!r} (only {value!r} is implemented)"
            )
    if config.get("mm_cubing") == "identity":
        raise CheckpointError("unsupported mm_cubing='identity' (no cubing network)")
    ratio = config.get("image_aspect_ratio")
    if ratio in UNSUPPORTED_ASPECT_RATIOS:
        raise CheckpointError(
            f"unsupported image_aspect_ratio={ratio!r}: "
            f"{UNSUPPORTED_ASPECT_RATIOS[ratio]} (supported: 'anyres', or any other "
            "value for one resized view per image)"
        )
    if ratio == "anyres" and not config.get("image_grid_pinpoints"):
        raise CheckpointError("image_aspect_ratio='anyres' needs image_grid_pinpoints")
    if int(config.get("pretraining_tp", 1) or 1) != 1:
        raise CheckpointError(
            f"unsupported pretraining_tp={config['pretraining_tp']!r} (only 1, the "
            "plain Llama projections, is implemented)"
        )
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key) and VARIANTS[config["model_type"]][0] == "llama":
            raise CheckpointError(
                f"unsupported {key}=True for the Llama variant (only False, as in "
                "Llama-3.1, is implemented)"
            )


def is_tower_dir(path: Path) -> bool:
    """A directory with a SigLIP ``config.json`` (vision or full SigLIP config)."""
    config_path = Path(path) / "config.json"
    if not config_path.is_file():
        return False
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return False
    return config.get("model_type") in ("siglip_vision_model", "siglip")


def tower_candidates(name: str, ckpt_dir: Path) -> list[Path]:
    """Where ``mm_vision_tower`` may point: as given, under ckpt_dir, by basename."""
    given = Path(name)
    candidates = [given]
    if not given.is_absolute():
        candidates.append(Path(ckpt_dir) / given)
    candidates.append(Path(ckpt_dir) / given.name)
    unique = []
    for path in candidates:
        if path not in unique:
            unique.append(path)
    return unique


def resolve_vision_tower(
    config: dict, ckpt_dir: Path, override: Path | None = None
) -> Path | None:
    """The SigLIP directory to use, or None when none of the candidates is one.

    ``override`` (e.g. ``--vision-tower``) wins and must be a SigLIP directory.
    """
    if override is not None:
        if not is_tower_dir(override):
            raise CheckpointError(
                f"{override} is not a SigLIP directory (no siglip config.json)"
            )
        return Path(override)
    for path in tower_candidates(config["mm_vision_tower"], ckpt_dir):
        if is_tower_dir(path):
            return path
    return None


def weight_files(ckpt_dir: Path) -> list[Path]:
    """The weight files of a checkpoint (index first when sharded)."""
    ckpt_dir = Path(ckpt_dir)
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = ckpt_dir / index_name
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            shards = sorted(set(weight_map.values()))
            missing = [s for s in shards if not (ckpt_dir / s).is_file()]
            if missing:
                raise CheckpointError(f"{index} lists missing shards {missing}")
            return [index] + [ckpt_dir / s for s in shards]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (ckpt_dir / single).is_file():
            return [ckpt_dir / single]
    if (ckpt_dir / "mm_projector.bin").is_file():
        raise CheckpointError(
            f"{ckpt_dir} holds only mm_projector.bin: the original loads it with "
            "--model-base (a base LLM, the markers added and their embeddings set to "
            "the mean, the tower from mm_vision_tower; builder.py:43-69), a layout "
            "this project does not convert; save the merged model (all weights) with "
            "the original code first"
        )
    raise CheckpointError(
        f"{ckpt_dir} has no weights (model.safetensors[.index.json] or "
        "pytorch_model.bin[.index.json])"
    )


def load_state_dict(ckpt_dir: Path) -> dict:
    """All tensors of the checkpoint on CPU, in their stored dtype."""
    import torch
    from safetensors.torch import load_file

    state = {}
    for path in weight_files(ckpt_dir):
        if path.name.endswith(".index.json"):
            continue
        if path.suffix == ".safetensors":
            state.update(load_file(str(path)))
        else:
            state.update(torch.load(path, map_location="cpu", weights_only=True))
    return state


def read_tensor_shapes(ckpt_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape without loading data (safetensors headers only)."""
    from safetensors import safe_open

    shapes = {}
    for path in weight_files(ckpt_dir):
        if path.name.endswith(".index.json"):
            continue
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                for name in f.keys():
                    shapes[name] = tuple(f.get_slice(name).get_shape())
        else:
            import torch

            for name, tensor in torch.load(
                path, map_location="meta", weights_only=True
            ).items():
                shapes[name] = tuple(tensor.shape)
    return shapes
