"""Frame extraction identical to the original ``opencv_extract_frames_fps``.

The original (quicksviewer/utils/data_util.py) is called by serve/cli.py and the eval
scripts with ``num_frames=420, fps=1``. It

1. reads ``CAP_PROP_FPS`` (FPS) and ``CAP_PROP_FRAME_COUNT`` (FCOUNT) from OpenCV,
2. lists one candidate per ``round(FPS)`` source frames at the middle of each second:
   ``int(i + ii * FPS / fps + FPS / fps / 2)`` for ``i`` in ``range(0, int(FCOUNT - 1)
   + 1, round(FPS))`` and ``ii`` in ``range(round(fps))`` with ``fps = min(fps, FPS)``,
3. keeps at most ``num_frames`` of them with ``uniform_sample`` (gap = len / n, indices
   ``int(i * gap + gap / 2)`` deduplicated and sorted; when n >= len this keeps all),
4. seeks once to the first index and then reads SEQUENTIALLY up to the last index,
   keeping each frame whose running index is in the list, converted BGR -> RGB,
5. stamps each kept frame with ``round(index / FPS, 1)`` (a Python float; the prompt
   renders it with ``str``).

Frames past the real end of the stream are silently dropped (the read loop stops when
``read()`` fails), so a video can yield one frame less than listed. Exact seeking and
``FRAME_COUNT`` depend on the FFmpeg build behind OpenCV; parity tests should feed
both implementations the same decoded frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qsv_reference.constants import VIDEO_FPS, VIDEO_MAX_FRAMES


@dataclass
class VideoFrames:
    """Decoded frames (RGB uint8, H x W x 3), their source indices and timestamps."""

    frames: list[np.ndarray]
    indices: list[int]
    timestamps: list[float]
    source_fps: float
    source_frame_count: int

    def array(self) -> np.ndarray:
        """The frames stacked to (N, H, W, 3) like serve/cli.py's ``load_video``."""
        return np.stack(self.frames, axis=0)


class VideoReadError(RuntimeError):
    """The video cannot be opened or has no usable frame rate or frames."""


def uniform_sample(items: list, n: int) -> tuple[list, list[int]]:
    """The original ``uniform_sample``: mid-gap positions, deduplicated and sorted."""
    gap = len(items) / n
    positions = sorted({int(i * gap + gap / 2) for i in range(n)})
    return [items[p] for p in positions], positions


def candidate_frame_indices(
    source_fps: float, frame_count: float, fps: float = VIDEO_FPS
) -> list[int]:
    """Step 2 of the module docstring: one index per sampled instant, before the cap."""
    fps = min(fps, source_fps)
    end = int(frame_count - 1)
    step = round(source_fps)
    per_second = round(fps)
    return [
        int(i + ii * source_fps / fps + source_fps / fps / 2)
        for i in range(0, end + 1, step)
        for ii in range(per_second)
    ]


def sample_frame_indices(
    source_fps: float,
    frame_count: float,
    num_frames: int | None = VIDEO_MAX_FRAMES,
    fps: float = VIDEO_FPS,
) -> list[int]:
    """The frame indices the original tries to read (steps 2 and 3)."""
    indices = candidate_frame_indices(source_fps, frame_count, fps)
    if num_frames is not None:
        indices = uniform_sample(indices, num_frames)[0]
    return indices


def extract_frames(
    path: str | Path,
    num_frames: int | None = VIDEO_MAX_FRAMES,
    fps: float = VIDEO_FPS,
) -> VideoFrames:
    """Decode ``path`` like ``opencv_extract_frames_fps(path, num_frames, fps)``."""
    import cv2

    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoReadError(f"OpenCV cannot open {path}")
    try:
        source_fps = capture.get(cv2.CAP_PROP_FPS)
        frame_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        if not source_fps or source_fps <= 0:
            raise VideoReadError(f"{path} reports no frame rate ({source_fps})")
        wanted = sample_frame_indices(source_fps, frame_count, num_frames, fps)
        if not wanted:
            raise VideoReadError(f"{path} yields no frame to sample")
        wanted_set = set(wanted)
        frames, indices, timestamps = [], [], []
        capture.set(cv2.CAP_PROP_POS_FRAMES, float(wanted[0]))
        ok, frame = capture.read()
        index = wanted[0]
        while ok and index <= wanted[-1]:
            if index in wanted_set:
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                indices.append(index)
                timestamps.append(round(index / source_fps, 1))
            ok, frame = capture.read()
            index += 1
    finally:
        capture.release()
    if not frames:
        raise VideoReadError(f"{path}: no frame could be decoded")
    return VideoFrames(frames, indices, timestamps, source_fps, int(frame_count))
