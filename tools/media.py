"""Synthetic videos written with OpenCV (``mp4v``), seeded and time-varying: the
clips of the tests, the demo, the benchmarks and the GPU CI.

Every frame has a background colour that drifts over time and a few moving shapes
whose speed changes at seeded "scene cuts", so consecutive SigLIP features differ and
the cubing network has signal. Small resolutions keep decoding fast.
"""

from __future__ import annotations

from pathlib import Path

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


def write_video(
    path: Path,
    seconds: float,
    fps: float,
    width: int = 96,
    height: int = 64,
    seed: int = 0,
) -> Path:
    """Write ``round(seconds * fps)`` BGR frames of moving shapes to ``path``."""
    import cv2

    rng = np.random.default_rng(seed)
    num_frames = int(round(seconds * fps))
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
    )
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
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
            mask = (xs - cx) ** 2 + (ys - cy) ** 2 < radius**2
            frame[mask] = shape["color"]
        writer.write(frame)
    writer.release()
    return path


def standard_video(directory: Path, name: str, seed: int = 0) -> Path:
    """One of ``STANDARD_VIDEOS``, written into ``directory`` once."""
    seconds, fps, width, height = STANDARD_VIDEOS[name]
    path = Path(directory) / f"{name}.mp4"
    if not path.exists():
        write_video(path, seconds, fps, width, height, seed)
    return path
