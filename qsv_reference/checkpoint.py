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
  index) or PyTorch ``.bin`` files;
* ``merge_model_base``: the model the original's builder builds from a stage folder
  (``config.json`` + ``mm_projector.bin``) and a base LLM (``model_base``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from qsv_reference.constants import MARKERS, VARIANTS

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
    if (ckpt_dir / PROJECTOR_FILE).is_file():
        raise CheckpointError(
            f"{ckpt_dir} holds only {PROJECTOR_FILE}: the original loads it on top of "
            "a base LLM (model_base, builder.py:43-69); pass that LLM's directory "
            "with --model-base"
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


# ------------------------------------------------------------------- model_base
PROJECTOR_FILE = "mm_projector.bin"
EMBED = "model.embed_tokens.weight"
LM_HEAD = "lm_head.weight"
# What training saves into mm_projector.bin (train.py:136-153): the parameters named
# mm_projector (none: the identity projector), vision_resampler or cubing, and the
# input embeddings when the marker tokens were trained.
ADAPTER_PREFIXES = (RESAMPLER_PREFIX, CUBING_PREFIX, "model.mm_projector.")
# initialize_vision_tokenizer (llava_arch.py:871-889): flag -> the pair it adds, in
# the order of MARKERS.
MARKER_FLAGS = {
    "mm_use_patch_start_end": ("patch_start", "patch_end"),
    "mm_use_video_start_end": ("video_start", "video_end"),
    "mm_use_im_start_end": ("im_start", "im_end"),
    "mm_use_thumbnail_start_end": ("thumbnail_start", "thumbnail_end"),
}
QWEN_MODEL_BASE = (
    "the original builds LlavaLlamaForCausalLM for every model_base "
    "(builder.py:55), also from this quicksviewer_qwen config: transformers 4.44's "
    "Llama layers read config.attention_bias, which a Qwen2 config lacks, so it "
    "cannot be built (and would drop Qwen2's q/k/v biases); only the Llama variant "
    "is supported with --model-base, a Qwen2 model needs its full weights"
)


@dataclass
class MergedCheckpoint:
    """An original-format checkpoint in memory: config.json, tensors, tokenizer."""

    config: dict
    state: dict
    tokenizer: object


def _add_mean_rows(state: dict, names, count: int) -> None:
    """``resize_token_embeddings`` + the new rows set to the mean of the old ones
    (model/utils.py:39-52, llava_arch.py:890-898)."""
    import torch

    for name in names if count else ():
        old = state[name]
        state[name] = torch.cat([old, old.mean(dim=0, keepdim=True).expand(count, -1)])


def merge_model_base(stage_dir: Path, base_dir: Path, tower_dir: Path):
    """What ``load_pretrained_model(stage_dir, model_base=base_dir, ...)`` builds for
    the Llama variant (builder.py:43-69, with the variant's llama_3_chat version), as a
    merged checkpoint: the base's tokenizer and LLM weights (its config.json is not
    read: the stage config is), in bfloat16 (builder.py:39); a [PAD] token (Llama-3
    has no unk) and the markers of the config's flags added with mean embeddings and
    output rows; mm_projector.bin on top (loaded with weights_only=True). The SigLIP
    weights come from ``tower_dir``: the original builds the tower from
    mm_vision_tower inside a low_cpu_mem_usage from_pretrained, where that load is
    a no-op on meta tensors, and the tower is left uninitialized (no defined model),
    so the port takes the weights that load names."""
    import torch
    from transformers import LlamaConfig

    stage_dir, base_dir = Path(stage_dir), Path(base_dir)
    config = read_original_config(stage_dir)
    if VARIANTS[config["model_type"]][0] != "llama":
        raise CheckpointError(f"{stage_dir}: {QWEN_MODEL_BASE}")
    projector = stage_dir / PROJECTOR_FILE
    if not projector.is_file():
        raise CheckpointError(
            f"{stage_dir} has no {PROJECTOR_FILE}, which the original loads on top "
            "of model_base (builder.py:67)"
        )
    lacking = [k for k in ("pad_token_id", *MARKER_FLAGS) if config.get(k) is None]
    if lacking:
        raise CheckpointError(
            f"{stage_dir / 'config.json'} lacks {lacking}, which the original's "
            "model_base path reads (builder.py:49, llava_arch.py:873-886)"
        )
    if not base_dir.is_dir():
        raise CheckpointError(f"model_base {base_dir} is not a directory")
    text = {k: v for k, v in config.items() if k != "model_type"}
    tokenizer = load_tokenizer(base_dir, LlamaConfig(**text))  # builder.py:46
    state = {k: v.to(torch.bfloat16) for k, v in load_state_dict(base_dir).items()}
    names = (EMBED, LM_HEAD)
    if config.get("tie_word_embeddings"):  # lm_head is embed_tokens
        names = (EMBED,)
        state.pop(LM_HEAD, None)
    for name in names:
        rows = tuple(state[name].shape)[0] if name in state else None
        if rows != len(tokenizer):
            raise CheckpointError(
                f"{name} of model_base {base_dir} has {rows} rows, its tokenizer "
                f"{len(tokenizer)} tokens: the original sets vocab_size = "
                "len(tokenizer) (builder.py:48) and cannot load it"
            )
    tokenizer.pad_token = tokenizer.unk_token  # builder.py:57-65
    if tokenizer.pad_token is None:
        count = tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        _add_mean_rows(state, names, count)
    count = 0
    for flag, pair in MARKER_FLAGS.items():
        if config[flag]:
            markers = [MARKERS[name] for name in pair]
            count += tokenizer.add_tokens(markers, special_tokens=True)
    if count and "tune_mm_adapter" not in config:
        raise CheckpointError(
            "config.json lacks tune_mm_adapter, which the original reads after "
            "adding the markers (llava_arch.py:900)"
        )
    _add_mean_rows(state, names, count)
    adapter = torch.load(projector, map_location="cpu", weights_only=True)
    unknown = [k for k in adapter if k != EMBED and not k.startswith(ADAPTER_PREFIXES)]
    missing = [
        p for p in ADAPTER_PREFIXES[:2] if not any(k.startswith(p) for k in adapter)
    ]
    if unknown or missing:
        raise CheckpointError(
            f"{projector}: unknown tensors {unknown}, no {missing} (the original "
            "would ignore the first and leave the second uninitialized)"
        )
    for name, tensor in adapter.items():
        if name in state and state[name].shape != tensor.shape:
            raise CheckpointError(
                f"{projector}: {name} is {tuple(tensor.shape)}, the model's "
                f"{tuple(state[name].shape)} (load_state_dict, builder.py:69, fails)"
            )
        state[name] = tensor.to(torch.bfloat16)
    tower = {
        TOWER_PREFIX + name[len("vision_model.") :]: tensor.to(torch.bfloat16)
        for name, tensor in load_state_dict(tower_dir).items()
        if name.startswith("vision_model.")
    }
    if not tower:
        raise CheckpointError(f"{tower_dir} has no vision_model.* weights")
    state.update(tower)
    config.update(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="bfloat16",
    )
    return MergedCheckpoint(config, state, tokenizer)
