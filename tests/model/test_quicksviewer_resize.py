"""The torch reimplementation of Pillow's uint8 BICUBIC resize and of SigLIP's
normalisation (``sglang.srt.multimodal.quicksviewer_resize``) against the
installed Pillow 12 and ``SiglipImageProcessorPil``, byte for byte:

* ``resize_bicubic`` of random and structured frames (gradients, checkerboards,
  0/255 edges and stripes that ring past the uint8 range) of video sizes,
  portrait, odd, one-pass, no-op, upscaling and very tall images, to 384x384
  and to other sizes, equals ``Image.resize(..., BICUBIC, reducing_gap=None)``;
* the coefficients of many axis sizes, through one-row and one-column images;
* the CPU int8 engine, its float64 fallback and the float64 dense path of
  CUDA (run here on CPU) give the same bytes;
* ``preprocess_frames`` equals the processor's fp16 pixel values;
* ``resize_image`` equals ``image.resize((w, h))`` for anyres-style resizes;
* results do not change when called from 1, 2 and 8 threads at once;
* on CUDA (when there is one), the same bytes as on CPU.

The expectations are Pillow <= 12's: Pillow 13 orders the two passes of some
resizes differently, so these tests require Pillow 12 (the project pins 12.3.0).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import PIL
import pytest
import torch
from PIL import Image
from sglang.srt.multimodal import quicksviewer_resize as qr
from sglang.srt.multimodal.quicksviewer_resize import (
    PixelNormalizer,
    preprocess_frames,
    resize_bicubic,
    resize_coefficients,
    resize_image,
)

TILE = 384


def pillow_major() -> int:
    return int(PIL.__version__.split(".")[0])


def require_pillow_12() -> None:
    assert pillow_major() < 13, (
        f"these expectations are Pillow <= 12's, found Pillow {PIL.__version__} "
        "(the project pins 12.3.0)"
    )


def test_pillow_is_older_than_13():
    require_pillow_12()


# ------------------------------------------------------------------ frames
def structured_frames(h: int, w: int, seed: int) -> np.ndarray:
    """(K, h, w, 3) uint8: random, gradients, checkerboards, 0/255 edges."""
    rng = np.random.default_rng(seed)
    y = np.arange(h)[:, None, None]
    x = np.arange(w)[None, :, None]
    c = np.arange(3)[None, None, :]
    frames = [
        rng.integers(0, 256, (h, w, 3)),
        (x * 255 // max(w - 1, 1) + 0 * y + 40 * c) % 256,  # horizontal gradient
        (y * 255 // max(h - 1, 1) + 0 * x + 85 * c) % 256,  # vertical gradient
        (x + y + 7 * c) % 256,  # diagonal ramps
        ((x + y + c) % 2) * 255,  # 1-pixel checkerboard, 0/255
        (((x // 8) + (y // 8) + c) % 2) * 255,  # 8-pixel checkerboard
        np.where((x > w // 3) ^ (c == 1), 255, 0) + 0 * y,  # vertical edge
        np.where((y > h // 2) ^ (c == 2), 0, 255) + 0 * x,  # horizontal edge
        np.broadcast_to((x % 3 == 0) * 255, (h, w, 3)),  # stripes: clip8 both ends
        rng.choice([0, 255], (h, w, 3)),  # binary noise: maximal ringing
        np.full((h, w, 3), 255),
        np.zeros((h, w, 3)),
    ]
    out = np.stack([np.broadcast_to(f, (h, w, 3)) for f in frames]).astype(np.uint8)
    return np.ascontiguousarray(out)


def pil_resize(frames: np.ndarray, out_w: int, out_h: int) -> np.ndarray:
    mode = "RGB" if frames.shape[-1] == 3 else "L"
    out = []
    for f in frames:
        im = Image.fromarray(f if mode == "RGB" else f[..., 0], mode=mode)
        r = np.array(im.resize((out_w, out_h), Image.BICUBIC, reducing_gap=None))
        out.append(r.reshape(out_h, out_w, -1))
    return np.stack(out)


def assert_resize_matches(frames: np.ndarray, out_w: int, out_h: int, **kw) -> None:
    require_pillow_12()
    expected = pil_resize(frames, out_w, out_h)
    got = resize_bicubic(torch.from_numpy(frames), (out_h, out_w), **kw)
    assert got.dtype == torch.uint8 and got.shape == expected.shape
    got = got.numpy()
    if not np.array_equal(got, expected):
        bad = np.argwhere(got != expected)
        diff = np.abs(got.astype(int) - expected).max()
        pytest.fail(
            f"{frames.shape[2]}x{frames.shape[1]} -> {out_w}x{out_h}: "
            f"{len(bad)} bytes differ (max {diff}), first at {bad[0].tolist()}"
        )


# (width, height) of the source; frames per size kept small for the big ones
VIDEO_SIZES = [
    (640, 360),
    (1280, 720),
    (1920, 1080),
    (360, 640),
    (720, 1280),
    (1080, 1920),
    (480, 640),
    (854, 480),
    (333, 257),
    (17, 1001),
    (1001, 17),
    (384, 384),  # no-op
    (16, 16),  # upscaling
    (100, 50),
    (200, 300),
    (384, 500),  # one pass: vertical only
    (384, 211),
    (500, 384),  # one pass: horizontal only
    (257, 384),
    (1, 1),
    (1, 700),
    (700, 1),
]


@pytest.mark.parametrize("size", VIDEO_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_resize_to_tile_matches_pillow(size):
    w, h = size
    frames = structured_frames(h, w, seed=w * 7919 + h)
    if w * h > 1280 * 720:
        frames = frames[[0, 4, 9]]  # random, checkerboard, binary noise
    assert_resize_matches(frames, TILE, TILE)


# (source w, h) -> (target w, h): other targets, very tall images (Pillow
# 12.3.0 resizes those vertically first), very strong reductions
OTHER_RESIZES = [
    ((640, 360), (200, 113)),
    ((1280, 720), (1152, 648)),
    ((333, 257), (1000, 999)),
    ((50, 40), (7, 300)),
    ((3, 400), (2, 100)),  # taller than 100x its width: vertical first
    ((5, 700), (384, 384)),
    ((4, 401), (9, 37)),
    ((4, 400), (2, 100)),  # exactly 100x: horizontal first
    ((2, 300), (2, 7)),  # tall, vertical only
    ((1, 5000), (3, 4999)),
    ((4000, 2), (17, 2)),  # ~235x reduction, ~1900 taps per output
    ((2, 3000), (2, 9)),
]


@pytest.mark.parametrize("src,dst", OTHER_RESIZES, ids=str)
def test_other_resizes_match_pillow(src, dst):
    frames = structured_frames(src[1], src[0], seed=src[0] + 31 * src[1])
    assert_resize_matches(frames[[0, 3, 9]], *dst)


def test_tall_rule_changes_the_result():
    """The tall cases above test the pass order: horizontal-first differs."""
    frames = structured_frames(400, 3, seed=5)[[0, 9]]
    t = torch.from_numpy(frames)
    h_first = qr._resize(t, 100, 2).numpy()
    assert not np.array_equal(h_first, pil_resize(frames, 2, 100))
    assert np.array_equal(
        resize_bicubic(t, (100, 2)).numpy(), pil_resize(frames, 2, 100)
    )


def test_coefficients_of_many_sizes():
    """One-row images exercise the horizontal coefficients of an axis, and
    one-column images the vertical ones, for many (in, out) pairs."""
    require_pillow_12()
    rng = np.random.default_rng(1)
    pairs = [(i, o) for i in (1, 2, 3, 5, 8, 383, 384, 385, 767) for o in (1, 2, 384)]
    pairs += [
        (int(rng.integers(1, 2500)), int(rng.integers(1, 1200))) for _ in range(150)
    ]
    for n_in, n_out in pairs:
        row = rng.integers(0, 256, (2, 1, n_in, 3), dtype=np.uint8)
        row[1] = np.where(row[1] > 127, 255, 0)
        assert_resize_matches(row, n_out, 1)
        col = np.ascontiguousarray(row.transpose(0, 2, 1, 3))
        assert_resize_matches(col, 1, n_out)


def test_resize_coefficients_api():
    coeffs, bounds = resize_coefficients(640, 384)
    assert coeffs.dtype == np.int32 and bounds.dtype == np.int32
    assert coeffs.shape == (384, 9) and bounds.shape == (384, 2)
    assert not coeffs.flags.writeable and not bounds.flags.writeable
    assert resize_coefficients(640, 384) is resize_coefficients(640, 384)
    for (xmin, count), k in zip(bounds, coeffs):
        assert 0 <= xmin and xmin + count <= 640
        assert not k[count:].any()
        assert abs(int(k.sum()) - (1 << 22)) <= count  # each rounded by <= 1/2
    with pytest.raises(ValueError):
        resize_coefficients(0, 3)


def blocked(engine, frames: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    t = torch.from_numpy(frames)
    out = torch.empty((t.shape[0], out_h, out_w, t.shape[3]), dtype=torch.uint8)
    qr._resize_blocked(engine, t, out_h, out_w, out, False, qr._Sink(None, t.device))
    return out


def dense(frames: np.ndarray, out_h: int, out_w: int) -> torch.Tensor:
    t = torch.from_numpy(frames)
    out = torch.empty((t.shape[0], out_h, out_w, t.shape[3]), dtype=torch.uint8)
    qr._resize_dense(t, out_h, out_w, out, False, qr._Sink(None, t.device))
    return out


@pytest.mark.parametrize("engine", [qr._INT8, qr._F64], ids=["int8", "float64"])
def test_every_cpu_engine_is_exact(engine):
    require_pillow_12()
    if engine.is_int and not qr._int8_matmul_is_exact():
        pytest.skip("this machine's int8 products fail the self-test")
    for (w, h), (ow, oh) in [
        ((640, 360), (384, 384)),
        ((333, 257), (384, 384)),
        ((384, 300), (384, 384)),
        ((100, 384), (384, 384)),
        ((200, 120), (77, 120)),
    ]:
        frames = structured_frames(h, w, seed=3)[[0, 4, 8, 9]]
        got = blocked(engine, frames, oh, ow)
        assert np.array_equal(got.numpy(), pil_resize(frames, ow, oh)), (w, h, ow, oh)


def test_float64_fallback_when_the_int32_bound_fails(monkeypatch):
    def refuse(engine, k, bias):
        if engine.is_int:
            raise OverflowError("test")

    monkeypatch.setattr(qr, "_check_int32", refuse)
    qr._horizontal_plan.cache_clear()
    qr._vertical_plan.cache_clear()
    used = []
    blocked = qr._resize_blocked
    monkeypatch.setattr(
        qr, "_resize_blocked", lambda e, *a: used.append(e) or blocked(e, *a)
    )
    try:
        frames = structured_frames(50, 70, seed=8)[[0, 9]]
        assert_resize_matches(frames, 31, 90)
        assert used[-1] is qr._F64
    finally:
        qr._horizontal_plan.cache_clear()
        qr._vertical_plan.cache_clear()


def test_engine_choice():
    engine = qr._cpu_engine()
    assert engine in (qr._INT8, qr._F64)
    if qr._int8_hardware():
        assert engine is (qr._INT8 if qr._int8_matmul_is_exact() else qr._F64)


def test_dense_float64_path_is_exact_on_cpu():
    """The CUDA algorithm, run on CPU tensors."""
    require_pillow_12()
    # sizes of its own, like the CPU engines' test above only in shape
    for (w, h), (ow, oh) in [
        ((640, 360), (384, 384)),
        ((360, 640), (384, 384)),
        ((16, 16), (384, 384)),
        ((500, 384), (384, 384)),
        ((384, 500), (384, 384)),
    ]:
        frames = structured_frames(h, w, seed=4)[[0, 4, 9]]
        got = dense(frames, oh, ow)
        assert np.array_equal(got.numpy(), pil_resize(frames, ow, oh)), (w, h)


def test_many_frames_in_several_chunks(monkeypatch):
    monkeypatch.setattr(qr, "_CPU_CHUNK_BYTES", 300_000)
    monkeypatch.setattr(qr, "_DENSE_CHUNK_ELEMENTS", 400_000)
    frames = np.concatenate([structured_frames(180, 320, seed=s) for s in range(3)])
    assert_resize_matches(frames, TILE, TILE)  # 36 frames, 3 per chunk
    assert_resize_matches(frames[:5], 320, 100)  # horizontal-only chunks
    got = dense(frames, TILE, TILE)  # 2 frames per chunk
    assert np.array_equal(got.numpy(), pil_resize(frames, TILE, TILE))


def test_non_contiguous_input_and_copies():
    base = structured_frames(200, 300, seed=9)
    view = torch.from_numpy(base).permute(0, 2, 1, 3)  # (N, 300, 200, 3) view
    expected = pil_resize(np.ascontiguousarray(view.numpy()), TILE, TILE)
    assert np.array_equal(resize_bicubic(view, TILE).numpy(), expected)
    same = resize_bicubic(view, (300, 200))
    assert same.is_contiguous() and np.array_equal(same.numpy(), view.numpy())
    assert same.data_ptr() != view.data_ptr()


def test_single_channel_frames():
    frames = structured_frames(90, 160, seed=2)[..., :1].copy()
    assert_resize_matches(frames, TILE, TILE)


def test_input_validation():
    with pytest.raises(ValueError):
        resize_bicubic(torch.zeros((2, 3, 4), dtype=torch.uint8), TILE)
    with pytest.raises(ValueError):
        resize_bicubic(torch.zeros((1, 3, 4, 3), dtype=torch.float32), TILE)
    with pytest.raises(ValueError):
        resize_bicubic(torch.zeros((1, 3, 4, 3), dtype=torch.uint8), (0, 5))
    assert resize_bicubic(torch.zeros((0, 3, 4, 3), dtype=torch.uint8), 5).shape == (
        0,
        5,
        5,
        3,
    )


# ------------------------------------------------------------- normalisation
def siglip_processor():
    from transformers.models.siglip.image_processing_pil_siglip import (
        SiglipImageProcessorPil,
    )

    return SiglipImageProcessorPil(
        size={"height": TILE, "width": TILE},
        resample=3,
        rescale_factor=1 / 255,
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )


def assert_same_half(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.float16 and a.shape == b.shape
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))


@pytest.mark.parametrize(
    "size", [(640, 360), (360, 640), (333, 257), (384, 384), (100, 50), (500, 384)]
)
def test_preprocess_frames_matches_siglip_processor(size):
    require_pillow_12()
    w, h = size
    frames = structured_frames(h, w, seed=11)[[0, 1, 4, 6, 9, 10]]
    processor = siglip_processor()
    expected = processor(
        images=[Image.fromarray(f) for f in frames], return_tensors="pt"
    )
    expected = expected["pixel_values"].to(torch.float16)
    normalizer = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3)
    got = preprocess_frames(torch.from_numpy(frames), (TILE, TILE), normalizer)
    assert_same_half(got, expected)
    # numpy frames through the processor give the same values
    from_arrays = processor(images=list(frames), return_tensors="pt")["pixel_values"]
    assert_same_half(got, from_arrays.to(torch.float16))


def test_normalizer_table_and_other_statistics():
    normalizer = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3)
    assert (
        normalizer.table.shape == (256, 3) and normalizer.table.dtype == torch.float16
    )
    assert normalizer.table[0].tolist() == [-1.0] * 3
    assert normalizer.table[255].tolist() == [1.0] * 3
    # CLIP statistics: every value through the NumPy operations of the processor
    mean, std = [0.48145466, 0.4578275, 0.40821073], [
        0.26862954,
        0.26130258,
        0.27577711,
    ]
    normalizer = PixelNormalizer(0.00392156862745098, mean, std)
    values = np.arange(256, dtype=np.uint8)
    frames = np.broadcast_to(values[None, :, None, None], (1, 256, 4, 3)).copy()
    x = (frames.astype(np.float64) * 0.00392156862745098).astype(np.float32)
    ref = (x - np.array(mean, np.float32)) / np.array(std, np.float32)
    ref = torch.from_numpy(np.ascontiguousarray(ref.transpose(0, 3, 1, 2)))
    assert_same_half(normalizer(torch.from_numpy(frames)), ref.to(torch.float16))


# -------------------------------------------------------------- resize_image
def anyres_size(width: int, height: int, target_w: int, target_h: int):
    """The processor's aspect-preserving resize into a pinpoint."""
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        return target_w, min(math.ceil(height * scale_w), target_h)
    return min(math.ceil(width * scale_h), target_w), target_h


@pytest.mark.parametrize(
    "src,pinpoint",
    [
        ((1000, 700), (768, 768)),
        ((700, 1000), (768, 768)),
        ((1920, 1080), (896, 224)),
        ((640, 480), (448, 448)),
        ((333, 500), (224, 672)),
        ((200, 150), (672, 224)),
    ],
)
def test_resize_image_matches_pil(src, pinpoint):
    require_pillow_12()
    rng = np.random.default_rng(src[0])
    image = Image.fromarray(rng.integers(0, 256, (src[1], src[0], 3), dtype=np.uint8))
    for size in (anyres_size(*src, *pinpoint), (TILE, TILE)):
        got = resize_image(image, size)
        assert got.mode == "RGB" and got.size == size
        assert np.array_equal(np.array(got), np.array(image.resize(size)))
    if src == (1000, 700):
        assert anyres_size(*src, *pinpoint) == (768, 538)
    gray = image.convert("L")
    assert np.array_equal(
        np.array(resize_image(gray, (TILE, TILE))), np.array(gray.resize((TILE, TILE)))
    )
    with pytest.raises(ValueError):
        resize_image(image.convert("RGBA"), (TILE, TILE))


# ------------------------------------------------------------------- threads
@pytest.mark.parametrize("workers", [1, 2, 8])
def test_same_bytes_from_several_threads(workers):
    sizes = [(320, 180), (180, 320), (333, 257), (384, 200)]
    batches = [
        torch.from_numpy(structured_frames(h, w, seed=i)[i % 4 :: 4])
        for i, (w, h) in enumerate(sizes * 4)
    ]
    expected = [
        pil_resize(b.numpy(), TILE, TILE) if i < len(sizes) else None
        for i, b in enumerate(batches)
    ]
    serial = [resize_bicubic(b, TILE) for b in batches]
    for e, s in zip(expected, serial):
        if e is not None:
            assert np.array_equal(s.numpy(), e)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda b: resize_bicubic(b, TILE), batches))
    for r, s in zip(results, serial):
        assert torch.equal(r, s)


# ---------------------------------------------------------------------- CUDA
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_pillow():
    require_pillow_12()
    normalizer = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3)
    for w, h in [(640, 360), (1280, 720), (360, 640), (333, 257), (384, 500), (16, 16)]:
        frames = structured_frames(h, w, seed=12)
        expected = pil_resize(frames, TILE, TILE)
        got = resize_bicubic(torch.from_numpy(frames).cuda(), TILE)
        assert got.is_cuda and np.array_equal(got.cpu().numpy(), expected), (w, h)
        pixels = preprocess_frames(torch.from_numpy(frames).cuda(), TILE, normalizer)
        cpu = preprocess_frames(torch.from_numpy(frames), TILE, normalizer)
        assert pixels.is_cuda
        assert_same_half(pixels.cpu(), cpu)
