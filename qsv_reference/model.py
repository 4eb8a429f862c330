"""The original Quicksviewer model in plain PyTorch + transformers.

Loads an ORIGINAL-format checkpoint (``model_type: quicksviewer_qwen``, or
``quicksviewer_llama`` for the Llama-3.1 variant) and follows
the op order of the original inference path (llava_arch.py, cubing_momentum.py,
resampler_3d.py, siglip_encoder_custom.py) so that, given the same kernels, the
intermediate tensors are the original's.

The algorithm (vision tower, cubing, resampler, prompt layout) is described once,
in the docstring of the SGLang model,
overlay/python/sglang/srt/models/quicksviewer.py. What this oracle does its own way:

Vision tower
  transformers' ``SiglipVisionModel`` (SDPA attention like the original's default),
  the original's ``hidden_states[-1]`` (the MAP head is never used and not loaded);
  ``mm_vision_select_layer`` is ignored like in the original.

Cubing (``cube_boundaries``)
  ``agg_frame_fn`` and ``proj_fn`` under the original's names; the Gumbel noise is
  multiplied by ``lr_gumbel = 0`` at inference. CPU topk breaks ties differently from
  CUDA's, so "highest value first, then lowest index" is explicit (``select_topk``).
  The thumbnail's division by the Python float ``z_hard.sum().item()`` is done as
  CUDA does it for a CPU scalar divisor: multiplication by the fp32 reciprocal (CPU
  kernels divide).

Resampler (``Resampler3D``)
  ``nn.MultiheadAttention`` called exactly like the original (seq-first, default
  ``need_weights=True``, all-false ``key_padding_mask``) so PyTorch takes the explicit
  (non-SDPA) path. The original's 3D fp32 table itself, computed on the CPU with the
  original formula and shapes and regrown when a cube ends past it.

LLM
  transformers' ``Qwen2ForCausalLM`` or ``LlamaForCausalLM`` (SDPA; the original
  used flash-attention 2 on GPU) with the checkpoint's language-model weights. The
  projector is the identity. Each -200 sentinel becomes the 64 rows of its visual
  block; greedy decoding stops at ``tokenizer.eos_token_id`` like ``chat()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from qsv_reference import checkpoint as ckpt
from qsv_reference import preprocess as pre
from qsv_reference.constants import (
    CUBING_MOMENTUM,
    CUBING_TEMPERATURE,
    FEATURE_GRID,
    FRAMES_PER_CUBE,
    IMAGE_TOKEN_INDEX,
    VARIANTS,
    VIDEO_FPS,
    VIDEO_MAX_FRAMES,
)
from qsv_reference.video import VideoFrames, extract_frames


def _sincos_1d(dim: int, positions: torch.Tensor) -> torch.Tensor:
    omega = torch.arange(dim // 2, dtype=torch.float32)
    omega /= dim / 2.0
    omega = 1.0 / 10000**omega
    out = torch.einsum("thw,d->thwd", positions, omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)


def sincos_3d_table(embed_dim: int, size: Sequence[int]) -> torch.Tensor:
    """The original ``get_3d_sincos_pos_embed``: (T, H, W, D) fp32 on the CPU.

    Channels: [0, D/4) time, [D/4, 5D/8) row, [5D/8, D) column, each half sin then cos
    with ``omega_d = 1 / 10000 ** (d / (n / 2))``. Requires D % 16 == 0.
    """
    if embed_dim % 16:
        raise ValueError(
            f"3D sin-cos table needs a width divisible by 16, got {embed_dim}"
        )
    t, h, w = (int(s) for s in size)
    grid = torch.meshgrid(
        torch.arange(t, dtype=torch.float32),
        torch.arange(w, dtype=torch.float32),
        torch.arange(h, dtype=torch.float32),
        indexing="ij",
    )
    grid = torch.stack(grid, dim=0)
    eighth = embed_dim // 8
    return torch.cat(
        [
            _sincos_1d(eighth * 2, grid[0]),
            _sincos_1d(eighth * 3, grid[1]),
            _sincos_1d(eighth * 3, grid[2]),
        ],
        dim=-1,
    )


class Resampler3D(nn.Module):
    """``resampler_3d.Resampler`` at inference (checkpoint parameter names)."""

    def __init__(self, embed_dim, kv_dim, num_queries, num_heads, max_size):
        super().__init__()
        self.embed_dim = embed_dim
        self.query = nn.Parameter(torch.zeros(num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False)
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_kv = nn.LayerNorm(embed_dim, eps=1e-6)
        self.ln_post = nn.LayerNorm(embed_dim, eps=1e-6)
        self.proj = nn.Parameter(torch.zeros(embed_dim, embed_dim))
        self.max_size = [int(s) for s in max_size]
        self.pos_embed = sincos_3d_table(embed_dim, self.max_size)

    def ensure_pos_table(self, ends: Sequence[int]) -> None:
        """``_adjust_pos_cache``: regrow (recompute) when a range ends past the table.

        The table is elementwise, so a prefix is bit-identical whatever the table size
        (checked on CPU); growing once to a video's length before its cubes is thus the
        same as the original's growth cube by cube.
        """
        if any(e > m for e, m in zip(ends, self.max_size)):
            self.max_size = [max(e, m) for e, m in zip(ends, self.max_size)]
            self.pos_embed = sincos_3d_table(self.embed_dim, self.max_size)

    def forward(self, features: torch.Tensor, ranges: Sequence[Sequence[int]]):
        """``features`` (B, L, kv_dim) with L = prod of the range lengths.

        ``ranges`` = [[t0, t1], [h0, h1], [w0, w1]] (right-open, absolute frame index).
        """
        batch = features.shape[0]
        (t0, t1), (h0, h1), (w0, w1) = ranges
        self.ensure_pos_table([t1, h1, w1])
        length = (t1 - t0) * (h1 - h0) * (w1 - w0)
        pos = self.pos_embed[t0:t1, h0:h1, w0:w1, :].reshape(length, -1)
        pos = pos.to(features.dtype).unsqueeze(1).expand(length, batch, -1)
        pos = pos.to(features.device)
        padding = torch.zeros(batch, length, dtype=torch.bool, device=features.device)
        x = self.ln_kv(self.kv_proj(features)).permute(1, 0, 2)
        q = self.ln_q(self.query).unsqueeze(1).repeat(1, batch, 1)
        out = self.attn(q, x + pos, x, key_padding_mask=padding)[0]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


class CubingHead(nn.Module):
    """The parameters of ``cubing_momentum.Cubing`` (names as in the checkpoint)."""

    def __init__(self, vision_dim: int, lm_dim: int):
        super().__init__()
        self.agg_frame_fn = nn.Sequential(nn.Linear(vision_dim, vision_dim))
        self.proj_fn = nn.Sequential(
            nn.LayerNorm(vision_dim),
            nn.Linear(vision_dim, vision_dim),
            nn.GELU(),
            nn.Linear(vision_dim, 2),
        )
        self.thumbnail_fn = nn.Sequential(
            nn.AvgPool2d(kernel_size=(9, 1), stride=(9, 1)),
            nn.Linear(vision_dim, lm_dim),
        )

    def boundary_logits(self, video: torch.Tensor) -> torch.Tensor:
        """Momentum of consecutive frame features -> (N-1, 2) logits."""
        momentum = [video[1] - video[0]]
        alpha = CUBING_MOMENTUM
        for i in range(2, video.shape[0]):
            momentum.append(
                alpha * (video[i] - video[i - 1]) + (1 - alpha) * momentum[-1]
            )
        feats = self.agg_frame_fn(torch.stack(momentum, dim=0)).mean(dim=1)
        return self.proj_fn(feats)


def num_boundaries(num_frames: int) -> int:
    """k = max(round(N / FPQ) - 1, 1): the selected boundaries besides frame 0."""
    return max(round(num_frames / FRAMES_PER_CUBE) - 1, 1)


def select_topk(values: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k largest values; ties go to the lowest index (CUDA topk)."""
    order = torch.sort(values, descending=True, stable=True).indices
    return order[:k]


@dataclass
class CubeBoundaries:
    """Cubing decisions for one video of N frames."""

    logits: torch.Tensor  # z (N-1, 2)
    probs: torch.Tensor  # y (N-1,) = P(frame j+1 starts a cube)
    selected: list[int]  # top-k positions in y, best first
    z_hard: torch.Tensor  # (N,) straight-through weights, z_hard[0] = 1
    bounds: list[tuple[int, int]]  # right-open frame ranges of the cubes


def find_segments(z_hard: Sequence[float]) -> list[tuple[int, int]]:
    """Right-open segments; a new one starts at every non-zero after index 0."""
    segments, start = [], 0
    for i in range(len(z_hard)):
        if i == len(z_hard) - 1 or z_hard[i + 1] != 0:
            segments.append((start, i + 1))
            start = i + 1
    return segments


def cube_boundaries(
    logits: torch.Tensor, temperature: float = CUBING_TEMPERATURE
) -> CubeBoundaries:
    """Gumbel-softmax top-k of the original at inference (noise weight 0)."""
    num_frames = logits.shape[0] + 1
    probs = F.softmax(logits / temperature, dim=-1)[:, 1]
    selected = select_topk(probs, num_boundaries(num_frames))
    onehot = torch.zeros_like(probs).scatter_(0, selected, 1)
    straight = (onehot - probs) + probs
    z_hard = torch.cat(
        [torch.ones(1, dtype=straight.dtype, device=straight.device), straight]
    )
    bounds = find_segments(z_hard.tolist())
    return CubeBoundaries(logits, probs, selected.tolist(), z_hard, bounds)


def thumbnail_features(
    video: torch.Tensor, z_hard: torch.Tensor, head: CubingHead
) -> torch.Tensor:
    """(1, 64, lm_dim): weighted mean of the cube-start frames, pooled, projected."""
    weighted = video * z_hard.unsqueeze(1).unsqueeze(1)
    divisor = z_hard.sum().item()
    # CUDA divides by a CPU scalar as a multiplication by its fp32 reciprocal.
    reciprocal = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(
        divisor, dtype=torch.float32
    )
    weighted = (weighted.float() * reciprocal.to(weighted.device)).to(video.dtype)
    return head.thumbnail_fn(weighted.sum(dim=0, keepdim=True))


class VisionTower(nn.Module):
    """SigLIP without post_layernorm/head, plus the original 27x27 -> 24x24 resize."""

    def __init__(self, vision_config):
        from transformers import SiglipVisionModel

        super().__init__()
        vision_config.vision_use_head = False
        vision_config._attn_implementation = "sdpa"
        self.siglip = SiglipVisionModel(vision_config)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        dtype = self.siglip.embeddings.patch_embedding.weight.dtype
        hidden = self.siglip.embeddings(pixels.to(dtype))
        hidden = self.siglip.encoder(inputs_embeds=hidden).last_hidden_state
        batch, tokens, dim = hidden.shape
        side = int(tokens**0.5)
        if tokens == FEATURE_GRID * FEATURE_GRID:
            return hidden
        grid = hidden.view(batch, side, side, dim).permute(0, 3, 1, 2).contiguous()
        grid = F.interpolate(
            grid.to(torch.float32),
            size=(FEATURE_GRID, FEATURE_GRID),
            mode="bilinear",
            align_corners=False,
        ).to(hidden.dtype)
        return grid.permute(0, 2, 3, 1).contiguous().flatten(1, 2)


@dataclass
class VideoEncoding:
    """Visual embeddings of one video: thumbnail first, then one block per cube."""

    features: torch.Tensor  # (K+1, num_queries, hidden)
    cubes: CubeBoundaries
    vision: torch.Tensor  # SigLIP features after the resize (N, 576, vision_dim)


@dataclass
class Generation:
    """Greedy decoding result."""

    tokens: list[int]
    first_logits: torch.Tensor  # fp32 (vocab,) logits of the first generated token
    inputs_embeds: torch.Tensor  # (L, hidden) LLM input
    # per generated token: its logit minus the runner-up's (how near a tie the greedy
    # choice was) and the largest |logit| (the scale of the logits' rounding)
    margins: list[float] = field(default_factory=list)
    scales: list[float] = field(default_factory=list)


@dataclass
class VideoRun:
    """Everything the reference computed for one video question."""

    frames: VideoFrames
    pixels: torch.Tensor  # (N, 3, 384, 384) after the fp16 rounding, in model dtype
    prompt: str  # before cubing (one <image> per frame + thumbnail)
    input_ids: list[int]  # with -200 sentinels, before the cube merge
    merged_input_ids: list[int]  # with K+1 sentinels, after the merge
    encoding: VideoEncoding
    generation: Generation
    num_queries: int
    text: str = ""

    @property
    def cube_bounds(self) -> list[tuple[int, int]]:
        return self.encoding.cubes.bounds

    @property
    def expanded_input_ids(self) -> list[int]:
        return pre.expand_placeholders(self.merged_input_ids, self.num_queries)

    @property
    def tokens(self) -> list[int]:
        return self.generation.tokens


@dataclass
class ImageRun:
    """Everything the reference computed for one image question."""

    pixels: torch.Tensor  # (views, 3, 384, 384)
    views_per_image: list[int]
    prompt: str
    input_ids: list[int]  # one sentinel per view
    features: torch.Tensor  # (views, num_queries, hidden)
    generation: Generation
    num_queries: int
    text: str = ""

    @property
    def expanded_input_ids(self) -> list[int]:
        return pre.expand_placeholders(self.input_ids, self.num_queries)

    @property
    def tokens(self) -> list[int]:
        return self.generation.tokens


class QuicksviewerReference:
    """The original model, loaded from an original-format checkpoint directory."""

    def __init__(
        self,
        model_dir: str | Path,
        dtype: torch.dtype = torch.bfloat16,
        device: str | torch.device = "cpu",
        vision_tower: str | Path | None = None,
        pixel_dtype: torch.dtype | None = torch.float16,
        model_base: str | Path | None = None,
    ):
        """``model_base``: ``model_dir`` is a stage folder (config.json +
        mm_projector.bin) loaded on top of this base LLM, as the original's builder
        does (``checkpoint.merge_model_base``)."""
        from transformers import CONFIG_MAPPING, SiglipVisionConfig

        self.model_dir = Path(model_dir)
        self.dtype = dtype
        self.device = torch.device(device)
        self.pixel_dtype = pixel_dtype
        self.config = ckpt.read_original_config(self.model_dir)
        ckpt.check_supported(self.config)
        tower_dir = ckpt.resolve_vision_tower(
            self.config, self.model_dir, Path(vision_tower) if vision_tower else None
        )
        if tower_dir is None:
            name = self.config["mm_vision_tower"]
            tried = ", ".join(map(str, ckpt.tower_candidates(name, self.model_dir)))
            raise ckpt.CheckpointError(
                f"mm_vision_tower {name!r} is not a SigLIP directory (tried {tried}); "
                "pass vision_tower="
            )
        self.tower_dir = tower_dir
        if model_base is not None:
            merged = ckpt.merge_model_base(self.model_dir, model_base, tower_dir)
            self.config, self.tokenizer = merged.config, merged.tokenizer
        text_model_type, self.template = VARIANTS[self.config["model_type"]]
        text_config = CONFIG_MAPPING[text_model_type](
            **{k: v for k, v in self.config.items() if k != "model_type"}
        )
        if model_base is None:
            self.tokenizer = ckpt.load_tokenizer(self.model_dir, text_config)
        self.image_processor = pre.load_image_processor(tower_dir)
        vision_config = SiglipVisionConfig.from_pretrained(str(tower_dir))
        hidden = text_config.hidden_size
        self.num_queries = int(self.config.get("num_queries", 64))
        num_heads = self.config.get("num_heads") or hidden // 128
        max_size = self.config.get("max_size") or (300, FEATURE_GRID, FEATURE_GRID)
        self.vision = VisionTower(vision_config)
        self.resampler = Resampler3D(
            hidden, vision_config.hidden_size, self.num_queries, num_heads, max_size
        )
        self.cubing = CubingHead(vision_config.hidden_size, hidden)
        if model_base is None:
            state = ckpt.load_state_dict(self.model_dir)
        else:
            state = merged.state
        self._load_multimodal_weights(state)
        for module in (self.vision, self.resampler, self.cubing):
            module.to(device=self.device, dtype=dtype).eval()
        self.llm = self._load_llm(text_config, state)

    def _load_multimodal_weights(self, state: dict) -> None:
        groups = {
            ckpt.TOWER_PREFIX: (self.vision.siglip, ("head.",)),
            ckpt.RESAMPLER_PREFIX: (self.resampler, ()),
            ckpt.CUBING_PREFIX: (self.cubing, ()),
        }
        for prefix, (module, skipped) in groups.items():
            part = {
                name[len(prefix) :]: tensor
                for name, tensor in state.items()
                if name.startswith(prefix)
            }
            part = {k: v for k, v in part.items() if not k.startswith(skipped)}
            result = module.load_state_dict(part, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ckpt.CheckpointError(
                    f"weights under {prefix}: missing {result.missing_keys}, "
                    f"unexpected {result.unexpected_keys}"
                )

    def _load_llm(self, text_config, state: dict):
        """Qwen2ForCausalLM (LlamaForCausalLM for the Llama variant) with every
        language-model tensor of the checkpoint (strict)."""
        from transformers import AutoModelForCausalLM

        text_config._attn_implementation = "sdpa"
        with torch.device(self.device):
            llm = AutoModelForCausalLM.from_config(text_config, dtype=self.dtype)
        multimodal = (ckpt.TOWER_PREFIX, ckpt.RESAMPLER_PREFIX, ckpt.CUBING_PREFIX)
        llm_state = {
            name: tensor
            for name, tensor in state.items()
            if not name.startswith(multimodal)
        }
        llm.load_state_dict(llm_state, strict=True)
        return llm.eval()

    # ------------------------------------------------------------------ vision
    def pixels(self, images: Sequence) -> torch.Tensor:
        """Processor pixels, rounded through ``pixel_dtype``, in the model dtype."""
        raw = pre.pixels_of(images, self.image_processor)
        return pre.cast_pixels(raw, self.dtype, self.pixel_dtype).to(self.device)

    @torch.no_grad()
    def encode_video(self, pixels: torch.Tensor) -> VideoEncoding:
        """(N, 3, 384, 384) pixels of one video -> (K+1, 64, hidden) embeddings."""
        if pixels.shape[0] < 2:
            raise ValueError("cubing needs at least 2 frames (the original fails on 1)")
        video = self.vision(pixels)
        cubes = cube_boundaries(self.cubing.boundary_logits(video))
        blocks = [thumbnail_features(video, cubes.z_hard, self.cubing)]
        grid = [[0, FEATURE_GRID], [0, FEATURE_GRID]]
        self.resampler.ensure_pos_table([video.shape[0], FEATURE_GRID, FEATURE_GRID])
        for start, end in cubes.bounds:
            feats = video[start:end].reshape(1, -1, video.shape[-1])
            blocks.append(self.resampler(feats, [[start, end], *grid]))
        return VideoEncoding(torch.cat(blocks, dim=0), cubes, video)

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(T, 3, 384, 384) views -> (T, 64, hidden); one batch, t = 0, no cubing."""
        feats = self.vision(pixels)
        grid = [[0, FEATURE_GRID], [0, FEATURE_GRID]]
        return self.resampler(feats, [[0, 1], *grid])

    # --------------------------------------------------------------------- LLM
    @torch.no_grad()
    def embed(self, input_ids: Sequence[int], features: torch.Tensor) -> torch.Tensor:
        """Text embeddings with each -200 replaced by its (64, hidden) block."""
        ids = torch.tensor(list(input_ids), dtype=torch.long)
        is_image = ids == IMAGE_TOKEN_INDEX
        if int(is_image.sum()) != features.shape[0]:
            raise ValueError(
                f"{int(is_image.sum())} placeholders, {features.shape[0]} visual blocks"
            )
        text = self.llm.get_input_embeddings()(ids[~is_image].to(self.device))
        pieces, text_pos, block = [], 0, 0
        for token in ids.tolist():
            if token == IMAGE_TOKEN_INDEX:
                pieces.append(features[block])
                block += 1
            else:
                pieces.append(text[text_pos : text_pos + 1])
                text_pos += 1
        return torch.cat(pieces, dim=0)

    @torch.no_grad()
    def generate(self, inputs_embeds: torch.Tensor, max_new_tokens: int) -> Generation:
        """Greedy decoding from ``inputs_embeds`` (L, hidden); stops at eos."""
        eos = self.tokenizer.eos_token_id
        out = self.llm(
            inputs_embeds=inputs_embeds.unsqueeze(0), use_cache=True, logits_to_keep=1
        )
        logits = out.logits[0, -1].float()
        first_logits = logits.clone()
        cache, tokens, margins, scales = out.past_key_values, [], [], []
        for _ in range(max_new_tokens):
            token = int(torch.argmax(logits))
            tokens.append(token)
            top2 = torch.topk(logits, 2).values
            margins.append(float(top2[0] - top2[1]))
            scales.append(float(logits.abs().max()))
            if token == eos:
                break
            step = torch.tensor([[token]], device=self.device)
            out = self.llm(input_ids=step, past_key_values=cache, use_cache=True)
            cache, logits = out.past_key_values, out.logits[0, -1].float()
        return Generation(tokens, first_logits, inputs_embeds, margins, scales)

    def decode(self, tokens: Sequence[int]) -> str:
        """The text ``chat()`` returns: trailing eos removed, specials kept, stripped.

        (The original also deletes every token id 0, "!"; we keep it and report ids.)
        """
        tokens = list(tokens)
        if tokens and tokens[-1] == self.tokenizer.eos_token_id:
            tokens = tokens[:-1]
        return self.tokenizer.decode(tokens).strip()

    # ------------------------------------------------------------------ driver
    def run_video(
        self,
        video: str | Path | VideoFrames,
        question: str,
        max_new_tokens: int = 16,
        num_frames: int = VIDEO_MAX_FRAMES,
        fps: float = VIDEO_FPS,
    ) -> VideoRun:
        """serve/cli.py with one video and one question, greedy."""
        frames = (
            video
            if isinstance(video, VideoFrames)
            else extract_frames(video, num_frames, fps)
        )
        pixels = self.pixels(frames.frames)
        message = pre.video_user_message(question, frames.timestamps, self.config)
        prompt = self.template.prompt(message)
        input_ids = pre.tokenize_with_sentinels(prompt, self.tokenizer)
        encoding = self.encode_video(pixels)
        num_frames_kept = len(frames.frames)
        thumbnail = bool(self.config.get("mm_use_thumbnail", True))
        videos_bound = [(0, num_frames_kept + int(thumbnail))]
        cubes = [
            (s + int(thumbnail), e + int(thumbnail)) for s, e in encoding.cubes.bounds
        ]
        cube_bound = [([(0, 1)] if thumbnail else []) + cubes]
        merged = pre.merge_cube_placeholders(
            input_ids, videos_bound, cube_bound, self.config.get("pad_token_id")
        )
        features = encoding.features if thumbnail else encoding.features[1:]
        generation = self.generate(self.embed(merged, features), max_new_tokens)
        # keyword fields, alike only in shape to other records (ImageRun, ChatResult)
        return VideoRun(
            frames=frames,
            pixels=pixels,
            prompt=prompt,
            input_ids=input_ids,
            merged_input_ids=merged,
            encoding=encoding,
            generation=generation,
            num_queries=self.num_queries,
            text=self.decode(generation.tokens),
        )

    def run_images(
        self, images: Sequence, question: str, max_new_tokens: int = 16
    ) -> ImageRun:
        """serve/cli.py with one or more images (anyres) and one question, greedy."""
        from PIL import Image

        pinpoints = self.config.get("image_grid_pinpoints")
        views, per_image = [], []
        for image in images:
            if not isinstance(image, Image.Image):
                image = Image.open(image).convert("RGB")
            if ckpt.aspect_ratio(self.config) == "anyres":
                image_views = pre.anyres_views(image, self.image_processor, pinpoints)
            else:
                image_views = [image]
            views.extend(image_views)
            per_image.append(len(image_views))
        pixels = self.pixels(views)
        prompt = self.template.prompt(
            pre.image_user_message(question, per_image, self.config)
        )
        input_ids = pre.tokenize_with_sentinels(prompt, self.tokenizer)
        features = self.encode_images(pixels)
        generation = self.generate(self.embed(input_ids, features), max_new_tokens)
        # like run_video's VideoRun in shape only: an image run's own fields
        return ImageRun(
            pixels=pixels,
            views_per_image=per_image,
            prompt=prompt,
            input_ids=input_ids,
            features=features,
            generation=generation,
            num_queries=self.num_queries,
            text=self.decode(generation.tokens),
        )


def summarize(run: VideoRun | ImageRun) -> dict:
    """A JSON-able summary of a run (used by the CLI)."""
    summary = {
        "prompt_tokens": len(run.expanded_input_ids),
        "visual_blocks": int(
            run.expanded_input_ids.count(IMAGE_TOKEN_INDEX) // run.num_queries
        ),
        "tokens": run.tokens,
        "text": run.text,
        "first_logits_top5": torch.topk(
            run.generation.first_logits, 5
        ).indices.tolist(),
    }
    if isinstance(run, VideoRun):
        summary.update(
            frames=len(run.frames.frames),
            frame_indices=run.frames.indices,
            timestamps=run.frames.timestamps,
            cube_bounds=[list(b) for b in run.cube_bounds],
            boundary_probs=[float(p) for p in run.encoding.cubes.probs.float()],
        )
    else:
        summary.update(views_per_image=run.views_per_image)
    return summary
