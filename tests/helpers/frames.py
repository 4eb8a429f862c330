"""Frame sampling and decoding helpers of the video tests (test_model_video_decoding,
test_quicksviewer_parallel_decode): the frame indices and timestamps the original
reads, the index cases, and comparing decoded frames."""

from __future__ import annotations

import numpy as np

from qsv_reference.video import sample_frame_indices


def original_frame_indices(
    source_fps: float, frame_count: int, fps: float = 1, num_frames: int = 420
) -> list[int]:
    """The original's ``opencv_extract_frames_fps`` indices: the reference's
    ``sample_frame_indices`` (qsv_reference/video.py, steps 2 and 3), less those past
    the stream's end (the sequential read loop ends when read() fails)."""
    kept = sample_frame_indices(source_fps, frame_count, num_frames, fps)
    return [index for index in kept if index < frame_count]


def original_timestamps(indices: list[int], source_fps: float) -> list[str]:
    """The prompt text of each frame's timestamp: ``str(round(index / FPS, 1))``."""
    return [str(round(index / source_fps, 1)) for index in indices]


# (source fps, frame count) -> what the original reads; the standard videos first
INDEX_CASES = {
    "12s_30fps": (30.0, 360),
    "75s_10fps": (10.0, 750),
    "500s_4fps": (4.0, 2000),
    "20s_29.97fps": (29.97, 599),
    "600s_25fps": (25.0, 15000),
    "60s_23.976fps": (23.976, 1439),
    "exactly_420s_4fps": (4.0, 1680),
    "421s_4fps": (4.0, 1684),
    "last_candidate_past_the_end": (30.0, 31),
    "1s_30fps": (30.0, 30),
}


def frames_of(reader, indices):
    try:
        pairs = list(reader.read(indices))
    finally:
        reader.close()
    return [index for index, _ in pairs], [np.asarray(frame) for _, frame in pairs]


def assert_same_frames(name, got, expected):
    assert len(got) == len(expected), f"{name}: {len(got)} frames, {len(expected)}"
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == np.uint8 and a.shape == b.shape, (name, i, a.shape, b.shape)
        assert np.array_equal(a, b), f"{name}: frame #{i} differs"
