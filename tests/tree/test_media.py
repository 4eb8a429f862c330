"""tools/media.py: the synthetic clips of the tests, benchmarks and GPU CI.

``video_frames`` draws each disc in its bounding box only (to write the GPU CI's
720p clips several times faster); the frames must be the ones the whole-frame
formula gives, written out here on its own. ``write_video`` must never leave a
partial file under the clip's name.
"""

import numpy as np
import pytest

from tools.media import video_frames, write_video


def whole_frame_clip(seconds, fps, width, height, seed):
    """The clip as the formula gives it on every pixel of every frame."""
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
    frames = []
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
            frame[(xs - cx) ** 2 + (ys - cy) ** 2 < radius**2] = shape["color"]
        frames.append(frame)
    return frames


# (seconds, fps, width, height, seed): the standard clips' shapes, a portrait one,
# odd sizes, a 1-pixel-high one, and long enough that discs cross every edge
CASES = [
    (12, 30.0, 96, 64, 0),
    (20, 10.0, 32, 24, 1),
    (6, 10.0, 36, 64, 3),
    (30, 4.0, 33, 17, 5),
    (10, 3.0, 7, 1, 7),
    (4, 5.0, 128, 72, 9),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_the_frames_are_the_whole_frame_formulas(case):
    seconds, fps, width, height, seed = case
    expected = whole_frame_clip(seconds, fps, width, height, seed)
    got = list(video_frames(seconds, fps, width, height, seed))
    assert len(got) == len(expected) == int(round(seconds * fps))
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == np.uint8 and a.shape == (height, width, 3)
        assert np.array_equal(a, b), f"frame {i}"
    # the discs are drawn (the background alone would not test the boxes)
    colours = {tuple(p) for f in expected for p in f.reshape(-1, 3)}
    assert len(colours) > len({tuple(f[0, 0]) for f in expected})


def test_write_video_writes_the_frames_and_no_partial_file(tmp_path):
    import cv2

    path = write_video(tmp_path / "clip.mp4", 3, 10.0, 64, 48, seed=4)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    cap = cv2.VideoCapture(str(path))
    decoded = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        decoded.append(frame)
    cap.release()
    assert len(decoded) == 30
    # mp4v is lossy: each decoded frame is nearest to its own source frame
    source = list(video_frames(3, 10.0, 64, 48, seed=4))
    for i, frame in enumerate(decoded):
        errors = [np.abs(frame.astype(int) - s.astype(int)).mean() for s in source]
        assert int(np.argmin(errors)) == i


def test_an_interrupted_write_leaves_no_clip(tmp_path, monkeypatch):
    import tools.media as media

    def broken(*args, **kwargs):
        yield np.zeros((48, 64, 3), np.uint8)
        raise KeyboardInterrupt

    monkeypatch.setattr(media, "video_frames", broken)
    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "clip.mp4", 3, 10.0, 64, 48)
    assert list(tmp_path.iterdir()) == []
