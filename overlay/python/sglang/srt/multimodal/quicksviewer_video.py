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
"""Frames of a Quicksviewer video: the original's frame choice, decoded in parallel.

``sample_frame_indices`` picks the original's frames (one at the middle of every
second, at most 420). ``decode_video`` decodes them with the decoder the processor
has always used (SGLang's loader: torchcodec or decord; OpenCV, the original's own
decoder, where neither is installed or where decord fails) and splits the work
into contiguous ranges of frame indices, one reader per range, each on a thread of
one process-wide pool. Every range returns exactly the frames ONE sequential reader
of the same decoder returns:

* decord (``VideoReader.get_batch``) reaches a frame either by decoding on from the
  previous one or, when it lies behind another keyframe, by seeking to
  ``LocateKeyframe(frame)`` (its own keyframe table, ``get_key_indices()``). A
  range starts only at a sampled frame where the sequential reader itself seeks to
  a keyframe, so a fresh reader there runs the same seek and the same decoding
  steps: equal by construction.
* OpenCV reads on sequentially after one seek (``CAP_PROP_POS_FRAMES``), which
  decodes from the keyframe before ``frame - 16`` and numbers frames by their
  timestamps. A demux-only pass (``CAP_PROP_FORMAT=-1``: packets are read, not
  decoded) lists every packet's timestamp and keyframe flag
  (``CAP_PROP_LRF_HAS_KEY_FRAME``). Ranges start where that seek decodes the
  fewest extra frames; streams whose timestamps are not a constant frame rate (or
  are missing) are not split. While decoding, every frame a range steps over must
  carry the timestamp the table gives its index, consecutive ranges overlap by one
  frame that both must decode to the same bytes, and a range that meets the end of
  the stream must be the last one with frames. Any disagreement (a seek that
  landed elsewhere: variable frame rate, edit lists, broken timestamps) makes the
  video decode again with one sequential reader, so the result never differs from
  it. (Damaged streams are the exception: there FFmpeg's error concealment depends
  on the decoder's thread count, and with frame threads even on timing, so one
  sequential reader is not reproducible either; each parallel reader runs fewer
  threads.)
* torchcodec is decoded with one reader (not verified on these hosts).
"""

from __future__ import annotations

import binascii
import concurrent.futures
import contextlib
import hashlib
import logging
import math
import os
import tempfile
import threading
from bisect import bisect_right
from dataclasses import dataclass
from typing import Callable, Generic, List, Optional, Sequence, Set, TypeVar

import numpy as np

from sglang.srt.multimodal.quicksviewer_limits import MediaLimits
from sglang.srt.utils.common import _normalize_video_input, load_video

logger = logging.getLogger(__name__)

T = TypeVar("T")

# SGLang's loader is asked for at most this many frames at a time, and the
# transform gets batches of at most this many frames ...
DECODE_CHUNK = 32
# ... and of at most this many bytes of decoded frames (a 4K frame is 25 MB).
BATCH_BYTES = 128 << 20
# A range (one reader) gets at least this many sampled frames.
MIN_FRAMES_PER_RANGE = 8
WORKERS_ENV = "SGLANG_QSV_VIDEO_WORKERS"
MAX_DEFAULT_WORKERS = 16
# CvCapture_FFMPEG::seek(n) seeks to the keyframe before frame n - 16 and decodes
# forward from there.
OPENCV_SEEK_PREROLL = 16


def sample_frame_indices(
    native_fps: float, frame_count: int, fps: float, max_frames: int
) -> List[int]:
    """Frame indices of the original ``opencv_extract_frames_fps``.

    One frame at the middle of every 1/fps seconds, then ``max_frames`` by
    the original's uniform sub-sampling (which keeps all frames when there
    are fewer). Indices past the last frame are dropped, as the original's
    sequential reader silently does.
    """
    if not (native_fps > 0 and math.isfinite(native_fps)):
        raise ValueError(f"video reports an invalid frame rate ({native_fps})")
    fps = min(fps, native_fps)
    step, per_step = round(native_fps), round(fps)
    if step < 1 or per_step < 1:
        raise ValueError(f"video frame rate {native_fps} is below 1 fps")
    indices = [
        int(i + j * native_fps / fps + native_fps / fps / 2)
        for i in range(0, int(frame_count - 1) + 1, step)
        for j in range(per_step)
    ]
    if not indices:
        return []
    gap = len(indices) / max_frames
    picks = sorted({int(i * gap + gap / 2) for i in range(max_frames)})
    return [indices[p] for p in picks if indices[p] < frame_count]


class FrameDecodeError(RuntimeError):
    """The decoder opened the video but could not return its frames."""


class _OpenCVReader:
    """The original's decoder, for hosts without torchcodec and decord.

    ``local=True``: ``source`` is a local path, used as it is. ``threads``: the
    decoder's thread count (OpenCV's default, one per core, when None).
    """

    def __init__(self, source, *, local: bool = False, threads: Optional[int] = None):
        import cv2

        self._cv2 = cv2
        self._tmp = None
        path = source if local else _normalize_video_input(source)
        if isinstance(path, bytes):
            fd, self._tmp = tempfile.mkstemp(suffix=".mp4")
            with os.fdopen(fd, "wb") as f:
                f.write(path)
            path = self._tmp
        if not isinstance(path, str):
            raise ValueError(f"Unsupported video input type: {type(source)}")
        if threads is None:
            self._cap = cv2.VideoCapture(path)
        else:
            self._cap = cv2.VideoCapture(
                path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, threads]
            )
        if not self._cap.isOpened():
            self.close()
            raise ValueError("Could not decode video: OpenCV cannot open it")
        self.avg_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.backend = self._cap.getBackendName()

    def read(self, indices: Sequence[int]):
        """Yield (index, RGB frame) reading sequentially like the original."""
        cv2 = self._cv2
        wanted = set(indices)
        for index, frame in self.scan(indices[0], indices[-1], wanted):
            if index in wanted:
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

    def scan(self, first: int, last: int, keep: Set[int]):
        """Seek to frame ``first``, then step frame by frame to ``last``.

        Yields (index, BGR frame) for the indices in ``keep`` and (index, None)
        for the others (grabbed, not converted); stops at the first frame that
        cannot be read (the end of the stream).
        """
        self._cap.set(self._cv2.CAP_PROP_POS_FRAMES, float(first))
        for index in range(first, last + 1):
            if index in keep:
                ok, frame = self._cap.read()
            else:
                ok, frame = self._cap.grab(), None
            if not ok:
                return
            yield index, frame

    def position_msec(self) -> float:
        """Timestamp of the frame read last, in OpenCV's milliseconds."""
        return self._cap.get(self._cv2.CAP_PROP_POS_MSEC)

    def close(self):
        if getattr(self, "_cap", None) is not None:
            self._cap.release()
            self._cap = None
        if self._tmp is not None:
            os.unlink(self._tmp)
            self._tmp = None


class _SGLangReader:
    """SGLang's own video loader (torchcodec or decord)."""

    def __init__(self, decoder):
        self._decoder = decoder
        self.avg_fps = decoder.avg_fps
        self.frame_count = len(decoder)

    @property
    def backend(self) -> str:
        """ "decord" or "torchcodec": the backend of SGLang's loader."""
        from sglang.srt.utils import video_decoder

        return video_decoder._BACKEND

    def key_indices(self) -> Optional[List[int]]:
        """decord's keyframe table (what its seeks use); None where unknown."""
        if self.backend != "decord":
            return None
        try:
            keys = self._decoder._decoder.get_key_indices()
        except AttributeError:  # not the VideoDecoderWrapper this was written for
            return None
        return [int(k) for k in keys]

    def read_batch(self, indices: Sequence[int]) -> np.ndarray:
        """The frames at ``indices`` as one (N, H, W, 3) uint8 RGB array."""
        indices = list(indices)
        try:
            frames = np.asarray(self._decoder.get_frames_at(indices))
        except Exception as e:
            raise FrameDecodeError(f"video decoder failed: {e}") from e
        if frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
            raise FrameDecodeError(
                f"video decoder returned frames of shape {frames.shape}"
            )
        return frames

    def read(self, indices: Sequence[int]):
        for start in range(0, len(indices), DECODE_CHUNK):
            chunk = list(indices[start : start + DECODE_CHUNK])
            yield from zip(chunk, self.read_batch(chunk))

    def close(self):
        close = getattr(self._decoder, "close", None)
        if close is not None:
            close()


def _not_a_video_source(source: str, error: Exception) -> ValueError:
    # SGLang reads a string that is no file, URL or data URL as base64
    return ValueError(
        f"Video {source[:100]!r} is neither an existing file, a URL nor "
        f"base64 data ({error})"
    )


def open_video(source):
    """A frame reader over ``source`` (path, URL, data URL, base64 or bytes)."""
    try:
        return _SGLangReader(load_video(source, use_gpu=False))
    except ImportError:
        return _OpenCVReader(source)
    except binascii.Error as e:
        raise _not_a_video_source(source, e) from e


# --------------------------------------------------------------- parallel decode
@dataclass
class DecodedVideo(Generic[T]):
    """What ``decode_video`` returns.

    ``results[b]`` is ``transform(frames, batches[b])`` (the frames themselves,
    (n, H, W, 3) uint8 RGB, without a transform); the batches are in frame order
    and together hold ``indices``, the frames decoded (sampled frames past the real
    end of the stream are dropped). ``decoder`` is "decord", "torchcodec" or
    "opencv"; ``fallback`` says why OpenCV decoded a video SGLang's loader opened.
    ``readers``: how many readers decoded it in the end.
    """

    results: List[T]
    batches: List[List[int]]
    indices: List[int]
    timestamps: List[str]
    avg_fps: float
    frame_count: int
    decoder: str
    readers: int
    fallback: Optional[str] = None

    def frames(self) -> np.ndarray:
        """All frames as one (N, H, W, 3) array (only without a transform)."""
        return np.concatenate(self.results) if self.results else np.empty((0,))


def default_workers() -> int:
    """``$SGLANG_QSV_VIDEO_WORKERS``, else one per core up to 16."""
    value = os.environ.get(WORKERS_ENV, "").strip()
    if value:
        try:
            workers = int(value)
        except ValueError:
            workers = 0
        if workers < 1:
            raise ValueError(f"{WORKERS_ENV}={value!r}: expected a positive integer")
        return workers
    return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))


_POOL: Optional[concurrent.futures.ThreadPoolExecutor] = None
_POOL_PID: Optional[int] = None
_POOL_LOCK = threading.Lock()
_THREAD = threading.local()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    """The process-wide decoding pool, sized by ``default_workers()`` when first used;
    every request's readers share it. A forked child (whose copy has no threads)
    makes its own."""
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():
            _POOL = concurrent.futures.ThreadPoolExecutor(
                max_workers=default_workers(), thread_name_prefix="qsv-video"
            )
            _POOL_PID = os.getpid()
        return _POOL


class _Cancelled(Exception):
    """A range stopped because an earlier one failed."""


class _Mismatch(Exception):
    """A parallel OpenCV range disagrees with what one sequential reader decodes."""


class _Stop:
    """Ranges after the first failed one stop at their next frame."""

    def __init__(self):
        self._lock = threading.Lock()
        self.after = math.inf

    def stop_after(self, position: float):
        with self._lock:
            self.after = min(self.after, position)

    def check(self, position: int):
        if position > self.after:
            raise _Cancelled()


@dataclass
class _Range:
    """A contiguous run of the sampled frames, decoded by one reader."""

    wanted: List[int]
    # OpenCV: seek to ``first``, step to ``last``; hash the frames in ``overlap``
    first: int = 0
    last: int = 0
    overlap: frozenset = frozenset()


@dataclass
class _RangeOut:
    batches: List[List[int]]
    results: list
    last_seen: Optional[int] = None
    digests: Optional[dict] = None


def _batch_frames(frame_bytes: int) -> int:
    return max(1, min(DECODE_CHUNK, BATCH_BYTES // max(1, frame_bytes)))


def _identity(frames, indices):
    return frames


def _run_ranges(tasks: List[Callable[[_Stop, int], _RangeOut]]) -> List[_RangeOut]:
    """Run one task per range on the shared pool (inline when already on it).

    Waits for every task. An error in range c stops ranges after c; the error of
    the first failed range is raised (a _Mismatch first: it redoes everything).
    """
    stop = _Stop()
    if getattr(_THREAD, "in_pool", False):
        return [task(stop, c) for c, task in enumerate(tasks)]

    def run(task, position):
        _THREAD.in_pool = True
        try:
            return task(stop, position)
        except _Mismatch:
            stop.stop_after(-1)
            raise
        except BaseException:
            stop.stop_after(position)
            raise
        finally:
            _THREAD.in_pool = False

    pool = _pool()
    futures = [pool.submit(run, task, c) for c, task in enumerate(tasks)]
    concurrent.futures.wait(futures)
    errors = [f.exception() for f in futures]
    mismatch = [e for e in errors if isinstance(e, _Mismatch)]
    if mismatch:
        raise mismatch[0]
    for error in errors:
        if error is not None and not isinstance(error, _Cancelled):
            raise error
    return [f.result() for f in futures]


def _split(
    indices: Sequence[int],
    n_ranges: int,
    valid: Callable[[int], bool],
    cost: Callable[[int], float] = lambda k: 0.0,
) -> List[int]:
    """Positions where ranges start (0 first): near equal shares of the sampled
    frames, only at ``valid`` positions, trading ``cost`` (frames decoded twice)
    against imbalance (frames one range decodes more than its share)."""
    n = len(indices)
    spacing = (indices[-1] - indices[0]) / max(1, n - 1)
    starts = [0]
    for c in range(1, n_ranges):
        target, half = c * n / n_ranges, n / (2 * n_ranges)
        lo = max(starts[-1] + MIN_FRAMES_PER_RANGE, math.ceil(target - half))
        hi = min(n - MIN_FRAMES_PER_RANGE, math.floor(target + half))
        best = None
        for k in range(lo, hi + 1):
            if valid(k):
                score = cost(k) + abs(k - target) * spacing
                if best is None or score < best[0]:
                    best = (score, k)
        if best is not None:
            starts.append(best[1])
    return starts


def _ranges(indices: Sequence[int], starts: List[int]) -> List[_Range]:
    bounds = starts + [len(indices)]
    return [_Range(list(indices[a:b])) for a, b in zip(bounds, bounds[1:])]


# Local media access: SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH lists the directories
# (os.pathsep-separated, like vLLM's --allowed-local-media-path) from which local
# paths and file:// URLs may be read. Unset: any regular file, as SGLang reads them.
ALLOWED_MEDIA_ENV = "SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH"
# never media, whatever the allowlist says
_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def allowed_media_dirs() -> Optional[List[str]]:
    """The allowlist from the environment (real paths), or None when unset."""
    value = os.environ.get(ALLOWED_MEDIA_ENV)
    if value is None:
        return None
    return [os.path.realpath(d) for d in value.split(os.pathsep) if d.strip()]


def check_local_media(source, allowed: Optional[List[str]]) -> None:
    """Refuse a local path or file:// URL that is not a regular file inside the
    allowed directories (symlinks resolved first). URLs, data URLs, base64 and bytes
    are not local paths and pass."""
    source = getattr(source, "url", source)
    if not isinstance(source, str) or source.startswith(("http://", "https://")):
        return
    if source.startswith("data:"):
        return
    path = source[len("file://") :] if source.startswith("file://") else source
    if not source.startswith("file://") and not os.path.lexists(path):
        return  # not a path: base64, or a missing file the decoder reports
    real = os.path.realpath(path)
    if real.startswith(tuple(p + os.sep for p in _PSEUDO_FILESYSTEMS)) or not (
        os.path.isfile(real)
    ):
        raise ValueError(f"Local media {source[:200]!r} is not a regular file")
    if allowed is not None and not any(
        real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in allowed
    ):
        raise ValueError(
            f"Local media {source[:200]!r} is outside the directories the server "
            f"allows ({ALLOWED_MEDIA_ENV})"
        )


@contextlib.contextmanager
def _local_file(source, limits: MediaLimits):
    """(local path, what to hand SGLang's loader) for ``source``: downloads,
    data URLs, base64 and bytes go to a temporary file, removed afterwards. The
    size limit applies to all of them, and the download has a deadline."""
    source = getattr(source, "url", source)
    if isinstance(source, str) and not source.strip():
        raise ValueError("The video URL is empty")
    limits.check_encoded(source, "video")
    try:
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            resolved = limits.fetch(source, "video")
        else:
            resolved = _normalize_video_input(source)
    except binascii.Error as e:
        raise _not_a_video_source(source, e) from e
    if isinstance(resolved, str):
        if os.path.isfile(resolved):
            limits.check_bytes(os.path.getsize(resolved), "video")
        yield resolved, source
        return
    if not isinstance(resolved, bytes):
        raise ValueError(f"Unsupported video input type: {type(source)}")
    fd, path = tempfile.mkstemp(prefix="qsv-video-", suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(resolved)
        del resolved
        try:
            yield path, path
        except ValueError as e:
            # never show the client our temporary file
            if path not in str(e):
                raise
            raise ValueError(str(e).replace(path, "the uploaded video")) from e
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def decode_video(
    source,
    *,
    fps: float,
    max_frames: int,
    workers: Optional[int] = None,
    transform: Optional[Callable[[np.ndarray, List[int]], T]] = None,
    limits: Optional[MediaLimits] = None,
) -> DecodedVideo[T]:
    """Decode the sampled frames of ``source`` (a path, file:// or http(s) URL,
    data URL, base64 string or bytes) with up to ``workers`` readers.

    ``transform(frames, indices)`` runs on the decoding threads for every batch of
    (n, H, W, 3) uint8 RGB frames. Raises ValueError for what cannot be decoded
    and for what exceeds ``limits`` (bytes, duration, frame size; the defaults
    of quicksviewer_limits when None).
    """
    limits = MediaLimits() if limits is None else limits
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    if getattr(_THREAD, "in_pool", False):
        workers = 1
    transform = transform or _identity
    with _local_file(source, limits) as (path, loader_source):
        try:
            reader = _SGLangReader(load_video(loader_source, use_gpu=False))
        except ImportError:
            reader = None
        fallback = None
        if reader is not None:
            limits.check_video(reader.frame_count, reader.avg_fps)
            try:
                return _decode_sglang(
                    reader, loader_source, fps, max_frames, workers, transform
                )
            except FrameDecodeError as e:
                # decord fails on some valid streams (e.g. odd frame sizes); the
                # original decodes with OpenCV, so that is the faithful fallback
                logger.warning("%s; decoding the video with OpenCV instead", e)
                fallback = str(e)
        result = _decode_opencv(path, fps, max_frames, workers, transform, limits)
        result.fallback = fallback
        return result


def _result(meta, outs: List[_RangeOut], decoder: str) -> DecodedVideo:
    avg_fps, frame_count = meta
    batches = [b for out in outs for b in out.batches]
    indices = [i for b in batches for i in b]
    return DecodedVideo(
        results=[r for out in outs for r in out.results],
        batches=batches,
        indices=indices,
        timestamps=[str(round(i / avg_fps, 1)) for i in indices],
        avg_fps=avg_fps,
        frame_count=frame_count,
        decoder=decoder,
        readers=len(outs),
    )


# ------------------------------------------------------------- SGLang's loader
def _decord_boundaries(indices, keys: List[int], frame_count: int):
    """valid(k): decord's sequential reader seeks to a keyframe for indices[k]."""

    def locate(pos):  # VideoReader::LocateKeyframe
        if not keys or pos <= keys[0]:
            return 0
        if pos >= frame_count:
            return keys[-1]
        return keys[bisect_right(keys, pos) - 1]

    def valid(k):
        # after reading indices[k - 1] decord stands at indices[k - 1] + 1
        here, after_previous = indices[k], indices[k - 1] + 1
        return here != after_previous and locate(here) != locate(after_previous)

    return valid


def _decode_sglang(reader, loader_source, fps, max_frames, workers, transform):
    meta = (reader.avg_fps, reader.frame_count)
    try:
        indices = sample_frame_indices(*meta, fps, max_frames)
        if not indices:
            raise ValueError("Could not decode video: it reports no frames")
        starts = [0]
        n_ranges = min(workers, len(indices) // MIN_FRAMES_PER_RANGE)
        keys = reader.key_indices() if n_ranges > 1 else None
        if keys is not None:
            valid = _decord_boundaries(indices, keys, reader.frame_count)
            starts = _split(indices, n_ranges, valid)
        decoder = reader.backend
    except BaseException:
        reader.close()
        raise

    unused = [reader]  # fresh: range 0 reads with it

    def task(rng: _Range):
        def run(stop: _Stop, position: int) -> _RangeOut:
            stop.check(position)
            if position == 0:
                rd = unused.pop()
            else:
                rd = _SGLangReader(load_video(loader_source, use_gpu=False))
            out = _RangeOut([], [])
            try:
                k, size = 0, 1  # the first frame tells how many fit a batch
                while k < len(rng.wanted):
                    stop.check(position)
                    batch = rng.wanted[k : k + size]
                    frames = rd.read_batch(batch)
                    out.batches.append(batch)
                    out.results.append(transform(frames, batch))
                    k += len(batch)
                    size = _batch_frames(frames[0].nbytes)
            finally:
                rd.close()
            return out

        return run

    try:
        outs = _run_ranges([task(rng) for rng in _ranges(indices, starts)])
    finally:
        for rd in unused:  # range 0 never ran
            rd.close()
    return _result(meta, outs, decoder)


# ---------------------------------------------------------------------- OpenCV
class _PacketTable:
    """Every packet of the video stream, from a demux-only OpenCV pass.

    ``msec[i]``: OpenCV's timestamp of frame i in presentation order (frames are
    the packets sorted by timestamp); ``checked[i]``: whether a decoded frame
    reports that timestamp (OpenCV reports a frame of pts 0 by its dts);
    ``keyframes``: presentation indices of the keyframe packets.
    """

    def __init__(self, msec, checked, keyframes):
        self.msec, self.checked, self.keyframes = msec, checked, keyframes

    @classmethod
    def scan(cls, path: str, avg_fps: float) -> Optional["_PacketTable"]:
        """The table, or None where OpenCV's seeks cannot be trusted to number
        frames like a sequential read (no timestamps, no constant frame rate)."""
        import cv2

        cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG, [cv2.CAP_PROP_FORMAT, -1])
        msec, zero, key = [], [], []
        try:
            if not cap.isOpened():
                return None
            while cap.grab():
                msec.append(cap.get(cv2.CAP_PROP_POS_MSEC))
                zero.append(cap.get(cv2.CAP_PROP_PTS) == 0)
                key.append(cap.get(cv2.CAP_PROP_LRF_HAS_KEY_FRAME) != 0)
        finally:
            cap.release()
        if len(msec) < 2:
            return None
        order = sorted(range(len(msec)), key=msec.__getitem__)
        sorted_msec = [msec[p] for p in order]
        # after a seek OpenCV numbers a frame int(fps * sec + 0.5) - (that of
        # frame 0); require that to be its position, away from rounding ties
        scaled = [avg_fps * m / 1000.0 for m in sorted_msec]
        base = math.floor(scaled[0] + 0.5)
        for i, x in enumerate(scaled):
            if math.floor(x + 0.5) - base != i or abs(x - math.floor(x) - 0.5) < 0.05:
                return None
        keyframes = sorted(i for i, p in enumerate(order) if key[p])
        return cls(sorted_msec, [not zero[p] for p in order], keyframes)

    def decode_start(self, frame: int) -> int:
        """The keyframe a seek to ``frame`` decodes from."""
        target = max(frame - OPENCV_SEEK_PREROLL, 0)
        k = bisect_right(self.keyframes, target) - 1
        return self.keyframes[k] if k >= 0 else 0

    def check(self, index: int, msec: float):
        if index >= len(self.msec) or (
            self.checked[index] and msec != self.msec[index]
        ):
            expected = self.msec[index] if index < len(self.msec) else "no frame"
            raise _Mismatch(
                f"frame {index} has timestamp {msec} ms, the stream says {expected}"
            )


def _opencv_ranges(indices, table: _PacketTable, n_ranges: int) -> List[_Range]:
    """Ranges whose seeks decode few frames twice; consecutive ranges share the
    frame before the later one's first sampled frame."""

    def valid(k):  # room for the shared frame between the two sampled ones
        return indices[k] - indices[k - 1] >= 2

    def cost(k):  # frames the seek to indices[k] - 1 decodes before it
        return indices[k] - table.decode_start(indices[k] - 1)

    ranges = _ranges(indices, _split(indices, n_ranges, valid, cost))
    for c, rng in enumerate(ranges):
        rng.first = rng.wanted[0] - 1 if c else rng.wanted[0]
        rng.last = (
            ranges[c + 1].wanted[0] - 1 if c + 1 < len(ranges) else rng.wanted[-1]
        )
        rng.overlap = frozenset(
            ([rng.first] if c else []) + ([rng.last] if c + 1 < len(ranges) else [])
        )
    return ranges


def _reader_threads(n_ranges: int) -> int:
    """FFmpeg threads of each of ``n_ranges`` parallel OpenCV readers: the cores
    shared out (one sequential reader takes one per core)."""
    return max(1, (os.cpu_count() or 1) // n_ranges)


class _Batcher:
    """Collects RGB frames into batches and runs the transform on each."""

    def __init__(self, cv2, transform, total: int):
        self._cv2, self._transform, self._left = cv2, transform, total
        self._buffer, self._indices = None, []
        self.out = _RangeOut([], [])

    def add(self, index: int, bgr: np.ndarray):
        if self._buffer is not None and bgr.shape != self._buffer.shape[1:]:
            self.flush()
        if self._buffer is None:
            size = min(self._left, _batch_frames(bgr.nbytes))
            self._buffer = np.empty((size,) + bgr.shape, dtype=np.uint8)
        dst = self._buffer[len(self._indices)]
        self._cv2.cvtColor(bgr, self._cv2.COLOR_BGR2RGB, dst=dst)
        self._indices.append(index)
        self._left -= 1
        if len(self._indices) == len(self._buffer):
            self.flush()

    def flush(self):
        if self._indices:
            frames = self._buffer[: len(self._indices)]
            self.out.batches.append(self._indices)
            self.out.results.append(self._transform(frames, self._indices))
        self._buffer, self._indices = None, []


def _opencv_task(path, rng: _Range, table, threads, transform, reader=None):
    def run(stop: _Stop, position: int) -> _RangeOut:
        stop.check(position)
        rd = reader or _OpenCVReader(path, local=True, threads=threads)
        try:
            cv2 = rd._cv2
            wanted = set(rng.wanted)
            batcher = _Batcher(cv2, transform, len(rng.wanted))
            digests = {}
            last_seen = None
            for index, frame in rd.scan(rng.first, rng.last, wanted | rng.overlap):
                stop.check(position)
                if table is not None:
                    table.check(index, rd.position_msec())
                if index in rng.overlap:
                    digests[index] = hashlib.blake2b(frame, digest_size=16).digest()
                if index in wanted:
                    batcher.add(index, frame)
                last_seen = index
            batcher.flush()
        finally:
            rd.close()
        batcher.out.last_seen, batcher.out.digests = last_seen, digests
        return batcher.out

    return run


def _check_seams(ranges: List[_Range], outs: List[_RangeOut]):
    """The ranges decoded what one sequential reader decodes, seam by seam."""
    for c in range(len(ranges) - 1):
        here, after = outs[c], outs[c + 1]
        if here.last_seen != ranges[c].last:
            # the stream ended (or broke) here: a sequential read stops too
            if any(out.last_seen is not None for out in outs[c + 1 :]):
                raise _Mismatch(f"range {c} ended at frame {here.last_seen}")
            return
        seam = ranges[c].last
        if here.digests.get(seam) != after.digests.get(seam):
            raise _Mismatch(f"the two ranges decode frame {seam} differently")


def _decode_opencv(path, fps, max_frames, workers, transform, limits):
    reader = _OpenCVReader(path, local=True)
    meta = (reader.avg_fps, reader.frame_count)
    limits.check_video(reader.frame_count, reader.avg_fps)
    try:
        indices = sample_frame_indices(*meta, fps, max_frames)
        if not indices:
            raise ValueError("Could not decode video: it reports no frames")
        n_ranges = min(workers, len(indices) // MIN_FRAMES_PER_RANGE)
        table = None
        if n_ranges > 1 and reader.backend == "FFMPEG":
            table = _PacketTable.scan(path, reader.avg_fps)
    except BaseException:
        reader.close()
        raise
    if table is not None:
        ranges = _opencv_ranges(indices, table, n_ranges)
        if len(ranges) > 1:
            reader.close()
            threads = _reader_threads(len(ranges))
            tasks = [_opencv_task(path, r, table, threads, transform) for r in ranges]
            try:
                outs = _run_ranges(tasks)
                _check_seams(ranges, outs)
                return _result(meta, outs, "opencv")
            except _Mismatch as e:
                logger.warning(
                    "parallel OpenCV decoding disagrees with a sequential read (%s); "
                    "decoding the video with one reader",
                    e,
                )
            reader = _OpenCVReader(path, local=True)
    # one sequential reader: exactly the original's read
    rng = _ranges(indices, [0])[0]
    rng.first, rng.last = indices[0], indices[-1]
    outs = _run_ranges([_opencv_task(path, rng, None, None, transform, reader)])
    return _result(meta, outs, "opencv")
