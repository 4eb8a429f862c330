"""Pixel preprocessing, prompt building and placeholder merging of the original.

Pixels
  The original uses HF's slow (PIL) ``SiglipImageProcessor`` from the tower directory:
  resize to 384 x 384 with PIL bicubic (no aspect preservation, no crop), rescale by
  1/255 (float64 then float32), normalize with mean = std = 0.5. In transformers 5
  that implementation is ``SiglipImageProcessorPil`` (``SiglipImageProcessor`` now
  names the torchvision one, whose resize differs). Videos are processed frame by frame
  (``image_aspect_ratio='original'``); ``chat()`` is called by serve/cli.py and the
  eval scripts with ``dtype=torch.float16``, so pixels are rounded fp32 -> fp16 and
  then cast to the tower dtype (bf16) inside the vision tower (``cast_pixels``).

Images (anyres)
  ``select_best_resolution`` among the config's pinpoints (W, H), aspect-preserving
  resize (ceil) onto a black canvas, tiles of ``size['height']`` (384) from the top
  left (PIL fills out-of-bounds crops with 0), and the whole image resized to 384 x 384
  (PIL's default bicubic) as the first view. With the released 224-based pinpoints
  this gives 1 + {2, 3, 4} views per image.

Prompt
  ``conv_qwen2`` (or ``llama_3_chat`` for the Llama variant, constants.VARIANTS) with
  NO system turn: ``<|im_start|>user\\n{message}<|im_end|>\\n<|im_start|>assistant\\n``.
  ``chat()`` builds the message as ``"<image>\\n" + question`` (one ``<image>`` per image, joined by newlines; literal ``<image>`` in the
  question is deleted), ``preprocess_multimodal_video`` / ``_image`` strip it and
  expand each ``<image>``. ``tokenizer_image_token`` splits on ``<image>``, tokenizes
  each chunk on its own (a BOS is kept once) and joins with -200 sentinels.

Cubes
  ``merge_cube_placeholders`` is ``update_placeholders_by_cube``: within a video, every
  cube keeps the text before its first ``<image>`` and that first ``<image>``, and drops
  everything else up to its last ``<image>``; the walk stops at the first
  ``pad_token_id`` (tokens after it are dropped, a quirk kept on purpose).
"""

from __future__ import annotations

import ast
import math
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image

from qsv_reference.constants import IMAGE_PLACEHOLDER, IMAGE_TOKEN_INDEX, MARKERS


def load_image_processor(tower_dir: Path):
    """The slow (PIL) SigLIP image processor configured from the tower directory."""
    from transformers.models.siglip.image_processing_pil_siglip import (
        SiglipImageProcessorPil,
    )

    return SiglipImageProcessorPil.from_pretrained(str(tower_dir))


def _as_pil(image) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.fromarray(image)


def pixels_of(images: Sequence, processor) -> torch.Tensor:
    """(N, 3, H, W) float32 pixels, one processor call per image like the original."""
    views = [
        processor(_as_pil(image), return_tensors="pt")["pixel_values"]
        for image in images
    ]
    return torch.cat(views, dim=0)


def cast_pixels(
    pixels: torch.Tensor, dtype: torch.dtype, via: torch.dtype | None = torch.float16
) -> torch.Tensor:
    """fp32 pixels -> ``via`` (the CLI's fp16) -> the tower dtype."""
    if via is not None:
        pixels = pixels.to(via)
    return pixels.to(dtype)


def parse_grid_pinpoints(value) -> list[tuple[int, int]]:
    """The config's pinpoints: a Python-literal string or a list of (W, H) pairs."""
    if isinstance(value, str):
        value = ast.literal_eval(value)
    return [(int(w), int(h)) for w, h in value]


def select_best_resolution(
    size: tuple[int, int], candidates: Sequence[tuple[int, int]]
) -> tuple[int, int]:
    """Max effective resolution, then min waste (first candidate wins exact ties)."""
    width, height = size
    best, best_effective, best_waste = None, 0, float("inf")
    for cand_w, cand_h in candidates:
        scale = min(cand_w / width, cand_h / height)
        down_w, down_h = int(width * scale), int(height * scale)
        effective = min(down_w * down_h, width * height)
        waste = cand_w * cand_h - effective
        if effective > best_effective or (
            effective == best_effective and waste < best_waste
        ):
            best, best_effective, best_waste = (cand_w, cand_h), effective, waste
    return best


def resize_and_pad_image(image: Image.Image, target: tuple[int, int]) -> Image.Image:
    """Aspect-preserving resize (ceil, PIL default filter), centred on black."""
    # written again on purpose: the oracle shares no code with the port it checks
    width, height = image.size
    target_w, target_h = target
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(
        image.resize((new_w, new_h)), ((target_w - new_w) // 2, (target_h - new_h) // 2)
    )
    return canvas


def divide_to_patches(image: Image.Image, tile: int) -> list[Image.Image]:
    """Row-major tiles of ``tile`` x ``tile`` from (0, 0); overhangs filled with 0."""
    width, height = image.size
    return [
        image.crop((left, top, left + tile, top + tile))
        for top in range(0, height, tile)
        for left in range(0, width, tile)
    ]


def anyres_views(image: Image.Image, processor, pinpoints) -> list[Image.Image]:
    """Base view (whole image at the processor size) followed by the anyres tiles."""
    image = _as_pil(image)
    best = select_best_resolution(image.size, parse_grid_pinpoints(pinpoints))
    padded = resize_and_pad_image(image, best)
    # SigLIP's processor has no crop_size: the original tiles by size["height"].
    tiles = divide_to_patches(padded, processor.size["height"])
    base = image.resize((processor.size["width"], processor.size["height"]))
    return [base] + tiles


def video_user_message(
    question: str,
    timestamps: Sequence[float],
    config: dict,
) -> str:
    """The user message after ``preprocess_multimodal_video`` (an image per frame)."""
    replace = "".join(f"{t}{IMAGE_PLACEHOLDER}" for t in timestamps)
    if config.get("mm_use_thumbnail", True):
        if config.get("mm_use_thumbnail_start_end"):
            replace = (
                MARKERS["thumbnail_start"]
                + IMAGE_PLACEHOLDER
                + MARKERS["thumbnail_end"]
                + replace
            )
        else:
            replace = IMAGE_PLACEHOLDER + replace
    if config.get("mm_use_video_start_end"):
        replace = MARKERS["video_start"] + replace + MARKERS["video_end"]
    message = "\n".join([IMAGE_PLACEHOLDER, question.replace(IMAGE_PLACEHOLDER, "")])
    return message.strip().replace(IMAGE_PLACEHOLDER, replace)


def image_user_message(
    question: str, views_per_image: Sequence[int], config: dict
) -> str:
    """The user message after ``preprocess_multimodal_image`` (one ``<image>``/view)."""
    parts = [IMAGE_PLACEHOLDER] * len(views_per_image)
    message = "\n".join(parts + [question.replace(IMAGE_PLACEHOLDER, "")]).strip()
    out, start = "", 0
    for views in views_per_image:
        block = IMAGE_PLACEHOLDER
        if config.get("mm_use_patch_start_end"):
            block = MARKERS["patch_start"] + IMAGE_PLACEHOLDER + MARKERS["patch_end"]
        block *= views
        if config.get("mm_use_im_start_end"):
            block = MARKERS["im_start"] + block + MARKERS["im_end"]
        found = message.find(IMAGE_PLACEHOLDER, start)
        out += message[start:found] + block
        start = found + len(IMAGE_PLACEHOLDER)
    return out + message[start:]


def tokenize_with_sentinels(prompt: str, tokenizer) -> list[int]:
    """``tokenizer_image_token`` (utils/mm_utils.py:277-296): the chunks between
    ``<image>`` are tokenized on their own, with the tokenizer's special tokens, and
    joined by -200 sentinels. When the first chunk starts with the BOS (Llama-3), it
    is kept once and the first token of EVERY chunk is dropped (the original assumes
    each chunk starts with a BOS)."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(IMAGE_PLACEHOLDER)]
    ids, offset = [], 0
    bos = tokenizer.bos_token_id
    if chunks and chunks[0] and bos is not None and chunks[0][0] == bos:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids.extend(chunk[offset:])
    return ids


def merge_cube_placeholders(
    input_ids: Sequence[int],
    videos_bound: Sequence[tuple[int, int]],
    cube_bound: Sequence[Sequence[tuple[int, int]]],
    pad_token_id: int,
) -> list[int]:
    """``update_placeholders_by_cube`` for one sequence.

    ``videos_bound[v] = (first, end)`` counts ``<image>`` sentinels over the whole
    sequence; ``cube_bound[v]`` are right-open cubes in the same units relative to
    ``first``, with the thumbnail as the 1-long cube (0, 1) (the bounds as the
    original cubing returns them).
    """
    ids = list(input_ids)
    out: list[int] = []
    i, g, n = 0, 0, len(ids)
    while i < n and ids[i] != pad_token_id:
        if ids[i] != IMAGE_TOKEN_INDEX:
            out.append(ids[i])
            i += 1
            continue
        video = next(
            (v for v, (start, end) in enumerate(videos_bound) if start <= g < end),
            None,
        )
        if video is None:
            out.append(ids[i])
            i += 1
            g += 1
            continue
        offset = videos_bound[video][0]
        cubes = cube_bound[video]
        if g != cubes[0][0] + offset:
            raise ValueError(f"image #{g} does not start the cubes {cubes}")
        for first, end in cubes:
            kept_image = False
            while g < end + offset and i < n and ids[i] != pad_token_id:
                token = ids[i]
                if token == IMAGE_TOKEN_INDEX:
                    if not kept_image:
                        out.append(token)
                        kept_image = True
                    g += 1
                elif g <= first + offset:
                    out.append(token)
                i += 1
    return out


def expand_placeholders(input_ids: Sequence[int], num_queries: int) -> list[int]:
    """Each sentinel repeated ``num_queries`` times: the LLM sequence layout."""
    out = []
    for token in input_ids:
        out.extend([token] * num_queries if token == IMAGE_TOKEN_INDEX else [token])
    return out
