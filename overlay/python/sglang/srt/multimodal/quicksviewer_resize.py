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
SigLIP's rescale and normalisation, for CPU and CUDA tensors.

Quicksviewer preprocesses every frame with transformers'
``SiglipImageProcessorPil``: ``PIL.Image.resize((384, 384), BICUBIC,
reducing_gap=None)``, then ``astype(float64) * rescale_factor``, float32,
``(x - mean) / std`` in float32; the caller rounds to fp16. This module gives
the same bytes from batches of uint8 frames, without PIL, with the GIL
released.

Resize semantics (Pillow 12.3.0: ``libImaging/Resample.c`` and
``Image.resize``), whatever Pillow is installed:

* coefficients: ``precompute_coeffs`` in double (support ``2 * filterscale``,
  ``filterscale = max(in / out, 1)``, ``center = (i + 0.5) * scale``, bicubic
  ``a = -0.5``, each output's weights divided by their sequential sum), then
  ``normalize_coeffs_8bpc``: ``(int)(+-0.5 + k * 2**22)``;
* a pass sums ``pixel * k`` in integers from ``2**21`` and stores
  ``clip(sum >> 22, 0, 255)``: the image between the two passes is uint8;
* the horizontal pass runs first and a pass whose size does not change is
  skipped (same size: a copy); Pillow 12.3.0's ``Image.resize`` (Pillow PR
  9524) resizes an image taller than 100 times its width vertically first
  when its height shrinks. Pillow 13 orders the passes of other shrinks
  differently (in C); that is not followed here.

Exactness. The sums are integers below ``2**31``: any exact integer
evaluation, in any order, gives Pillow's bytes.

* CPU: int8 matrix products (``torch._int_mm``: oneDNN, int32 accumulation)
  over windows of the image. Pixels are stored as ``p - 128``; every
  coefficient is split into three signed 8-bit digits, one product column per
  digit, recombined in int32 (each plan checks that every partial value stays
  below ``2**31``, else that resize uses float64). The horizontal pass works
  on interleaved rows (x, c) with per-channel block-diagonal weights, so no
  frame is ever transposed; its rows are ordered (y, frame), so that the
  vertical pass is one product per block of 16 output rows for a whole chunk
  of frames. The int8 products are used only where they cannot saturate: on
  x86 a CPU with VNNI or AMX, and a self-test at first use (extremes of both
  operands, both orders); elsewhere float64 products (exact: integers below
  ``2**53``; about 3 times slower).
* CUDA: float64 products with dense coefficient matrices, about 15 kernels
  per chunk of frames. TF32 and reduced-precision settings do not apply to
  float64.

Threads. All the work is in torch ops, which release the GIL. Throughput
scales with the cores when (Python threads calling this) x
``torch.get_num_threads()`` does not exceed them: either one call for a whole
video with torch's intra-op threads, or T threads in a process where
``torch.set_num_threads(cores // T)``. More (e.g. 2 threads x 2 intra-op
threads on 2 cores) was 30-40 % slower in our measurements.
"""

import functools
import math
import platform
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
_DENSE_CHUNK_ELEMENTS = 16 << 20
# Output columns per int8 product: horizontal (per channel) and vertical.
_H_BLOCK = 16
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


# ------------------------------------------------------------------ engines
class _Engine:
    """How the CPU passes compute: pixels stored as ``p - offset`` in
    ``dtype``, coefficients split into ``digits`` balanced signed digits of
    ``digit_bits`` bits (int8 products), or kept whole (float64 products)."""

    def __init__(self, dtype: torch.dtype, digits: int, digit_bits: int, offset: int):
        self.dtype, self.digits, self.digit_bits = dtype, digits, digit_bits
        self.offset = offset

    @property
    def is_int(self) -> bool:
        return self.dtype == torch.int8

    @property
    def acc_dtype(self) -> torch.dtype:
        return torch.int32 if self.is_int else torch.float64

    def split(self, k: np.ndarray) -> List[np.ndarray]:
        """The digits of the int64 array ``k``, least significant first."""
        if not self.is_int:
            return [k]
        base, half = 1 << self.digit_bits, 1 << (self.digit_bits - 1)
        out, rest = [], k.astype(np.int64)
        for _ in range(self.digits - 1):
            digit = (rest + half) % base - half
            out.append(digit)
            rest = (rest - digit) // base
        if rest.size and (rest.min() < -half or rest.max() >= half):
            raise OverflowError("coefficient outside the range of the digits")
        out.append(rest)
        return out

    def matmul(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch._int_mm(a, b) if self.is_int else torch.mm(a, b)

    def load(self, frames: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """uint8 ``frames`` (any strides) into ``out`` as ``p - offset``."""
        if self.is_int:
            torch.bitwise_xor(frames.view(torch.int8), -128, out=out)
        else:
            out.copy_(frames)
        return out

    def finish(self, parts, bias, lo, hi):
        """Recombines the digit products (``parts[i]``: views of one product),
        adds ``bias``, shifts by 22 bits and clips to ``lo..hi``, in place of
        ``parts[0]``, which it returns."""
        acc = parts[0]
        for i in range(1, self.digits):
            acc.add_(parts[i], alpha=1 << (self.digit_bits * i))
        acc.add_(bias)
        if self.is_int:
            acc.bitwise_right_shift_(PRECISION_BITS)
        else:  # exact: integers below 2**53, a power-of-two scale
            acc.mul_(1.0 / (1 << PRECISION_BITS)).floor_()
        return acc.clamp_(lo, hi)


_INT8 = _Engine(torch.int8, 3, 8, 128)
_F64 = _Engine(torch.float64, 1, 0, 0)


def _int8_hardware() -> bool:
    """oneDNN is built in and, on x86, the CPU multiplies int8 with int32
    accumulation (VNNI or AMX): no int16-saturating kernel can be picked."""
    if not torch.backends.mkldnn.is_available():
        return False
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return True  # left to the self-test
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is None:
        return False
    caps = get_capabilities()
    return any(caps.get(f, False) for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _int8_matmul_is_exact() -> bool:
    """int8 x int8 -> int32 products with both operands at their extremes
    (where a saturating kernel would fail), in both operand orders, and
    random ones, against int64."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    for pixel in (-128, 127):
        for digit in (-128, 127):
            a = torch.full((48, 72), pixel, dtype=torch.int8)
            cases.append((a, torch.full((72, 24), digit, dtype=torch.int8)))
    a = torch.randint(-128, 128, (40, 136), generator=gen, dtype=torch.int8)
    b = torch.randint(-128, 128, (136, 56), generator=gen, dtype=torch.int8)
    cases.append((a, b))
    try:
        for a, b in cases:
            ref = a.long() @ b.long()
            if not torch.equal(torch._int_mm(a, b).long(), ref):
                return False
            # digits first, pixels second (as the vertical pass does)
            got = torch._int_mm(b.t().contiguous(), a.t().contiguous())
            if not torch.equal(got.long(), ref.t()):
                return False
    except Exception:  # no CPU _int_mm in this torch build
        return False
    return True


_ENGINE_LOCK = threading.Lock()
_CPU_ENGINE: Optional[_Engine] = None


def _cpu_engine() -> _Engine:
    """int8 products where the hardware and the self-test allow, else
    float64 (exact too, about 3 times slower)."""
    global _CPU_ENGINE
    with _ENGINE_LOCK:
        if _CPU_ENGINE is None:
            exact = _int8_hardware() and _int8_matmul_is_exact()
            _CPU_ENGINE = _INT8 if exact else _F64
        return _CPU_ENGINE


# -------------------------------------------------------------------- plans
class _Block:
    __slots__ = ("o0", "o1", "start", "stop", "weight", "bias")

    def __init__(self, o0, o1, start, stop, weight, bias):
        self.o0, self.o1, self.start, self.stop = o0, o1, start, stop
        self.weight, self.bias = weight, bias


def _block_coefficients(in_size: int, out_size: int, block: int):
    """(o0, o1, start, stop, k): outputs o0..o1, their input window
    start..stop and k, (o1 - o0, stop - start) int64 coefficients."""
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
    """Per output: the stored pixels' offset, Pillow's rounding term and, for
    the image between the passes, the offset of the stored result."""
    bias = engine.offset * k.sum(axis=1) + _HALF
    if intermediate:
        bias -= engine.offset << PRECISION_BITS
    return bias


def _check_int32(engine: _Engine, k: np.ndarray, bias: np.ndarray) -> None:
    """Every digit product and every partial recombination stays below 2**31
    (pixels stored as p - 128 have |p - 128| <= 128)."""
    if not engine.is_int:
        return
    total = np.abs(bias).astype(np.int64)
    for i, digit in enumerate(engine.split(k)):
        total += (np.abs(digit).sum(axis=1) * 128) << (engine.digit_bits * i)
    if int(total.max()) >= 1 << 31:
        raise OverflowError("the int32 recombination bound does not hold")


@functools.lru_cache(maxsize=64)
def _horizontal_plan(in_size, out_size, channels, intermediate, engine):
    """Blocks of the horizontal pass over interleaved rows (x, c). Weight
    (channels * L, digits * channels * B): digit i of channel c of output b
    in column (i * B + b) * channels + c (rows of the other channels zero)."""
    blocks = []
    for o0, o1, start, stop, k in _block_coefficients(in_size, out_size, _H_BLOCK):
        bias = _bias(engine, k, intermediate)
        _check_int32(engine, k, bias)
        digits = engine.split(k)
        width, length = o1 - o0, stop - start
        weight = np.zeros((length, channels, len(digits), width, channels), np.int64)
        for i, d in enumerate(digits):
            for c in range(channels):
                weight[:, c, i, :, c] = d.T
        weight = weight.reshape(length * channels, -1)
        weight = torch.from_numpy(weight).to(engine.dtype).contiguous()
        bias = torch.from_numpy(np.repeat(bias, channels)).to(engine.acc_dtype)
        blocks.append(_Block(o0, o1, start, stop, weight, bias))
    return tuple(blocks)


@functools.lru_cache(maxsize=64)
def _vertical_plan(in_size, out_size, row0, engine):
    """Blocks of the vertical pass: weight (digits * B, L), digit i of output
    b in row i * B + b; windows shifted by -row0 (the first row computed)."""
    blocks = []
    for o0, o1, start, stop, k in _block_coefficients(in_size, out_size, _V_BLOCK):
        bias = _bias(engine, k, False)
        _check_int32(engine, k, bias)
        weight = np.concatenate(engine.split(k), axis=0)
        weight = torch.from_numpy(weight).to(engine.dtype).contiguous()
        bias = torch.from_numpy(bias[:, None]).to(engine.acc_dtype)
        blocks.append(_Block(o0, o1, start - row0, stop - row0, weight, bias))
    return tuple(blocks)


# -------------------------------------------------------------------- sinks
class _Sink:
    """The result of the last pass: uint8 pixels or, through ``normalizer``'s
    table, normalised fp16. ``write(dst, acc, channel_axis)`` stores ``acc``
    (values 0..255 in the accumulator dtype) into ``dst``, a view of the
    output with the same shape whose channel axis is ``channel_axis``."""

    def __init__(self, normalizer: Optional["PixelNormalizer"], device: torch.device):
        self.lookup = None
        if normalizer is not None:
            self.lookup, self.offsets = normalizer._tables(device)
            self.uniform = normalizer.uniform

    def write(self, dst: torch.Tensor, acc: torch.Tensor, channel_axis: int) -> None:
        if self.lookup is None:
            dst.copy_(acc)
            return
        if self.uniform and acc.dtype == torch.int32 and acc.is_contiguous():
            # one table for every channel: acc is the index
            values = torch.index_select(self.lookup, 0, acc.view(-1))
            dst.copy_(values.view(acc.shape))
            return
        # indices in dst's memory order, so that only this step is strided
        order = sorted(range(dst.dim()), key=lambda i: -dst.stride(i))
        acc = acc.permute(order)
        index = torch.empty(acc.shape, dtype=torch.int32, device=acc.device)
        if self.uniform:
            index.copy_(acc)
        else:
            shape = [1] * dst.dim()
            shape[channel_axis] = -1
            torch.add(acc, self.offsets.view(shape).permute(order), out=index)
        dst = dst.permute(order)
        if dst.is_contiguous():
            torch.index_select(self.lookup, 0, index.view(-1), out=dst.view(-1))
        else:
            values = torch.index_select(self.lookup, 0, index.view(-1))
            dst.copy_(values.view(index.shape))


# ---------------------------------------------------------------- CPU passes
def _horizontal(engine, src, plan, channels, lo, store):
    """src (M, W * C) interleaved rows; for every block, ``store(o0, o1,
    acc)`` receives acc (M, (o1 - o0) * C), values lo..lo + 255."""
    for blk in plan:
        width = channels * (blk.o1 - blk.o0)
        z = engine.matmul(
            src[:, channels * blk.start : channels * blk.stop], blk.weight
        )
        parts = [z[:, i * width : (i + 1) * width] for i in range(engine.digits)]
        store(blk.o0, blk.o1, engine.finish(parts, blk.bias, lo, lo + 255))


def _vertical(engine, src, plan, store):
    """src (R, J); for every block, ``store(o0, o1, acc)``, acc (o1 - o0, J)."""
    for blk in plan:
        rows = blk.o1 - blk.o0
        z = engine.matmul(blk.weight, src[blk.start : blk.stop])
        parts = [z[i * rows : (i + 1) * rows] for i in range(engine.digits)]
        store(blk.o0, blk.o1, engine.finish(parts, blk.bias, 0, 255))


def _resize_cpu(frames, out_h, out_w, out, planar, sink):
    engine = _cpu_engine()
    try:
        _resize_blocked(engine, frames, out_h, out_w, out, planar, sink)
    except OverflowError:  # extreme reductions: the int32 bound may not hold
        _resize_blocked(_F64, frames, out_h, out_w, out, planar, sink)


def _resize_blocked(engine, frames, out_h, out_w, out, planar, sink):
    """Resize (N, H, W, C) uint8 ``frames`` into ``out``: (N, out_h, out_w, C)
    when not ``planar``, else (N, C, out_h, out_w), through ``sink``.

    Layout: every product is a plain 2-D int8 matrix product. The horizontal
    pass multiplies windows of interleaved rows (y, x * C + c) by per-channel
    block-diagonal weights; its rows are ordered (y, frame) so that the
    vertical pass multiplies the weights by one (L, frames * width) slab per
    block of output rows, and writes whole output rows.
    """
    n, in_h, in_w, c = frames.shape
    need_h, need_v = out_w != in_w, out_h != in_h
    if need_v:
        row0, row1 = _needed_rows(in_h, out_h)  # rows the vertical pass reads
        vplan = _vertical_plan(in_h, out_h, row0, engine)
    else:
        row0, row1 = 0, in_h
    rows = row1 - row0
    if need_h:
        hplan = _horizontal_plan(in_w, out_w, c, need_v, engine)
    itemsize = torch.empty((), dtype=engine.dtype).element_size()
    per_frame = max(1, rows * in_w * c * itemsize)
    chunk = max(1, min(n, _CPU_CHUNK_BYTES // per_frame))
    # output views with the frame axis first and then (y, x, c)
    out_yxc = out.permute(0, 2, 3, 1) if planar else out
    channel_axis = 3
    for f0 in range(0, n, chunk):
        f1 = min(f0 + chunk, n)
        m = f1 - f0
        part = frames[f0:f1, row0:row1]
        dst = out_yxc[f0:f1]  # (m, out_h, out_w, c)
        if not need_v:
            # horizontal only, rows (frame, y), straight into the output
            src = torch.empty((m, rows, in_w, c), dtype=engine.dtype)
            engine.load(part, src)

            def store_final(o0, o1, acc, dst=dst, m=m):
                acc = acc.view(m, rows, o1 - o0, c)
                sink.write(dst[:, :, o0:o1], acc, channel_axis)

            _horizontal(engine, src.view(m * rows, in_w * c), hplan, c, 0, store_final)
            continue
        src = torch.empty((rows, m, in_w, c), dtype=engine.dtype)
        engine.load(part.permute(1, 0, 2, 3), src)
        if need_h:
            # the image between the passes, (y, frame, x, c)
            mid = torch.empty((rows, m, out_w, c), dtype=engine.dtype)

            def store_mid(o0, o1, acc, mid=mid, m=m):
                mid[:, :, o0:o1].copy_(acc.view(rows, m, o1 - o0, c))

            lo = -engine.offset
            _horizontal(engine, src.view(rows * m, in_w * c), hplan, c, lo, store_mid)
        else:
            mid = src
        dst_rows = dst.permute(1, 0, 2, 3)  # (out_h, m, out_w, c)

        def store_rows(o0, o1, acc, dst_rows=dst_rows):
            view = dst_rows[o0:o1]
            sink.write(view, acc.view(view.shape), channel_axis)

        _vertical(engine, mid.view(rows, m * out_w * c), vplan, store_rows)


# ---------------------------------------------------- float64 dense path (GPU)
@functools.lru_cache(maxsize=64)
def _dense_weight(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """(out_size, in_size) float64 coefficients on ``device``."""
    mat = torch.from_numpy(_dense_matrix(in_size, out_size).astype(np.float64))
    return mat.to(device)


def _round_shift_(t: torch.Tensor) -> torch.Tensor:
    # clip8((sum + 2**21) >> 22), exact in float64: integers below 2**53
    # and a power-of-two scale
    return t.add_(_HALF).mul_(1.0 / (1 << PRECISION_BITS)).floor_().clamp_(0, 255)


def _resize_dense(frames, out_h, out_w, out, planar, sink):
    """The float64 path of CUDA: per chunk of frames, one matrix product per
    pass over planar frames, about 15 kernels in all. Dense (out, in)
    coefficient matrices: the waste of multiplying zeros costs less on the
    GPU than more kernels. Working memory besides the output: about 20 bytes
    per element of ``_DENSE_CHUNK_ELEMENTS`` (some 320 MiB)."""
    n, in_h, in_w, c = frames.shape
    need_h, need_v = out_w != in_w, out_h != in_h
    device = frames.device
    if need_v:
        row0, row1 = _needed_rows(in_h, out_h)
        wv = _dense_weight(in_h, out_h, device)[:, row0:row1]
    else:
        row0, row1 = 0, in_h
    wh = _dense_weight(in_w, out_w, device).t() if need_h else None
    per_frame = c * (row1 - row0) * max(in_w, out_w)
    chunk = max(1, min(n, _DENSE_CHUNK_ELEMENTS // per_frame))
    out_planar = out if planar else out.permute(0, 3, 1, 2)
    for f0 in range(0, n, chunk):
        f1 = min(f0 + chunk, n)
        x = frames[f0:f1, row0:row1].permute(0, 3, 1, 2).to(torch.float64)
        if need_h:
            x = _round_shift_(torch.matmul(x, wh))
        if need_v:
            x = _round_shift_(torch.matmul(wv, x))
        sink.write(out_planar[f0:f1], x, 1)


# ----------------------------------------------------------------------- API
def _size_hw(size: Union[int, Sequence[int]]) -> Tuple[int, int]:
    if isinstance(size, int):
        return size, size
    out_h, out_w = (int(s) for s in size)
    return out_h, out_w


def _check_frames(frames: torch.Tensor) -> None:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4:
        raise ValueError("frames must be a (N, H, W, C) tensor")
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {frames.dtype}")


def _resize_into(frames, out_h, out_w, out, planar, normalizer):
    """Resize into ``out`` (NHWC uint8, or NCHW fp16 through ``normalizer``
    when ``planar``): float64 products on CUDA, int8 ones on CPU; other
    devices go through the CPU."""
    device = frames.device
    if device.type == "cuda":
        _resize_dense(frames, out_h, out_w, out, planar, _Sink(normalizer, device))
    elif device.type == "cpu":
        _resize_cpu(frames, out_h, out_w, out, planar, _Sink(normalizer, device))
    else:
        host = torch.empty(out.shape, dtype=out.dtype)
        _resize_into(frames.cpu(), out_h, out_w, host, planar, normalizer)
        out.copy_(host)


def _is_tall(in_h: int, in_w: int, out_h: int) -> bool:
    # Pillow 12.3.0 Image.resize: height > 100 x width and the height shrinks:
    # resized vertically first (two single-pass resizes)
    return in_h > in_w * 100 and out_h < in_h


def _resize(frames: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """Both passes, horizontal first, into a new NHWC uint8 tensor."""
    n, _, _, c = frames.shape
    out = torch.empty((n, out_h, out_w, c), dtype=torch.uint8, device=frames.device)
    _resize_into(frames, out_h, out_w, out, False, None)
    return out


def resize_bicubic(
    frames: torch.Tensor, size: Union[int, Tuple[int, int]]
) -> torch.Tensor:
    """Pillow (<= 12) ``Image.resize((out_w, out_h), BICUBIC,
    reducing_gap=None)`` of every frame, bit for bit.

    ``frames``: (N, H, W, C) uint8 on CPU or CUDA (any strides; C = 3 for RGB,
    1 for "L", channels are independent); ``size``: (out_h, out_w) or one int.
    Returns a new (N, out_h, out_w, C) uint8 tensor on the same device.
    """
    _check_frames(frames)
    out_h, out_w = _size_hw(size)
    n, in_h, in_w, c = frames.shape
    if min(out_h, out_w) < 1 or (n and min(in_h, in_w) < 1):
        raise ValueError(f"cannot resize {in_w}x{in_h} to {out_w}x{out_h}")
    if (out_h, out_w) == (in_h, in_w):
        return frames.clone(memory_format=torch.contiguous_format)
    if n == 0 or c == 0:
        return frames.new_empty((n, out_h, out_w, c))
    if _is_tall(in_h, in_w, out_h):
        flipped = _resize(frames.transpose(1, 2), out_w, out_h)
        return flipped.transpose(1, 2).contiguous()
    return _resize(frames, out_h, out_w)


def resize_image(image: Image.Image, size: Tuple[int, int]) -> Image.Image:
    """``image.resize(size)`` (PIL's default BICUBIC, size = (width, height))
    of an "RGB" or "L" image, through :func:`resize_bicubic`."""
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
    return Image.fromarray(result)


class PixelNormalizer:
    """SigLIP's rescale and normalisation of uint8 pixels, rounded to fp16.

    ``table[v, c]`` is what ``SiglipImageProcessorPil`` computes for value
    ``v`` of channel ``c``, with the processor's NumPy operations
    (``float64(v) * rescale_factor``, cast to float32, ``(x - mean) / std``
    in float32), then rounded to fp16 by torch like the processor's caller;
    every frame is then a table lookup.
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
        # one table for all channels (SigLIP's mean = std = 0.5), or
        # flat[v + 256 * c] = table[v, c]
        bits = self.table.view(torch.int16)  # compare bits: -0.0, NaN
        self.uniform = bool((bits == bits[:, :1]).all())
        if self.uniform:
            self._flat = self.table[:, 0].contiguous()
        else:
            self._flat = self.table.t().contiguous().view(-1)
        self._offsets = torch.arange(channels, dtype=torch.int32) * 256
        self._device_tables = {}
        self._lock = threading.Lock()

    def _tables(self, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        if device.type == "cpu":
            return self._flat, self._offsets
        with self._lock:
            key = str(device)
            if key not in self._device_tables:
                self._device_tables[key] = (
                    self._flat.to(device),
                    self._offsets.to(device),
                )
            return self._device_tables[key]

    def _check(self, frames: torch.Tensor) -> None:
        _check_frames(frames)
        if frames.shape[-1] != self.channels:
            raise ValueError(
                f"frames have {frames.shape[-1]} channels, the statistics "
                f"{self.channels}"
            )

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, H, W, C) uint8 -> (N, C, H, W) float16 on the same device."""
        self._check(frames)
        n, h, w, c = frames.shape
        out = torch.empty((n, c, h, w), dtype=torch.float16, device=frames.device)
        _Sink(self, frames.device).write(out, frames.permute(0, 3, 1, 2), 1)
        return out


def preprocess_frames(
    frames: torch.Tensor,
    size: Union[int, Tuple[int, int]],
    normalizer: PixelNormalizer,
) -> torch.Tensor:
    """``normalizer(resize_bicubic(frames, size))`` without the uint8 round
    trip: (N, H, W, C) uint8 frames -> (N, C, h, w) float16, ``size`` =
    (h, w); equal to ``SiglipImageProcessorPil`` (BICUBIC resize, rescale,
    normalize) followed by ``.to(torch.float16)``."""
    normalizer._check(frames)
    out_h, out_w = _size_hw(size)
    n, in_h, in_w, c = frames.shape
    if min(out_h, out_w) < 1 or (n and min(in_h, in_w) < 1):
        raise ValueError(f"cannot resize {in_w}x{in_h} to {out_w}x{out_h}")
    if (out_h, out_w) == (in_h, in_w) or _is_tall(in_h, in_w, out_h) or n == 0:
        return normalizer(resize_bicubic(frames, (out_h, out_w)))
    out = torch.empty((n, c, out_h, out_w), dtype=torch.float16, device=frames.device)
    _resize_into(frames, out_h, out_w, out, True, normalizer)
    return out
