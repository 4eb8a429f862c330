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
"""Bit-exact torch reimplementation of Pillow 12's uint8 BICUBIC resize and of
SigLIP's rescale + normalisation, for CPU and CUDA tensors.

Quicksviewer preprocesses every frame with transformers'
``SiglipImageProcessorPil``: ``PIL.Image.resize((384, 384), BICUBIC,
reducing_gap=None)``, then ``astype(float64) * rescale_factor``, float32,
``(x - mean) / std`` in float32; the caller rounds to fp16. This module
returns the same bytes without PIL, batched, with the GIL released.

Resize semantics (Pillow 12.3.0, ``libImaging/Resample.c`` and
``Image.resize``), reproduced whatever Pillow is installed:

* coefficients: ``precompute_coeffs`` in double (support ``2 * filterscale``,
  ``filterscale = max(in / out, 1)``, bicubic ``a = -0.5``, each output's
  weights divided by their sequential sum), then ``normalize_coeffs_8bpc``:
  ``(int)(+-0.5 + k * 2**22)``;
* every pass sums ``pixel * k`` in integers from ``2**21`` and stores
  ``clip(sum >> 22, 0, 255)``: the image between the passes is uint8;
* the horizontal pass runs first and a pass whose size does not change is
  skipped; ``Image.resize`` of Pillow 12.2/12.3 resizes an image taller than
  100 times its width (when its height shrinks) vertically first; same size
  returns a copy. Pillow 13 orders the passes differently; not followed here.

Exactness. The sums are integers below ``2**31``; any exact integer
evaluation, in any order, gives Pillow's values. On CPU the passes are int8
matrix products (``torch._int_mm``, int32 accumulation) over windows of the
image: pixels are stored as ``p - 128`` and every coefficient is split into
signed 8-bit (or 7-bit) digits, one product column per digit; the columns are
recombined in int32 (bounded below ``2**31`` per plan). A self-test at first
use checks the int8 product at the extremes of both operands, which catches
saturating int16 kernels; a machine that fails it uses float64 products
instead (exact: all terms are integers below ``2**53``). On CUDA (and other
devices) the passes are float64 matrix products, a few kernels per chunk of
frames; TF32 and reduced-precision float32 settings do not apply to float64.

Threads. Every heavy step is a torch op, which releases the GIL. Calls made
from several Python threads at once scale with the cores as long as the
threads times torch's intra-op threads (``torch.get_num_threads()``) do not
exceed them: call :func:`resize_bicubic` on a whole video from one thread
(the int8 products then use torch's intra-op threads), or run T threads in a
process whose ``torch.set_num_threads`` is ``cores // T``.
"""

import functools
import math
import threading
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

__all__ = [
    "PixelNormalizer",
    "preprocess_frames",
    "resize_bicubic",
    "resize_coefficients",
    "resize_image",
]

PRECISION_BITS = 32 - 8 - 2  # Resample.c: 22
_HALF = 1 << (PRECISION_BITS - 1)
# Bytes of converted input per chunk of frames on CPU (at least one frame).
_CPU_CHUNK_BYTES = 6 << 20
# float64 elements of one pass input per chunk of frames on CUDA.
_DENSE_CHUNK_ELEMENTS = 48 << 20
# Output columns per int8 product: horizontal (per channel) and vertical.
_H_BLOCK = 8
_V_BLOCK = 16


# ----------------------------------------------------------------- coefficients
def _bicubic_filter(x: float) -> float:
    # Resample.c bicubic_filter, a = -0.5, the same double operations in order
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


@functools.lru_cache(maxsize=256)
def resize_coefficients(in_size: int, out_size: int) -> Tuple[np.ndarray, np.ndarray]:
    """Pillow's fixed-point bicubic coefficients for one axis.

    Returns ``(coeffs, bounds)``: ``coeffs`` (out_size, ksize) int32, the
    output of ``normalize_coeffs_8bpc`` (zero past each output's taps), and
    ``bounds`` (out_size, 2) int32, ``(xmin, count)``: output ``i`` is
    ``sum(coeffs[i, j] * x[xmin + j] for j < count)``. Both are read-only.
    """
    in_size, out_size = int(in_size), int(out_size)
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    # precompute_coeffs with box (0, in_size): in0 = 0.0, in1 = in_size (float)
    scale = filterscale = in_size / out_size
    if filterscale < 1.0:
        filterscale = 1.0
    support = 2.0 * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    ss = 1.0 / filterscale
    coeffs = np.zeros((out_size, ksize), dtype=np.int32)
    bounds = np.zeros((out_size, 2), dtype=np.int32)
    unit = 1 << PRECISION_BITS
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = int(center - support + 0.5)  # C cast: truncation towards zero
        if xmin < 0:
            xmin = 0
        xmax = int(center + support + 0.5)
        if xmax > in_size:
            xmax = in_size
        xmax -= xmin
        weights = []
        ww = 0.0
        for x in range(xmax):
            w = _bicubic_filter((x + xmin - center + 0.5) * ss)
            weights.append(w)
            ww += w
        for x, w in enumerate(weights):
            if ww != 0.0:
                w /= ww
            # normalize_coeffs_8bpc
            coeffs[xx, x] = int(-0.5 + w * unit) if w < 0 else int(0.5 + w * unit)
        bounds[xx] = (xmin, xmax)
    coeffs.setflags(write=False)
    bounds.setflags(write=False)
    return coeffs, bounds


def _dense_matrix(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) int64 matrix of the coefficients."""
    coeffs, bounds = resize_coefficients(in_size, out_size)
    mat = np.zeros((out_size, in_size), dtype=np.int64)
    for o, (xmin, count) in enumerate(bounds):
        mat[o, xmin : xmin + count] = coeffs[o, :count]
    return mat


def _needed_rows(in_size: int, out_size: int) -> Tuple[int, int]:
    _, bounds = resize_coefficients(in_size, out_size)
    return int(bounds[:, 0].min()), int((bounds[:, 0] + bounds[:, 1]).max())


# ------------------------------------------------------------- int8 engine (CPU)
# An engine stores pixels as (p - offset) and splits coefficients into
# `digits` signed digits of `digit_bits` bits; digits == 1 is float64.
class _Engine:
    def __init__(self, dtype: torch.dtype, digits: int, digit_bits: int, offset: int):
        self.dtype, self.digits, self.digit_bits = dtype, digits, digit_bits
        self.offset = offset

    @property
    def is_int(self) -> bool:
        return self.dtype == torch.int8

    def split(self, k: np.ndarray) -> List[np.ndarray]:
        """Balanced signed digits of the int64 array ``k`` (least significant
        first), or ``[k]`` for float64."""
        if not self.is_int:
            return [k]
        base, half = 1 << self.digit_bits, 1 << (self.digit_bits - 1)
        out, rest = [], k.astype(np.int64)
        for _ in range(self.digits - 1):
            d = (rest + half) % base - half
            out.append(d)
            rest = (rest - d) // base
        if rest.size and (rest.min() < -half or rest.max() >= half):
            raise OverflowError("coefficient outside the range of the digits")
        out.append(rest)
        return out


_F64 = _Engine(torch.float64, 1, 0, 0)


def _int8_matmul_is_exact(digit_bits: int) -> bool:
    """int8 x int8 -> int32 products at the extremes of both operands, in
    both operand orders, plus random ones, against int64."""
    lo, hi = -(1 << (digit_bits - 1)), (1 << (digit_bits - 1)) - 1
    gen = torch.Generator().manual_seed(0)
    cases = []
    for pix in (-128, 127):
        for dig in (lo, hi):
            a = torch.full((48, 72), pix, dtype=torch.int8)
            b = torch.full((72, 24), dig, dtype=torch.int8)
            cases.append((a, b))
    a = torch.randint(-128, 128, (40, 136), generator=gen, dtype=torch.int8)
    b = torch.randint(lo, hi + 1, (136, 56), generator=gen, dtype=torch.int8)
    cases.append((a, b))
    try:
        for a, b in cases:
            ref = a.long() @ b.long()
            if not torch.equal(torch._int_mm(a, b).long(), ref):
                return False
            # digits first, pixels second (the vertical pass)
            if not torch.equal(torch._int_mm(b.t().contiguous(), a.t()).long(), ref.t()):
                return False
    except Exception:  # no _int_mm, or not for these shapes on this build
        return False
    return True


_ENGINE_LOCK = threading.Lock()
_CPU_ENGINE: Optional[_Engine] = None


def _cpu_engine() -> _Engine:
    global _CPU_ENGINE
    if _CPU_ENGINE is None:
        with _ENGINE_LOCK:
            if _CPU_ENGINE is None:
                if _int8_matmul_is_exact(8):
                    _CPU_ENGINE = _Engine(torch.int8, 3, 8, 128)
                elif _int8_matmul_is_exact(7):
                    _CPU_ENGINE = _Engine(torch.int8, 4, 7, 128)
                else:
                    _CPU_ENGINE = _F64
    return _CPU_ENGINE


class _Block:
    __slots__ = ("o0", "o1", "start", "stop", "weight", "bias")

    def __init__(self, o0, o1, start, stop, weight, bias):
        self.o0, self.o1, self.start, self.stop = o0, o1, start, stop
        self.weight, self.bias = weight, bias


def _block_coefficients(in_size, out_size, block):
    """Yields (o0, o1, start, stop, k): k (o1 - o0, stop - start) int64, the
    coefficients of outputs o0..o1 over input window start..stop."""
    coeffs, bounds = resize_coefficients(in_size, out_size)
    for o0 in range(0, out_size, block):
        o1 = min(o0 + block, out_size)
        start = int(bounds[o0:o1, 0].min())
        stop = int((bounds[o0:o1, 0] + bounds[o0:o1, 1]).max())
        k = np.zeros((o1 - o0, stop - start), dtype=np.int64)
        for b, o in enumerate(range(o0, o1)):
            xmin, count = bounds[o]
            k[b, xmin - start : xmin - start + count] = coeffs[o, :count]
        yield o0, o1, start, stop, k


def _bias(engine: _Engine, k: np.ndarray, intermediate: bool) -> np.ndarray:
    """Per-output constant: the pixel offset, Pillow's rounding term, and for
    an intermediate image the offset of the stored result."""
    bias = engine.offset * k.sum(axis=1) + _HALF
    if intermediate:
        bias -= engine.offset << PRECISION_BITS
    return bias


def _check_int32(engine: _Engine, k: np.ndarray, bias: np.ndarray) -> None:
    """The digit columns and their int32 recombination stay below 2**31."""
    if not engine.is_int:
        return
    total = np.zeros(k.shape[0], dtype=np.int64)
    for i, d in enumerate(engine.split(k)):
        total += (np.abs(d).sum(axis=1) * 128) << (engine.digit_bits * i)
    if int((total + np.abs(bias)).max()) >= 1 << 31:
        raise OverflowError("int32 recombination bound exceeded")


@functools.lru_cache(maxsize=64)
def _horizontal_plan(in_size, out_size, channels, intermediate, engine):
    """Blocks of the horizontal pass over interleaved rows (x, c): the
    weight of a block is (channels * L, digits * channels * B), channel c of
    output b in column d * channels * B + b * channels + c."""
    blocks = []
    eye = np.eye(channels, dtype=np.int64)
    for o0, o1, start, stop, k in _block_coefficients(in_size, out_size, _H_BLOCK):
        bias = _bias(engine, k, intermediate)
        _check_int32(engine, k, bias)
        parts = [np.kron(d.T, eye) for d in engine.split(k)]  # (C*L, C*B) each
        weight = torch.from_numpy(np.concatenate(parts, axis=1)).to(engine.dtype)
        bias = torch.from_numpy(np.repeat(bias, channels)).to(_acc_dtype(engine))
        blocks.append(_Block(o0, o1, start, stop, weight.contiguous(), bias))
    return tuple(blocks)


@functools.lru_cache(maxsize=64)
def _vertical_plan(in_size, out_size, row0, intermediate, engine):
    """Blocks of the vertical pass: weight (digits * B, L), rows shifted by
    -row0 (the first row the horizontal pass computed)."""
    blocks = []
    for o0, o1, start, stop, k in _block_coefficients(in_size, out_size, _V_BLOCK):
        bias = _bias(engine, k, intermediate)
        _check_int32(engine, k, bias)
        weight = np.concatenate(engine.split(k), axis=0)
        weight = torch.from_numpy(weight).to(engine.dtype).contiguous()
        bias = torch.from_numpy(bias[:, None]).to(_acc_dtype(engine))
        blocks.append(_Block(o0, o1, start - row0, stop - row0, weight, bias))
    return tuple(blocks)


def _acc_dtype(engine: _Engine) -> torch.dtype:
    return torch.int32 if engine.is_int else torch.float64


def _matmul(engine: _Engine, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch._int_mm(a, b) if engine.is_int else torch.mm(a, b)


def _finish(engine, z, parts, width, bias, lo, hi):
    """Recombine the digit products ``z[..., i]`` (``parts(z, i)``), add the
    bias, shift by 22 bits and clip: returns ``z``'s first part, in place."""
    acc = parts(z, 0)
    for i in range(1, engine.digits):
        acc.add_(parts(z, i), alpha=1 << (engine.digit_bits * i))
    acc.add_(bias)
    if engine.is_int:
        acc.bitwise_right_shift_(PRECISION_BITS)
    else:
        acc.mul_(1.0 / (1 << PRECISION_BITS)).floor_()
    return acc.clamp_(lo, hi)


def _horizontal(engine, src, dst, plan, channels, intermediate):
    """src (M, W*C) -> dst (M, O*C), both interleaved rows."""
    lo = -engine.offset if intermediate else 0
    hi = lo + 255
    for blk in plan:
        width = channels * (blk.o1 - blk.o0)
        a = src[:, channels * blk.start : channels * blk.stop]
        z = _matmul(engine, a, blk.weight)
        acc = _finish(
            engine,
            z,
            lambda t, i: t[:, i * width : (i + 1) * width],
            width,
            blk.bias,
            lo,
            hi,
        )
        dst[:, channels * blk.o0 : channels * blk.o1].copy_(acc)


def _vertical(engine, src, dst, plan):
    """src (R, J) -> dst (O, J) (a view: any strides)."""
    for blk in plan:
        rows = blk.o1 - blk.o0
        z = _matmul(engine, blk.weight, src[blk.start : blk.stop])
        acc = _finish(
            engine,
            z,
            lambda t, i: t[i * rows : (i + 1) * rows],
            rows,
            blk.bias,
            0,
            255,
        )
        dst[blk.o0 : blk.o1].copy_(acc.view(dst[blk.o0 : blk.o1].shape))


def _to_engine(engine, frames, out):
    """Copy uint8 ``frames`` into ``out`` (engine dtype) as p - offset."""
    if engine.is_int:
        torch.bitwise_xor(frames.view(torch.int8), -128, out=out)
    else:
        out.copy_(frames)
    return out


def _resize_cpu(frames: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    engine = _cpu_engine()
    try:
        return _resize_blocked(engine, frames, out_h, out_w)
    except OverflowError:  # extreme reductions: int32 bound not guaranteed
        return _resize_blocked(_F64, frames, out_h, out_w)


def _resize_blocked(engine, frames, out_h, out_w):
    n, in_h, in_w, c = frames.shape
    need_h, need_v = out_w != in_w, out_h != in_h
    out = torch.empty((n, out_h, out_w, c), dtype=torch.uint8)
    if need_v:
        row0, row1 = _needed_rows(in_h, out_h)
        vplan = _vertical_plan(in_h, out_h, row0, False, engine)
    else:
        row0, row1 = 0, in_h
    rows = row1 - row0
    hplan = _horizontal_plan(in_w, out_w, c, need_v, engine) if need_h else None
    itemsize = torch.empty((), dtype=engine.dtype).element_size()
    per_frame = max(1, rows * in_w * c * itemsize)
    chunk = max(1, min(n, _CPU_CHUNK_BYTES // per_frame))
    for f0 in range(0, n, chunk):
        f1 = min(f0 + chunk, n)
        m = f1 - f0
        part = frames[f0:f1, row0:row1]
        if not need_v:
            # horizontal only: rows (frame, y), written straight to the output
            src = _to_engine(engine, part, torch.empty(part.shape, dtype=engine.dtype))
            dst = out[f0:f1].view(m * out_h, out_w * c)
            _horizontal(engine, src.view(m * rows, in_w * c), dst, hplan, c, False)
            continue
        # rows ordered (y, frame): the vertical pass is one product per block
        src = torch.empty((rows, m, in_w, c), dtype=engine.dtype)
        _to_engine(engine, part.permute(1, 0, 2, 3), src)
        if need_h:
            mid = torch.empty((rows, m * out_w * c), dtype=engine.dtype)
            _horizontal(
                engine,
                src.view(rows * m, in_w * c),
                mid.view(rows * m, out_w * c),
                hplan,
                c,
                True,
            )
        else:
            mid = src.view(rows, m * in_w * c)
        dst = out[f0:f1].permute(1, 0, 2, 3).view(out_h, m, out_w * c)
        _vertical(engine, mid, dst, vplan)
    return out



# ---------------------------------------------------- float64 dense path (CUDA)
_DEVICE_CACHE_LOCK = threading.Lock()


@functools.lru_cache(maxsize=64)
def _dense_weight(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """(out_size, in_size) float64 coefficients on ``device``."""
    mat = torch.from_numpy(_dense_matrix(in_size, out_size).astype(np.float64))
    return mat.to(device)


def _round_shift_(t: torch.Tensor) -> torch.Tensor:
    # (sum + 2**21) >> 22, clipped: exact in float64 (integers below 2**53,
    # scaling by a power of two)
    return t.add_(_HALF).mul_(1.0 / (1 << PRECISION_BITS)).floor_().clamp_(0, 255)


def _resize_dense(frames: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    n, in_h, in_w, c = frames.shape
    need_h, need_v = out_w != in_w, out_h != in_h
    device = frames.device
    if need_v:
        row0, row1 = _needed_rows(in_h, out_h)
        wv = _dense_weight(in_h, out_h, device)[:, row0:row1]
    else:
        row0, row1 = 0, in_h
    wh = _dense_weight(in_w, out_w, device).t() if need_h else None
    rows = row1 - row0
    per_frame = c * rows * max(in_w, out_w)
    chunk = max(1, min(n, _DENSE_CHUNK_ELEMENTS // per_frame))
    out = torch.empty((n, out_h, out_w, c), dtype=torch.uint8, device=device)
    for f0 in range(0, n, chunk):
        f1 = min(f0 + chunk, n)
        # planar (frame, channel, y, x) float64
        x = frames[f0:f1, row0:row1].permute(0, 3, 1, 2).to(torch.float64)
        if need_h:
            x = _round_shift_(torch.matmul(x, wh))
        if need_v:
            x = _round_shift_(torch.matmul(wv, x))
        out[f0:f1].copy_(x.permute(0, 2, 3, 1))
    return out


# ----------------------------------------------------------------------- API
def _size_hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    out_h, out_w = (int(s) for s in size)
    return out_h, out_w


def resize_bicubic(frames: torch.Tensor, size: Union[int, Tuple[int, int]]) -> torch.Tensor:
    """Pillow (<= 12) ``Image.resize((out_w, out_h), BICUBIC,
    reducing_gap=None)`` of every frame, bit for bit.

    ``frames``: (N, H, W, C) uint8 on any device (C = 3 for RGB, 1 for "L");
    ``size``: (out_h, out_w). Returns (N, out_h, out_w, C) uint8 on the same
    device; a new tensor even when the size does not change.
    """
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
        raise ValueError("frames must be a (N, H, W, C) tensor")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")
    out_h, out_w = _size_hw(size)
    n, in_h, in_w, c = frames.shape
    if min(out_h, out_w, in_h, in_w) < 1:
        raise ValueError(f"cannot resize {in_w}x{in_h} to {out_w}x{out_h}")
    if (out_h, out_w) == (in_h, in_w) or n == 0 or c == 0:
        if (out_h, out_w) == (in_h, in_w):
            return frames.clone(memory_format=torch.contiguous_format)
        return frames.new_empty((n, out_h, out_w, c))
    if in_h > in_w * 100 and out_h < in_h:
        # Pillow 12.2/12.3 Image.resize: very tall images, vertical pass first
        flipped = _resize(frames.transpose(1, 2), out_w, out_h)
        return flipped.transpose(1, 2).contiguous()
    return _resize(frames, out_h, out_w)


def _resize(frames: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    if frames.device.type == "cpu":
        return _resize_cpu(frames, out_h, out_w)
    return _resize_dense(frames, out_h, out_w)


def resize_image(image: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """``image.resize(size)`` (default BICUBIC, PIL's (width, height)) for an
    "RGB" or "L" image, through :func:`resize_bicubic`."""
    if image.mode not in ("RGB", "L"):
        raise ValueError(f"resize_image takes RGB or L images, not {image.mode}")
    out_w, out_h = (int(s) for s in size)
    if (out_w, out_h) == image.size:
        return image.copy()
    array = np.array(image)
    frames = torch.from_numpy(array.reshape(array.shape[0], array.shape[1], -1))
    result = resize_bicubic(frames[None], (out_h, out_w))[0].numpy()
    if image.mode == "L":
        result = result[:, :, 0]
    return Image.fromarray(result, mode=image.mode)


class PixelNormalizer:
    """SigLIP's rescale and normalisation of uint8 pixels, then fp16.

    ``table[v, c]`` is what ``SiglipImageProcessorPil`` gives a pixel ``v``
    of channel ``c`` (``float64(v) * rescale_factor`` cast to float32, then
    ``(x - mean) / std`` in float32), rounded to fp16 by torch as the
    processor's caller does; every later step is a lookup.
    """

    def __init__(
        self,
        rescale_factor: float,
        mean: Union[float, Sequence[float]],
        std: Union[float, Sequence[float]],
    ):
        mean = np.asarray(mean, dtype=np.float32).reshape(-1)
        std = np.asarray(std, dtype=np.float32).reshape(-1)
        channels = max(mean.size, std.size)
        mean = np.broadcast_to(mean, (channels,))
        std = np.broadcast_to(std, (channels,))
        values = np.repeat(np.arange(256, dtype=np.uint8)[:, None], channels, axis=1)
        scaled = (values.astype(np.float64) * rescale_factor).astype(np.float32)
        normalized = (scaled - mean) / std
        assert normalized.dtype == np.float32
        self.rescale_factor = rescale_factor
        self.channels = channels
        self.table = torch.from_numpy(normalized).to(torch.float16)  # (256, C)
        # flat table indexed by v + 256 * c
        self._flat = self.table.t().contiguous().reshape(-1)
        self._offsets = torch.arange(channels, dtype=torch.int32).mul_(256)
        self._device_tables = {}
        self._lock = threading.Lock()

    def _tables(self, device: torch.device):
        if device.type == "cpu":
            return self._flat, self._offsets
        key = str(device)
        with self._lock:
            if key not in self._device_tables:
                self._device_tables[key] = (
                    self._flat.to(device),
                    self._offsets.to(device),
                )
            return self._device_tables[key]

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) uint8 -> (N, C, H, W) float16, same device."""
        if frames.dtype != torch.uint8 or frames.dim() != 4:
            raise ValueError("frames must be (N, H, W, C) uint8")
        if frames.shape[-1] != self.channels:
            raise ValueError(
                f"frames have {frames.shape[-1]} channels, the normalizer "
                f"{self.channels}"
            )
        flat, offsets = self._tables(frames.device)
        index = frames.permute(0, 3, 1, 2).to(torch.int32)
        index += offsets.view(1, -1, 1, 1)
        return flat[index]


def preprocess_frames(
    frames: torch.Tensor,
    size: Union[int, Tuple[int, int]],
    normalizer: PixelNormalizer,
) -> torch.Tensor:
    """Resize (N, H, W, C) uint8 frames to ``size`` = (h, w) as Pillow does and
    normalise them: (N, C, h, w) float16, equal to ``SiglipImageProcessorPil``
    (BICUBIC, rescale, normalize) followed by ``.to(torch.float16)``."""
    return normalizer(resize_bicubic(frames, size))
