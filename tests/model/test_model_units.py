"""Unit facts of the SGLang Quicksviewer model that parity depends on."""

import pytest
import torch
import torch.nn.functional as F
from sglang.srt.configs.quicksviewer import num_cube_boundaries
from sglang.srt.models.quicksviewer import (
    QuicksviewerPosEmbed3D,
    resize_patch_grid,
    select_cubes,
)

from qsv_reference.model import sincos_3d_table


def test_position_table_is_bitwise_the_original():
    for dim, frames in ((128, 320), (3584, 12)):
        # the original resampler_3d.get_3d_sincos_pos_embed, as the reference has it
        table = sincos_3d_table(dim, (frames, 24, 24))
        pos = QuicksviewerPosEmbed3D(dim, 24)
        for start, end in ((0, 1), (3, 9), (frames - 5, frames)):
            ours = pos(start, end, torch.float32, torch.device("cpu"))
            assert torch.equal(ours, table[start:end].reshape(-1, dim))
        # bf16 positions are the rounded fp32 ones
        ours = pos(2, 4, torch.bfloat16, torch.device("cpu"))
        assert torch.equal(ours, table[2:4].reshape(-1, dim).to(torch.bfloat16))


def original_interpolate(features: torch.Tensor, size: int) -> torch.Tensor:
    """SiglipVisionTower.interpolate of the original (siglip_encoder_custom.py):
    an NCHW-contiguous copy, fp32 bilinear, back to the input dtype."""
    b, tokens, dim = features.shape
    side = int(tokens**0.5)
    grid = features.view(b, side, side, dim).permute(0, 3, 1, 2).contiguous()
    grid = F.interpolate(
        grid.to(torch.float32), size=(size, size), mode="bilinear", align_corners=False
    ).to(features.dtype)
    return grid.permute(0, 2, 3, 1).contiguous().flatten(1, 2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float16])
def test_patch_grid_resize_is_bitwise_the_original(dtype):
    # the channels-last input and output take other kernels than the original's
    # NCHW copy; the bits must not change (SigLIP-so400m: 27 -> 24, 1152 channels;
    # odd batches and sizes, few channels, an upscale)
    gen = torch.Generator().manual_seed(0)
    for batch, side, size, dim in (
        (7, 27, 24, 1152),
        (1, 27, 24, 1152),
        (3, 16, 12, 40),
        (2, 9, 14, 3),
        (5, 27, 24, 16),
    ):
        hidden = torch.randn(batch, side * side, dim, generator=gen) * 4
        hidden = hidden.to(dtype)
        ours = resize_patch_grid(hidden.view(batch, side, side, dim), size)
        expected = original_interpolate(hidden, size)
        assert ours.shape == (batch, size * size, dim) and ours.dtype == dtype
        assert torch.equal(ours, expected), (batch, side, size, dim)


def test_boundary_count_formula():
    expected = {2: 1, 7: 1, 8: 1, 12: 1, 13: 2, 60: 11, 420: 83}
    for frames, k in expected.items():
        assert num_cube_boundaries(frames) == k


def test_ties_go_to_the_lowest_frame_like_cuda_topk():
    scores = torch.tensor([0.5, 0.9, 0.9, 0.1, 0.9, 0.9, 0.2], dtype=torch.bfloat16)
    # 13 frames -> k = 2 boundaries among the 4 tied 0.9 scores
    weights = select_cubes(scores, num_frames=13, frames_per_cube=5)
    starts = torch.nonzero(weights).flatten().tolist()
    assert starts == [0, 2, 3]  # frame 0 forced, then frames 1+1 and 1+2
    assert weights[0].item() == 1.0
    assert weights[2].item() == 1.0  # (1 - y) + y is exactly 1 for y >= 0.5


def test_visual_cache_hit_miss_and_lru_eviction_by_bytes():
    from sglang.srt.models.quicksviewer import QuicksviewerVisualCache

    cache = QuicksviewerVisualCache(capacity_bytes=100)
    assert cache.get("a") is None and cache.misses == 1  # miss
    cache.put("a", "A", 40)
    cache.put("b", "B", 40)
    assert cache.get("a") == "A" and cache.hits == 1  # hit; a is now most recent
    cache.put("c", "C", 40)  # 120 > 100: the least recently used (b) goes
    assert cache.get("b") is None and cache.get("a") == "A" and cache.get("c") == "C"
    assert cache.used == 80 and len(cache) == 2
    cache.put("huge", "H", 101)  # larger than the whole cache: never stored
    assert cache.get("huge") is None and len(cache) == 2
    cache.put("a", "other", 10)  # a key is stored once; its value never changes
    assert cache.get("a") == "A"
    # no key (an item without a content digest) is never cached nor counted
    before = (cache.hits, cache.misses)
    cache.put(None, "X", 1)
    assert cache.get(None) is None and (cache.hits, cache.misses) == before


def test_visual_cache_size_from_the_environment(monkeypatch):
    from sglang.srt.models.quicksviewer import QuicksviewerVisualCache

    monkeypatch.setenv("SGLANG_QSV_VISUAL_CACHE_MB", "0")
    disabled = QuicksviewerVisualCache.from_env()
    disabled.put("a", "A", 1)
    assert disabled.get("a") is None
    monkeypatch.setenv("SGLANG_QSV_VISUAL_CACHE_MB", "1.5")
    assert QuicksviewerVisualCache.from_env().capacity == 3 * 2**19


def test_encoder_sm_count():
    """SGLANG_QSV_ENCODER_SMS: auto gives the encoder half the SMs,
    rounded to the green contexts' granularity of 8; all: no green context."""
    from sglang.srt.models.quicksviewer import encoder_sm_count

    assert encoder_sm_count("auto", 132) == 64  # H200: half, to a multiple of 8
    assert encoder_sm_count("auto", 144) == 72
    assert encoder_sm_count("auto", 20) == 8
    assert encoder_sm_count("auto", 14) is None  # too small to split
    assert encoder_sm_count(" ALL ", 132) is None
    assert encoder_sm_count("64", 132) == 64
    for bad in ("7", "132", "many", ""):
        with pytest.raises(ValueError, match="SGLANG_QSV_ENCODER_SMS"):
            encoder_sm_count(bad, 132)
