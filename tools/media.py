"""Synthetic videos written with OpenCV (``mp4v``), seeded and time-varying: the
clips of the tests, the demo, the benchmarks and the GPU CI.

Every frame has a background colour that drifts over time and a few moving shapes
whose speed changes at seeded "scene cuts", so consecutive SigLIP features differ and
the cubing network has signal. Small resolutions keep decoding fast.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterator

import numpy as np

# name -> (seconds, fps, width, height)
STANDARD_VIDEOS = {
    "12s_30fps": (12, 30.0, 96, 64),
    "75s_10fps": (75, 10.0, 48, 32),
    "500s_4fps": (500, 4.0, 32, 24),
    "20s_29.97fps": (20, 29.97, 64, 48),
    # portrait and shrunk in height: the case where Pillow 13's bicubic pass order
    # differs from Pillow <= 12's (the original's), see quicksviewer_resize
    "6s_portrait": (6, 10.0, 360, 640),
}


def video_frames(
    seconds: float,
    fps: float,
    width: int = 96,
    height: int = 64,
    seed: int = 0,
) -> Iterator[np.ndarray]:
    """The ``round(seconds * fps)`` BGR frames of the clip of ``seed``, one by one.

    Each shape is a disc drawn where ``(x - cx)**2 + (y - cy)**2 < r**2``. Only
    the disc's bounding box is evaluated: it reaches at least one pixel past
    ``cx +- r`` and ``cy +- r``, and a pixel beyond that is more than ``r + 1``
    away along one axis, so it is outside the disc in any rounding. The frames are
    the ones the whole-frame test gives (tests/tree/test_media.py).
    """
    rng = np.random.default_rng(seed)
    num_frames = int(round(seconds * fps))
    shapes = [
        {
            "pos": rng.uniform(0, 1, size=2),
            "vel": rng.uniform(-0.05, 0.05, size=2),
            "size": rng.uniform(0.1, 0.35),
            "color": rng.integers(0, 256, size=3).tolist(),
        }
        for _ in range(3)
    ]
    cuts = set(rng.choice(num_frames, size=max(1, num_frames // 40), replace=False))
    base = rng.integers(0, 256, size=3).astype(np.float64)
    drift = rng.uniform(-2, 2, size=3)
    ys, xs = np.mgrid[0:height, 0:width]
    for i in range(num_frames):
        if i in cuts:
            base = rng.integers(0, 256, size=3).astype(np.float64)
            for shape in shapes:
                shape["vel"] = rng.uniform(-0.08, 0.08, size=2)
        frame = np.empty((height, width, 3), dtype=np.uint8)
        frame[:] = np.clip(base + drift * (i % 50), 0, 255).astype(np.uint8)
        for shape in shapes:
            shape["pos"] = (shape["pos"] + shape["vel"]) % 1.0
            cx, cy = shape["pos"][0] * width, shape["pos"][1] * height
            radius = shape["size"] * min(width, height)
            x0 = max(0, math.floor(cx - radius))
            x1 = min(width, math.ceil(cx + radius) + 1)
            y0 = max(0, math.floor(cy - radius))
            y1 = min(height, math.ceil(cy + radius) + 1)
            box = (slice(y0, y1), slice(x0, x1))
            mask = (xs[box] - cx) ** 2 + (ys[box] - cy) ** 2 < radius**2
            frame[box][mask] = shape["color"]
        yield frame


def write_video(
    path: Path,
    seconds: float,
    fps: float,
    width: int = 96,
    height: int = 64,
    seed: int = 0,
) -> Path:
    """Write the frames of ``video_frames`` to ``path`` (mp4v).

    The file appears complete or not at all: it is written beside ``path`` and
    renamed, so an interrupted run never leaves a truncated clip that a later run
    would take for a finished one.
    """
    import cv2

    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    writer = cv2.VideoWriter(
        str(partial), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    try:
        for frame in video_frames(seconds, fps, width, height, seed):
            writer.write(frame)
    except BaseException:
        writer.release()
        partial.unlink(missing_ok=True)
        raise
    writer.release()
    os.replace(partial, path)
    return path


def standard_video(directory: Path, name: str, seed: int = 0) -> Path:
    """One of ``STANDARD_VIDEOS``, written into ``directory`` once."""
    seconds, fps, width, height = STANDARD_VIDEOS[name]
    path = Path(directory) / f"{name}.mp4"
    if not path.exists():
        write_video(path, seconds, fps, width, height, seed)
    return path
