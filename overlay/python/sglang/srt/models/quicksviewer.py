# Copyright 2025 SGLang Team
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
# ==============================================================================
"""Inference-only Quicksviewer (arXiv 2504.15270).

This docstring is the one description of the algorithm; the project's
docs/design.md and its reference implementation (qsv_reference/) point here.

Video, the processor (``multimodal/processors/quicksviewer.py``): one frame at
the middle of every second (1 fps; a request may ask for another rate), at most
420 frames by uniform sub-sampling, timestamps ``round(index / fps, 1)``;
SigLIP's PIL preprocessing (bicubic to 384 x 384, Pillow 12's, then rescale and
normalise, rounded to fp16) reproduced exactly, the normalisation applied here
as a table lookup (``lookup_pixels``). Images: "anyres" views, a base view of
the whole image plus the tiles of the image resized (aspect kept) and padded
black to the best grid pinpoint, or one view (``image_aspect_ratio: square``).

Vision tower: SigLIP (SGLang's Idefics2 tower), all layers, features before
``post_layernorm``, 27 x 27 -> 24 x 24 bilinear in fp32; all N frames of a
video in one batch.

Cubing (``QuicksviewerCubing``): momentum over the frame features,
``m_1 = v_1 - v_0``, ``m_i = 0.8 * (v_i - v_{i-1}) + 0.2 * m_{i-1}``, in the
model dtype and the original's op order; a per-token linear layer, the mean
over tokens, a LayerNorm and a two-layer GELU MLP give two logits per
transition, and
``softmax(z / 0.5)[:, 1]`` the probability that a cube starts at frame j. The
top ``max(round(N / 5) - 1, 1)`` transitions (``num_cube_boundaries``; ties to
the lowest frame, like CUDA's ``topk``) start cubes, frame 0 always does
(``select_cubes``, straight-through weights). The thumbnail is the weighted
mean of the cube-start frames, pooled (9, 1) to 64 tokens and projected.

Resampler (``QuicksviewerResampler``): a perceiver with ``num_queries`` (64)
learned queries and one ``nn.MultiheadAttention`` over a whole cube's tokens;
the keys get 3D sin-cos positions (absolute frame index of the sampled video,
row, column; images t = 0), the values none. A video gives K + 1 blocks of 64
tokens (thumbnail, then one per cube); an anyres image one block per view.

Prompt: ``<video_start><thumbnail_start>`` + thumbnail block +
``<thumbnail_end>``, then for every cube the timestamp of its first frame and
its block, then ``<video_end>``; the timestamps of the other frames are
dropped, so the prompt layout depends on the cubing decision. An image is
``<im_start>(<patch_start> block <patch_end>) x views<im_end>``.

SGLang fixes ``input_ids`` before the prefill. This model therefore runs the
visual encoder before ``pad_input_ids`` (scheduler process, beside the weights,
once per video: ``prefetch_mm_inputs`` encodes on a worker thread while the
scheduler keeps serving, patch 0010), writes the exact original layout into the
ids, and hands the visual embeddings to the prefill as
``precomputed_embeddings``. Images have a fixed layout and take the usual
``get_image_feature`` path. What the processor hands over is
``QuicksviewerVideoItem`` (configs/quicksviewer.py).
"""

import json
import logging
import os
import threading
import time
from array import array
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sglang.srt.configs.quicksviewer import (
    QuicksviewerConfig,
    QuicksviewerVideoItem,
    num_cube_boundaries,
)
from sglang.srt.layers.linear import ReplicatedLinear
from sglang.srt.layers.quantization.base_config import QuantizationConfig
from sglang.srt.managers.mm_utils import general_mm_embed_routine
from sglang.srt.managers.schedule_batch import (
    Modality,
    MultimodalDataItem,
    MultimodalInputs,
)
from sglang.srt.model_executor.forward_batch_info import ForwardBatch
from sglang.srt.model_loader.weight_utils import default_weight_loader
from sglang.srt.models.idefics2 import Idefics2VisionTransformer
from sglang.srt.models.llama import LlamaForCausalLM
from sglang.srt.models.minicpmv import BaseResampler
from sglang.srt.models.qwen2 import Qwen2ForCausalLM
from sglang.srt.models.utils import WeightsMapper
from sglang.srt.runtime_context import get_server_args
from sglang.srt.utils import add_prefix

logger = logging.getLogger(__name__)

# SGLang's own language model for each variant (config.text_config.model_type).
LANGUAGE_MODELS = {"qwen2": Qwen2ForCausalLM, "llama": LlamaForCausalLM}


def _sincos_1d(embed_dim: int, positions: torch.Tensor) -> torch.Tensor:
    """1D sin-cos table, computed exactly like the original (fp32, CPU)."""
    omega = torch.arange(embed_dim // 2, dtype=torch.float32, device=positions.device)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = torch.einsum("t,d->td", positions, omega)
    return torch.cat([torch.sin(out), torch.cos(out)], dim=-1)


def resize_patch_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    """The tower's (B, S, S, C) patch grid resized to (B, size * size, C), row-major.

    The original's arithmetic: bilinear, align_corners=False, in fp32, rounded back
    to the input dtype. Its input is an NCHW-contiguous copy; here it is the
    channels-last view of the grid, with a channels-last output. On CUDA PyTorch
    then runs one thread per output element (upsample_bilinear2d_nhwc_out_frame)
    instead of the NCHW kernel's single block of size * size threads that loops
    over every frame and channel (27.6 ms on one SM for 60 frames on an H200).
    Both kernels evaluate the same fp32 expression per element and give the same
    bits (docs/design.md, "Exactness decisions"); so do the CPU kernels (tested).
    """
    out = F.interpolate(
        grid.permute(0, 3, 1, 2).float().contiguous(memory_format=torch.channels_last),
        size=(size, size),
        mode="bilinear",
        align_corners=False,
    ).to(grid.dtype)
    return out.permute(0, 2, 3, 1).flatten(1, 2)


def lookup_pixels(frames: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """(N, H, W, C) uint8 frames -> (N, C, H, W) pixels ``table[value, channel]``.

    The table holds the processor's rescale + normalisation of every uint8
    value per channel, so the lookup is exact. Indices are int32 (half of
    int64's memory on 420-frame videos).
    """
    channels = frames.shape[-1]
    offsets = torch.arange(channels, dtype=torch.int32, device=frames.device)
    index = frames.to(torch.int32) * channels + offsets
    pixels = F.embedding(index, table.reshape(-1, 1)).squeeze(-1)
    # contiguous NCHW like the original's pixels (the conv kernel follows the layout)
    return pixels.permute(0, 3, 1, 2).contiguous()


class QuicksviewerPosEmbed3D(nn.Module):
    """The resampler's 3D sin-cos key positions, built from 1D tables.

    The original materialises a (300, 24, 24, D) fp32 table on the CPU (2.5 GB
    for D=3584) and regrows it for longer videos. Every entry is the
    concatenation of three independent 1D tables ([2/8 time, 3/8 row, 3/8 col]
    of D), so gathering from the 1D tables gives bit-identical values without
    the big buffer, for any frame index. The tables are computed on the CPU like
    the original's and copied (bit-exact) to the device once.
    """

    def __init__(self, embed_dim: int, grid_size: int):
        super().__init__()
        if embed_dim % 8 != 0:
            raise ValueError(f"resampler width {embed_dim} must be divisible by 8")
        self.embed_dim = embed_dim
        self.dim_t = embed_dim // 8 * 2
        self.dim_hw = embed_dim // 8 * 3
        self.num_tokens = grid_size * grid_size
        spatial = _sincos_1d(
            self.dim_hw, torch.arange(grid_size, dtype=torch.float32, device="cpu")
        )
        row = spatial[:, None, :].expand(grid_size, grid_size, self.dim_hw)
        col = spatial[None, :, :].expand(grid_size, grid_size, self.dim_hw)
        self._spatial = torch.cat([row, col], dim=-1).reshape(self.num_tokens, -1)
        self._time = torch.empty(0, self.dim_t)
        self._device_tables = {}

    def _tables(self, end: int, device: torch.device):
        if self._time.shape[0] < end:
            size = max(end, 2 * self._time.shape[0], 300)
            positions = torch.arange(size, dtype=torch.float32, device="cpu")
            self._time = _sincos_1d(self.dim_t, positions)
            self._device_tables.clear()
        if device not in self._device_tables:
            self._device_tables[device] = (
                self._spatial.to(device),
                self._time.to(device),
            )
        return self._device_tables[device]

    def forward(
        self, start: int, end: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """Positions of frames [start, end) as (n * grid^2, D)."""
        spatial, time = self._tables(end, device)
        n, hw = end - start, self.num_tokens
        pos = torch.cat(
            [
                time[start:end, None, :].expand(n, hw, self.dim_t),
                spatial[None].expand(n, hw, spatial.shape[-1]),
            ],
            dim=-1,
        )
        return pos.reshape(n * hw, self.embed_dim).to(dtype)


class QuicksviewerResampler(BaseResampler):
    """Perceiver resampler with 3D positions added to the keys only.

    The parameters are MiniCPM-V's ``BaseResampler`` (the same names, so the
    original's weights load strictly). ``nn.MultiheadAttention`` is kept on
    purpose: the original calls it with ``need_weights=True`` and a key padding
    mask, which selects PyTorch's explicit attention math, and parity depends on
    the same kernel sequence.
    """

    def __init__(
        self,
        config: QuicksviewerConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ):
        embed_dim = config.text_config.hidden_size
        kv_dim = config.vision_config.hidden_size
        super().__init__(
            num_queries=config.num_queries,
            embed_dim=embed_dim,
            num_heads=config.resampler_num_heads,
            kv_dim=kv_dim,
            quant_config=quant_config,
            prefix=prefix,
        )
        if kv_dim == embed_dim:
            # BaseResampler drops kv_proj at equal widths; the original keeps it
            self.kv_proj = ReplicatedLinear(
                kv_dim,
                embed_dim,
                bias=False,
                quant_config=quant_config,
                prefix=add_prefix("kv_proj", prefix),
            )
        self.pos_embed = QuicksviewerPosEmbed3D(embed_dim, config.vision_feature_size)

    def forward(self, features: torch.Tensor, frame_start: int = 0) -> torch.Tensor:
        """features: (B, n * grid^2, C) vision features of B cubes or tiles of n
        frames starting at absolute frame ``frame_start``; returns (B, Q, D)."""
        batch, length, _ = features.shape
        frame_end = frame_start + length // self.pos_embed.num_tokens
        pos = self.pos_embed(frame_start, frame_end, features.dtype, features.device)
        x, _ = self.kv_proj(features)
        x = self.ln_kv(x).permute(1, 0, 2)
        q = self._repeat(self.ln_q(self.query), batch)
        key_padding_mask = torch.zeros(
            (batch, length), dtype=torch.bool, device=x.device
        )
        out = self.attn(q, x + pos.unsqueeze(1), x, key_padding_mask=key_padding_mask)[
            0
        ]
        return self.ln_post(out.permute(1, 0, 2)) @ self.proj


def select_cubes(
    scores: torch.Tensor, num_frames: int, frames_per_cube: int = 5
) -> torch.Tensor:
    """Straight-through cube-start weights (N,), non-zero where a cube starts:
    frame 0, then the ``num_cube_boundaries`` highest boundary ``scores``
    ((N - 1,), P(cube starts at frame j), j = 1..N-1).

    The original runs ``topk`` on CUDA, which returns the lowest index among
    equal scores (bf16 scores tie often); a stable descending sort gives that
    order on every device.
    """
    k = num_cube_boundaries(num_frames, frames_per_cube)
    order = torch.sort(scores, descending=True, stable=True).indices[:k]
    hard = torch.zeros_like(scores).scatter_(0, order, 1)
    hard = (hard - scores) + scores
    return torch.cat([torch.ones_like(hard[:1]), hard])


class QuicksviewerCubing(nn.Module):
    """Momentum cubing head and thumbnail of the original ``Cubing`` module."""

    def __init__(
        self,
        config: QuicksviewerConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ):
        super().__init__()
        dim = config.vision_config.hidden_size
        self.momentum = config.cubing_momentum
        self.frames_per_cube = config.cubing_frames_per_cube
        self.temperature = config.cubing_temperature

        def linear(name: str, out_dim: int, in_dim: int = dim) -> ReplicatedLinear:
            return ReplicatedLinear(
                in_dim,
                out_dim,
                quant_config=quant_config,
                prefix=add_prefix(name, prefix),
            )

        self.agg_frame = linear("agg_frame", dim)
        self.proj_norm = nn.LayerNorm(dim)
        self.proj_fc1 = linear("proj_fc1", dim)
        self.proj_act = nn.GELU()
        self.proj_fc2 = linear("proj_fc2", 2)
        self.thumbnail_proj = linear("thumbnail_proj", config.text_config.hidden_size)

    def boundary_scores(self, video: torch.Tensor) -> torch.Tensor:
        """P(cube starts at frame j), j = 1..N-1, in the model dtype.

        The momentum recursion keeps the original eager op order and dtype:
        m_1 = v_1 - v_0, m_i = a * (v_i - v_{i-1}) + (1 - a) * m_{i-1}.
        """
        alpha = self.momentum
        diffs = video[1:] - video[:-1]
        scaled = alpha * diffs
        momentum = torch.empty_like(diffs)
        momentum[0] = diffs[0]
        for i in range(1, diffs.shape[0]):
            momentum[i] = scaled[i] + (1 - alpha) * momentum[i - 1]
        feats, _ = self.agg_frame(momentum)
        feats = self.proj_norm(feats.mean(dim=1))
        feats, _ = self.proj_fc1(feats)
        logits, _ = self.proj_fc2(self.proj_act(feats))
        return F.softmax(logits / self.temperature, dim=-1)[:, 1]

    def thumbnail(
        self, video: torch.Tensor, weights: torch.Tensor, total: float
    ) -> torch.Tensor:
        """Weighted mean of the cube-start frames, pooled to 64 tokens: (1, Q, D).

        The original divides by ``weights.sum().item()`` on CUDA, where dividing
        by a host scalar is a multiplication by its fp32 reciprocal; doing the
        same here gives the original's numbers on every device.
        """
        inv_total = float(np.float32(1.0) / np.float32(total))
        mean = (video * weights[:, None, None] * inv_total).sum(0, keepdim=True)
        pooled = F.avg_pool2d(mean, kernel_size=(9, 1), stride=(9, 1))
        out, _ = self.thumbnail_proj(pooled)
        return out


def video_segments(
    timestamps: Sequence[float], starts: Sequence[int], scores: Sequence[float]
) -> dict:
    """The cubing of one video as a request with ``return_segments`` gets it.

    ``timestamps``: the sampled frames' timestamps in seconds (those of the
    prompt); one cube per start, over the sampled frames ``[start_frame,
    end_frame)``, with ``start_s`` and ``end_s`` the timestamps of its first and
    its last frame; ``boundary_scores``: per sampled frame, the cubing network's
    probability that a cube starts there (the ``scores`` of frames 1..N-1, of
    which the highest ``num_cube_boundaries`` became starts), None for frame 0,
    which always starts one.
    """
    ends = list(starts[1:]) + [len(timestamps)]
    cubes = [
        {
            "start_frame": start,
            "end_frame": end,
            "start_s": timestamps[start],
            "end_s": timestamps[end - 1],
        }
        for start, end in zip(starts, ends)
    ]
    return {
        "timestamps": list(timestamps),
        "cubes": cubes,
        "boundary_scores": [None, *scores],
    }


_COUNTERS = {}


def _lookup_counter(name: str):
    """One Prometheus counter per cache and process (SGLang's multiprocess mode
    collects it into /metrics)."""
    if name not in _COUNTERS:
        from prometheus_client import Counter

        _COUNTERS[name] = Counter(
            name=f"sglang:quicksviewer_{name.replace(' ', '_')}_lookups_total",
            documentation=f"Quicksviewer {name} lookups by result (hit or miss).",
            labelnames=["result"],
        )
    return _COUNTERS[name]


def encoder_sm_count(setting: str, total: int) -> Optional[int]:
    """SMs of the encoder's green context for ``SGLANG_QSV_ENCODER_SMS``, or None
    for none (the encoder may use every SM).

    ``auto`` (default): half of them, rounded down to a multiple of 8 (the SM
    granularity of green contexts on Hopper): 64 of the H200's 132. ``all``: no
    green context. A number: that many SMs (at least 8, fewer than ``total``).
    """
    setting = setting.strip().lower()
    if setting == "all":
        return None
    if setting == "auto":
        count = total // 2 // 8 * 8
        return count if count >= 8 else None
    try:
        count = int(setting)
    except ValueError:
        count = 0
    if not 8 <= count < total:
        raise ValueError(
            f"SGLANG_QSV_ENCODER_SMS={setting!r}: give auto, all or a number of SMs "
            f"from 8 to {total - 1} (this GPU has {total})"
        )
    return count


def encoder_stream(device: torch.device):
    """The CUDA stream on which the encoder's worker thread (prefetch_mm_inputs)
    encodes while other requests decode, and its green context (keep it alive),
    or (None, None).

    On a stream of its own the encoder's kernels interleave with the decode's, but
    a Hopper GEMM keeps persistent blocks on every SM until it ends, so each kernel
    of a decode step can wait for a whole encoder GEMM: a running stream got 0.29 s
    gaps while a 420-frame video was encoded on the H200 (docs/performance.md),
    with the forward stream at the highest priority (patch 0011) too. A CUDA green
    context confines the encoder to ``encoder_sm_count`` SMs, so the decode always
    has SMs of its own. When green contexts are not available (driver, build, MIG)
    there is none, and the encoder shares every SM.
    """
    total = torch.cuda.get_device_properties(device).multi_processor_count
    sms = encoder_sm_count(os.environ.get("SGLANG_QSV_ENCODER_SMS", "auto"), total)
    if sms is None:
        return None, None
    try:
        from torch.cuda.green_contexts import GreenContext

        # keywords: torch 2.14 (SGLang 0.5.23) takes them only
        context = GreenContext.create(num_sms=sms, device_id=device.index or 0)
        raw = context.Stream()
        if isinstance(raw, torch.cuda.Stream):  # torch >= 2.14: already one
            stream = raw
        else:  # torch 2.11 (SGLang 0.5.17): a generic torch.Stream
            stream = torch.cuda.Stream(
                stream_id=raw.stream_id,
                device_index=raw.device_index,
                device_type=raw.device_type,
            )
        with torch.cuda.stream(stream):  # fail here, not in the first request
            probe = torch.ones(8, device=device) * 2
        stream.synchronize()
        del probe
    except Exception as exc:  # any failure: the plain stream
        logger.warning(
            "Quicksviewer: no green context of %d SMs for the encoder (%s); it "
            "shares every SM with the decode",
            sms,
            exc,
        )
        return None, None
    logger.info("Quicksviewer: the encoder runs on %d of %d SMs", sms, total)
    return stream, context


class QuicksviewerVisualCache:
    """Cube starts, boundary scores and visual embeddings of videos already seen,
    by content.

    The key is the processor's SHA-256 of the decoded frames, their timestamps
    and the preprocessing, so two videos that differ in one pixel of one sampled
    frame, or in the sampling, never share an entry. Bounded in bytes (least
    recently used out first); ``SGLANG_QSV_VISUAL_CACHE_MB`` sets the bound
    (0 disables it). Every TP rank sees the same requests in the same order and
    normally makes the same hit or miss decision; where ranks differ (e.g. an
    eviction raced an encode) only the timing changes: the scheduler admits a
    request when it is ready on every rank (patch 0010), and the embeddings are
    the same either way.
    """

    def __init__(
        self, capacity_bytes: int, name: str = "visual cache", metrics: bool = False
    ):
        self.capacity = capacity_bytes
        self.name = name
        self.used = 0
        self.hits = self.misses = 0
        self._entries: "OrderedDict[str, Tuple[object, int]]" = OrderedDict()
        # the processor's frame cache is used from several worker threads
        self._lock = threading.Lock()
        # with --enable-metrics: sglang:quicksviewer_<name>_lookups_total{result}
        self._counter = _lookup_counter(name) if metrics else None

    @classmethod
    def from_env(
        cls,
        variable: str = "SGLANG_QSV_VISUAL_CACHE_MB",
        default_mb: float = 2048,
        name: str = "visual cache",
        metrics: bool = False,
    ) -> "QuicksviewerVisualCache":
        megabytes = float(os.environ.get(variable, default_mb))
        return cls(int(megabytes * 2**20), name, metrics)

    def get(self, key: Optional[str]):
        if key is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self.misses += 1
            else:
                self._entries.move_to_end(key)
                self.hits += 1
            self._log()
        if self._counter is not None:
            self._counter.labels(result="miss" if entry is None else "hit").inc()
        return None if entry is None else entry[0]

    def put(self, key: Optional[str], value, nbytes: int) -> None:
        if key is None or nbytes > self.capacity:
            return
        with self._lock:
            if key in self._entries:
                return
            while self.used + nbytes > self.capacity:
                _, (_, size) = self._entries.popitem(last=False)
                self.used -= size
            self._entries[key] = (value, nbytes)
            self.used += nbytes

    def __len__(self) -> int:
        return len(self._entries)

    def _log(self) -> None:
        logger.info(
            "Quicksviewer %s: %d hits, %d misses, %d entries, %.1f MiB",
            self.name,
            self.hits,
            self.misses,
            len(self._entries),
            self.used / 2**20,
        )


def _padding(item: MultimodalDataItem, length: int) -> List[int]:
    """``length`` pad tokens of ``item``: its repeating sentinels where SGLang has
    them (0.5.23: ``padding_sequence``, which the embedding mask matches), else its
    one ``pad_value`` (0.5.17)."""
    if hasattr(type(item), "padding_sequence"):
        return item.padding_sequence(length)
    return [item.pad_value] * length


class QuicksviewerForCausalLM(nn.Module):
    hf_to_sglang_mapper = WeightsMapper(
        orig_to_new_substr={
            "self_attn.out_proj.": "self_attn.proj.",
            "agg_frame_fn.0.": "agg_frame.",
            "proj_fn.0.": "proj_norm.",
            "proj_fn.1.": "proj_fc1.",
            "proj_fn.3.": "proj_fc2.",
            "thumbnail_fn.1.": "thumbnail_proj.",
        },
        orig_to_new_prefix={
            # features are taken before post_layernorm; the MAP head is unused
            "model.vision_tower.vision_tower.vision_model.post_layernorm.": None,
            "model.vision_tower.vision_tower.vision_model.head.": None,
            "model.vision_tower.vision_tower.vision_model.": "vision_tower.",
            "model.vision_resampler.": "resampler.",
            "model.cubing.": "cubing.",
            "model.": "language_model.model.",
            "lm_head.": "language_model.lm_head.",
        },
    )

    def __init__(
        self,
        config: QuicksviewerConfig,
        quant_config: Optional[QuantizationConfig] = None,
        prefix: str = "",
    ) -> None:
        super().__init__()
        self.config = config
        # The visual encoder runs in pad_input_ids, outside the forward pass, so
        # it is replicated on every TP rank: no collectives between batches.
        self.vision_tower = Idefics2VisionTransformer(
            config.vision_config,
            require_post_norm=False,
            use_data_parallel=True,
            # the original tower runs PyTorch SDPA
            softmax_in_single_precision=False,
            prefix=add_prefix("vision_tower", prefix),
        )
        self.cubing = QuicksviewerCubing(config, prefix=add_prefix("cubing", prefix))
        self.resampler = QuicksviewerResampler(
            config, prefix=add_prefix("resampler", prefix)
        )
        language_model_class = LANGUAGE_MODELS[config.text_config.model_type]
        self.language_model = language_model_class(
            config.text_config,
            quant_config=quant_config,
            prefix=add_prefix("language_model", prefix),
        )
        self.feature_size = config.vision_feature_size
        self.visual_cache = QuicksviewerVisualCache.from_env(
            metrics=getattr(get_server_args(), "enable_metrics", False)
        )

    def get_input_embeddings(self) -> nn.Embedding:
        return self.language_model.get_input_embeddings()

    # ------------------------------------------------------------------ vision
    def encode_frames(
        self, frames: torch.Tensor, pixel_table: torch.Tensor
    ) -> torch.Tensor:
        """SigLIP features of (B, H, W, 3) uint8 frames as (B, 24 * 24, C).

        The processor sends the frames already resized (4x smaller than fp32
        pixels) and the (256, 3) fp16 table of its rescale + normalisation; the
        lookup gives the fp16 pixels the original rounds to before casting them
        to the tower dtype. Every patch is valid, so the tower runs without a
        patch mask (no attention mask, the same SDPA call as the original).
        """
        weight = self.vision_tower.embeddings.patch_embedding.weight
        pixel_values = lookup_pixels(
            frames.to(weight.device, non_blocking=True),
            pixel_table.to(weight.device),
        ).to(weight.dtype)
        batch = pixel_values.shape[0]
        side = self.vision_tower.embeddings.num_patches_per_side
        hidden = self.vision_tower(pixel_values)
        return resize_patch_grid(hidden.view(batch, side, side, -1), self.feature_size)

    @torch.no_grad()
    def encode_video(
        self, frames: torch.Tensor, pixel_table: torch.Tensor
    ) -> Tuple[torch.Tensor, List[int], List[float]]:
        """Cube a video of N >= 2 frames ((N, H, W, 3) uint8, see encode_frames).

        Returns the (K + 1, Q, D) embeddings (thumbnail first, then one block per
        cube), the K cube start frames and the N - 1 boundary scores of frames
        1..N-1 (reported with the segments).
        """
        video = self.encode_frames(frames, pixel_table)
        num_frames = video.shape[0]
        scores = self.cubing.boundary_scores(video)
        weights = select_cubes(scores, num_frames, self.cubing.frames_per_cube)
        # The layout depends on the cubes: one device-to-host copy per video
        # (the cube-start weights, their sum, the scores for the segments).
        host = torch.cat([weights, weights.sum()[None], scores]).tolist()
        host_weights, total = host[:num_frames], host[num_frames]
        starts = [i for i, w in enumerate(host_weights) if w != 0]
        ends = starts[1:] + [num_frames]
        blocks = [self.cubing.thumbnail(video, weights, total)]
        for start, end in zip(starts, ends):
            cube = video[start:end].reshape(1, -1, video.shape[-1])
            blocks.append(self.resampler(cube, frame_start=start))
        return torch.cat(blocks), starts, host[num_frames + 1 :]

    def get_image_feature(self, items: List[MultimodalDataItem]) -> torch.Tensor:
        """Every anyres tile is one 64-token block (no cubing, frame index 0)."""
        frames = torch.cat([item.feature for item in items])
        pixel_table = items[0].model_specific_data[QuicksviewerVideoItem.PIXEL_TABLE]
        features = self.encode_frames(frames, pixel_table)
        return self.resampler(features).flatten(0, 1)

    def get_video_feature(self, items: List[MultimodalDataItem]) -> torch.Tensor:
        # Videos are encoded in pad_input_ids; their items always carry
        # precomputed_embeddings, so the embedding routine never calls this.
        raise RuntimeError(
            "Quicksviewer video items must carry precomputed embeddings "
            "(set by pad_input_ids)"
        )

    # -------------------------------------------------------------- layout
    def pad_input_ids(self, input_ids: Sequence[int], mm_inputs: MultimodalInputs):
        """Write the final prompt layout and the pad values of every item.

        The processor emits, per video, a thumbnail run (unless the checkpoint
        has ``use_thumbnail: false``) and one run of K * Q placeholders. Here the
        video is cubed, each cube's run is preceded by the token ids of its first
        frame's timestamp (exactly as the original keeps them; frame 0's are
        already in the prompt, in the original's chunk before the first frame),
        the item gets one offset per 64-token block and its embeddings as
        ``precomputed_embeddings``. Image runs are only padded.

        Every video's cubes (from this encode or the visual cache) are also
        reported in ``mm_inputs.segments``, in prompt order, for requests that
        ask for them (``return_segments``).

        Returns ``array("q")``, which SGLang 0.5.23 requires (0.5.17 accepts it).
        """
        items = sorted(mm_inputs.mm_items, key=lambda item: item.offsets[0][0])
        out: List[int] = []
        segments = []
        cursor = 0
        for item in items:
            first, last = item.offsets[0][0], item.offsets[-1][1]
            out.extend(input_ids[cursor:first])
            shift = len(out) - first
            if item.is_video():
                item.offsets, starts, scores = self._layout_video(item, input_ids, out)
                timestamps = item.model_specific_data[QuicksviewerVideoItem.TIMESTAMPS]
                segments.append(video_segments(timestamps, starts, scores))
            else:
                item.offsets = [(s + shift, e + shift) for s, e in item.offsets]
                out.extend(input_ids[first : last + 1])
                for s, e in item.offsets:
                    out[s : e + 1] = _padding(item, e - s + 1)
            cursor = last + 1
        out.extend(input_ids[cursor:])
        mm_inputs.segments = segments
        return array("q", out)

    def _layout_video(
        self, item: MultimodalDataItem, input_ids: Sequence[int], out: List[int]
    ) -> Tuple[List[Tuple[int, int]], List[int], List[float]]:
        """Append a video's layout to ``out``; its offsets, cube starts and
        boundary scores."""
        # the runs of a QuicksviewerVideoItem: the thumbnail (if any), the cubes
        if self.config.use_thumbnail:
            (_, thumb_end), (cubes_start, _) = item.offsets
        else:
            ((cubes_start, _),) = item.offsets
        num_frames = item.feature.shape[0]
        # encoded off the event loop by prefetch_mm_inputs, else encode here
        data = item.model_specific_data
        prefetched = data.pop(QuicksviewerVideoItem.ENCODED, None)
        encoded = prefetched or self._encode_video_item(item, lookup=True)
        embeddings, starts, scores, timing = encoded
        num_queries = embeddings.shape[1]
        timestamps = data[QuicksviewerVideoItem.TIMESTAMP_TOKEN_IDS]
        offsets = []
        if self.config.use_thumbnail:
            offsets.append((len(out), len(out) + num_queries - 1))
            out.extend(_padding(item, num_queries))
            out.extend(input_ids[thumb_end + 1 : cubes_start])
        else:
            embeddings = embeddings[1:]
        for start in starts:
            out.extend(timestamps[start])
            offsets.append((len(out), len(out) + num_queries - 1))
            out.extend(_padding(item, num_queries))
        if embeddings.is_cuda:
            # The embeddings are complete (_encode_video_item); they may come
            # from the encoder's side stream, and are used on this thread's.
            embeddings.record_stream(torch.cuda.current_stream())
        item.precomputed_embeddings = embeddings.flatten(0, 1)
        item.feature = None
        if QuicksviewerVideoItem.T_MEDIA_DONE in data:  # SGLANG_QSV_TIMING=1
            record = {
                "stage": "encoder",
                "frames": num_frames,
                "t_media_done": data[QuicksviewerVideoItem.T_MEDIA_DONE],
                **timing,
                "async": prefetched is not None,
                "t_layout": time.time(),
            }
            logger.warning("qsv-timing %s", json.dumps(record))
        return offsets, starts, scores

    def _encode_video_item(self, item: MultimodalDataItem, lookup: bool):
        """(embeddings, cube starts, boundary scores, timing) of a video item,
        from the visual cache or the encoder, complete on return (the encoder
        runs on the current thread's stream, synchronised before the result is
        cached)."""
        key = item.model_specific_data.get(QuicksviewerVideoItem.CONTENT_DIGEST)
        t_start, t0 = time.time(), time.perf_counter()
        cached = self.visual_cache.get(key) if lookup else None
        if cached is None:
            embeddings, starts, scores = self.encode_video(
                item.feature,
                item.model_specific_data[QuicksviewerVideoItem.PIXEL_TABLE],
            )
            if embeddings.is_cuda:
                # the prefill and other requests (cache hits) use other streams
                torch.cuda.current_stream().synchronize()
            self.visual_cache.put(key, (embeddings, starts, scores), embeddings.nbytes)
        else:
            embeddings, starts, scores = cached
        timing = {
            "t_start": t_start,
            "seconds": round(time.perf_counter() - t0, 4),
            "cache_hit": cached is not None,
            "t_end": time.time(),
        }
        return embeddings, starts, scores, timing

    # ------------------------------------------- encoding off the event loop
    def prefetch_mm_inputs(
        self, mm_inputs: MultimodalInputs, busy: bool = False
    ) -> Optional[Future]:
        """Encode the request's videos off the scheduler's event loop.

        The scheduler calls this on every TP rank for every new multimodal
        request and parks the request until the returned future is done on all
        ranks; pad_input_ids then takes each video's embeddings and cube starts
        from the item (``model_specific_data["qsv_encoded"]``), so a visual
        cache eviction in between cannot cause a second encode. Every request
        with a video gets a future, already done on a cache hit, so that
        parking depends on the request alone. None (pad at once): no video,
        ``SGLANG_QSV_ASYNC_ENCODE=0``, or a device other than CUDA and CPU.

        One worker thread encodes (one video at a time: bounded activation
        memory), on CUDA on its own stream: on every SM when nothing else runs,
        on part of them (``encoder_stream``) when the scheduler says other
        requests are decoding (``busy``, patch 0012). It runs no collective: the
        visual stack is replicated on every rank.
        """
        videos = [item for item in mm_inputs.mm_items if item.is_video()]
        device = self.vision_tower.embeddings.patch_embedding.weight.device
        if (
            not videos
            or os.environ.get("SGLANG_QSV_ASYNC_ENCODE", "1") == "0"
            or device.type not in ("cuda", "cpu")
        ):
            return None
        if getattr(self, "_encode_executor", None) is None:
            self._encode_executor = ThreadPoolExecutor(1, "qsv-encoder")
            # on CUDA: a stream on every SM, for a video that arrives while
            # nothing else runs, and one on part of them (a green context, which
            # must outlive its stream) for one that arrives while others decode
            cuda = device.type == "cuda"
            self._encode_stream = torch.cuda.Stream(device) if cuda else None
            self._shared_stream, self._encode_context = (
                encoder_stream(device) if cuda else (None, None)
            )
            # content digests being encoded by a submitted request
            self._encoding = set()
        work, added = [], set()
        for item in videos:
            key = item.model_specific_data.get(QuicksviewerVideoItem.CONTENT_DIGEST)
            if key is not None and key in self._encoding:
                # an earlier request encodes it: look it up once that is done
                work.append((item, True))
                continue
            cached = self.visual_cache.get(key)
            if cached is not None:
                now = time.time()
                timing = {"t_start": now, "seconds": 0.0, "cache_hit": True}
                item.model_specific_data[QuicksviewerVideoItem.ENCODED] = (
                    *cached,
                    {**timing, "t_end": now},
                )
                continue
            if key is not None:
                self._encoding.add(key)
                added.add(key)
            work.append((item, False))
        if not work:
            done = Future()
            done.set_result(None)
            return done
        # Grow the resampler's position tables here, on the scheduler thread
        # (which also runs the image forward), so the worker only reads them.
        frames = max(item.feature.shape[0] for item, _ in work)
        self.resampler.pos_embed._tables(frames, device)
        ready = None
        if self._encode_stream is not None:
            # the frames may still be copied on this thread's stream (CUDA IPC)
            ready = torch.cuda.Event()
            ready.record()
        stream = self._encode_stream
        if busy and self._shared_stream is not None:
            stream = self._shared_stream
        future = self._encode_executor.submit(self._encode_videos, work, ready, stream)
        # also when an abort cancels it before it starts
        future.add_done_callback(lambda _: self._encoding.difference_update(added))
        return future

    def _encode_videos(
        self,
        work,
        ready: Optional["torch.cuda.Event"],
        stream: Optional["torch.cuda.Stream"],
    ) -> None:
        """The worker thread's part of prefetch_mm_inputs."""
        with (
            torch.inference_mode(),
            torch.cuda.stream(stream) if stream is not None else nullcontext(),
        ):
            if ready is not None:
                stream.wait_event(ready)
            for item, lookup in work:
                item.model_specific_data[QuicksviewerVideoItem.ENCODED] = (
                    self._encode_video_item(item, lookup)
                )

    # ------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        forward_batch: ForwardBatch,
        input_embeds: Optional[torch.Tensor] = None,
        get_embedding: bool = False,
    ):
        return general_mm_embed_routine(
            input_ids=input_ids,
            forward_batch=forward_batch,
            language_model=self.language_model,
            multimodal_model=self,
            data_embedding_funcs={Modality.IMAGE: self.get_image_feature},
            positions=positions,
            get_embedding=get_embedding,
        )

    def load_weights(self, weights: Iterable[Tuple[str, torch.Tensor]]):
        stacked_params_mapping = [
            # (param_name, shard_name, shard_id)
            ("qkv_proj", "q_proj", "q"),
            ("qkv_proj", "k_proj", "k"),
            ("qkv_proj", "v_proj", "v"),
        ]
        params_dict = dict(self.named_parameters())
        language_weights = []
        for name, loaded_weight in self.hf_to_sglang_mapper.apply(weights):
            if name.startswith("language_model."):
                language_weights.append((name[len("language_model.") :], loaded_weight))
                continue
            if name.startswith("vision_tower."):
                for param_name, shard_name, shard_id in stacked_params_mapping:
                    if shard_name in name:
                        name = name.replace(shard_name, param_name)
                        param = params_dict[name]
                        param.weight_loader(param, loaded_weight, shard_id)
                        break
                else:
                    self._load_plain(params_dict, name, loaded_weight)
                continue
            self._load_plain(params_dict, name, loaded_weight)
        self.language_model.load_weights(language_weights)

    @staticmethod
    def _load_plain(params_dict, name: str, loaded_weight: torch.Tensor) -> None:
        if name not in params_dict:
            raise ValueError(f"Unexpected Quicksviewer weight: {name}")
        param = params_dict[name]
        weight_loader = getattr(param, "weight_loader", default_weight_loader)
        weight_loader(param, loaded_weight)


EntryClass = [QuicksviewerForCausalLM]
