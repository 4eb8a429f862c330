"""Video decoding of the Quicksviewer processor: every decoder gives the same frames.

The original decodes with OpenCV (``opencv_extract_frames_fps``). SGLang's processor
decodes with SGLang's own loader (decord on this host, torchcodec where installed),
falls back to OpenCV where neither is importable, and falls back to OpenCV when decord
opens a stream but cannot batch-decode it. For the standard test videos (mp4 files
written by tools/media.py and decoded for real) this module checks that

* the frame indices are the original formula's, the reference's
  (``qsv_reference.video.sample_frame_indices``, through tests/helpers/frames.py: 1
  frame at the middle of every second, at most 420 by uniform sub-sampling with dedup,
  frames past the end dropped), and the timestamps are printed as the original prints
  them, ``str(round(index / fps, 1))``;
* SGLang's loader through the processor's reader, the processor's OpenCV reader,
  decord called directly and the reference's OpenCV algorithm
  (``qsv_reference.video.extract_frames``) return byte-identical frames;
* with ``import decord`` failing (a subprocess) the processor decodes with OpenCV and
  produces the same pixels and timestamps;
* the 75 s video (48 x 32), which decord 0.6.0 mis-decodes, still yields the OpenCV
  frames, pixels and timestamps.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.helpers.frames import (
    INDEX_CASES,
    assert_same_frames,
    frames_of,
    original_frame_indices,
    original_timestamps,
)
from tests.helpers.pixels import processor_pixels
from tests.helpers.project import PROJECT_ROOT
from tools.media import STANDARD_VIDEOS

VIDEOS = sorted(STANDARD_VIDEOS)
# decord 0.6.0 fails on this one ("DECORDArrayCopyFromTo: The size must exactly
# match"): frames of width 48 are not copied out of its padded buffer.
DECORD_BROKEN = "75s_10fps"
SUBPROCESS_TIMEOUT_S = 180


def opencv_properties(path) -> tuple[float, int]:
    import cv2

    capture = cv2.VideoCapture(str(path))
    try:
        return capture.get(cv2.CAP_PROP_FPS), int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        capture.release()


def processor_script(checkpoint) -> str:
    """Python that builds the real QuicksviewerProcessor as ``processor``."""
    return textwrap.dedent(
        f"""
        from transformers import AutoTokenizer
        from sglang.srt.configs.quicksviewer import QuicksviewerConfig
        from sglang.srt.multimodal.processors.quicksviewer import QuicksviewerProcessor
        from sglang.srt.server_args import ServerArgs

        _path = {str(checkpoint)!r}
        processor = QuicksviewerProcessor(
            QuicksviewerConfig.from_pretrained(_path),
            ServerArgs(model_path=_path, device="cpu",
                       attention_backend="torch_native", mm_attention_backend="sdpa"),
            AutoTokenizer.from_pretrained(_path),
            None,
            skip_mm_pool=True,
        )
        """
    )


@pytest.fixture(scope="module")
def processor(checkpoints):
    """The real processor of the converted fp32 checkpoint, in this process."""
    namespace: dict = {}
    exec(processor_script(checkpoints.converted("fp32")), namespace)
    return namespace["processor"]


@pytest.fixture(scope="module")
def reference_frames(videos):
    """The original's OpenCV frames of every standard video."""
    from qsv_reference.video import extract_frames

    return {name: extract_frames(videos[name]) for name in VIDEOS}


@pytest.fixture(scope="module")
def reference_pixels(checkpoints):
    """The original's pixels of a list of frames (slow SigLIP processor, fp16)."""
    from qsv_reference import preprocess

    image_processor = preprocess.load_image_processor(
        checkpoints.original("fp32") / "siglip-tiny"
    )

    def pixels(frames):
        return preprocess.pixels_of(frames, image_processor).to(torch.float16)

    return pixels


# ---------------------------------------------------------------- frame indices
@pytest.mark.parametrize("case", sorted(INDEX_CASES))
def test_sample_frame_indices_follow_the_original_formula(case):
    from sglang.srt.multimodal.quicksviewer_video import sample_frame_indices

    source_fps, frame_count = INDEX_CASES[case]
    expected = original_frame_indices(source_fps, frame_count)
    assert sample_frame_indices(source_fps, frame_count, 1.0, 420) == expected


def test_index_formula_facts():
    """Values checked by hand, so the formula (tests/helpers/frames.py) is right."""
    # 30 fps: the middle of every second
    assert original_frame_indices(30.0, 360) == [15 + 30 * s for s in range(12)]
    # 29.97 fps: int(i + 14.985) = i + 14, one per round(29.97) = 30 frames
    assert original_frame_indices(29.97, 599) == [14 + 30 * s for s in range(20)]
    assert original_timestamps([14, 44], 29.97) == ["0.5", "1.5"]
    # 500 s at 4 fps: 500 candidates (2, 6, ..., 1998) sub-sampled to 420, no dups
    long = original_frame_indices(4.0, 2000)
    assert len(long) == 420 and len(set(long)) == 420 and long == sorted(long)
    assert long[0] == 2 and long[-1] == 1998
    assert {b - a for a, b in zip(long, long[1:])} == {4, 8}
    # at most 420 candidates: all kept (the dedup of uniform_sample)
    assert original_frame_indices(4.0, 1680) == [2 + 4 * s for s in range(420)]
    # a candidate past the last frame is dropped (the read loop stops)
    assert original_frame_indices(30.0, 31) == [15]


def test_sample_frame_indices_rejects_a_sub_1fps_stream():
    """The original's range(..., round(0.4)) raises; the processor says why."""
    from sglang.srt.multimodal.quicksviewer_video import sample_frame_indices

    with pytest.raises(ValueError, match="below 1 fps"):
        sample_frame_indices(0.4, 100, 1.0, 420)
    with pytest.raises(ValueError, match="invalid frame rate"):
        sample_frame_indices(float("nan"), 100, 1.0, 420)


# ------------------------------------------------------------------ decoders
@pytest.mark.parametrize("video", VIDEOS)
def test_decoders_give_identical_frames(video, videos, reference_frames):
    import decord
    from sglang.srt.multimodal.quicksviewer_video import (
        FrameDecodeError,
        _OpenCVReader,
        _SGLangReader,
    )
    from sglang.srt.utils.common import load_video

    path = str(videos[video])
    source_fps, frame_count = opencv_properties(path)
    seconds, fps, _, _ = STANDARD_VIDEOS[video]
    assert (source_fps, frame_count) == (fps, int(round(seconds * fps)))
    expected_indices = original_frame_indices(source_fps, frame_count)

    reference = reference_frames[video]
    assert reference.indices == expected_indices
    assert reference.timestamps == [round(i / source_fps, 1) for i in expected_indices]

    opencv = _OpenCVReader(path)
    assert (opencv.avg_fps, opencv.frame_count) == (source_fps, frame_count)
    indices, frames = frames_of(opencv, expected_indices)
    assert indices == expected_indices
    assert_same_frames("processor OpenCV reader", frames, reference.frames)

    sglang_reader = _SGLangReader(load_video(path, use_gpu=False))
    assert (sglang_reader.avg_fps, sglang_reader.frame_count) == (
        source_fps,
        frame_count,
    )
    direct = decord.VideoReader(path)
    assert (direct.get_avg_fps(), len(direct)) == (source_fps, frame_count)
    if video == DECORD_BROKEN:
        with pytest.raises(FrameDecodeError, match="video decoder failed"):
            frames_of(sglang_reader, expected_indices)
        with pytest.raises(decord.DECORDError):
            direct.get_batch(expected_indices)
        return
    indices, frames = frames_of(sglang_reader, expected_indices)
    assert indices == expected_indices
    assert_same_frames("SGLang loader (decord)", frames, reference.frames)
    assert_same_frames(
        "decord", list(direct.get_batch(expected_indices).asnumpy()), reference.frames
    )


@pytest.mark.parametrize("video", VIDEOS)
def test_processor_frames_and_timestamps(
    video, videos, processor, reference_frames, reference_pixels
):
    """The processor's whole video path (decord, or the OpenCV fallback for the
    75 s video): original timestamps and the original's pixels of its frames."""
    from sglang.srt.multimodal.quicksviewer_video import open_video

    path = str(videos[video])
    source_fps, frame_count = opencv_properties(path)
    expected_indices = original_frame_indices(source_fps, frame_count)
    reader = open_video(path)
    assert type(reader).__name__ == "_SGLangReader"  # decord is installed here
    reader.close()

    pixels, timestamps = processor_pixels(processor, path)
    assert timestamps == original_timestamps(expected_indices, source_fps)
    if video == "12s_30fps":
        assert timestamps == [f"{s}.5" for s in range(12)]
    expected = reference_pixels(reference_frames[video].frames)
    assert pixels.dtype == torch.float16
    assert torch.equal(pixels, expected)


def test_opencv_fallback_without_decord(videos, checkpoints, processor, tmp_path):
    """``import decord`` fails (as on a host without it): the processor reads with
    OpenCV and gives the frames, pixels and timestamps it gives with decord."""
    path = str(videos["12s_30fps"])
    source_fps, frame_count = opencv_properties(path)
    indices = original_frame_indices(source_fps, frame_count)
    out = tmp_path / "no_decord.pt"
    script = (
        textwrap.dedent(
            """
            import sys
            sys.modules["decord"] = None  # import decord -> ImportError
            sys.modules["torchcodec"] = None
            try:
                import decord
            except ImportError:
                pass
            else:
                raise SystemExit("decord is still importable")
            import torch
            from sglang.srt.multimodal.quicksviewer_video import open_video
            from tests.helpers.pixels import processor_pixels
            """
        )
        + processor_script(checkpoints.converted("fp32"))
        + textwrap.dedent(
            f"""
            reader = open_video({path!r})
            kind = type(reader).__name__
            pairs = list(reader.read({indices!r}))
            reader.close()
            pixels, timestamps = processor_pixels(processor, {path!r})
            torch.save(
                dict(kind=kind, indices=[i for i, _ in pairs],
                     frames=[torch.from_numpy(f.copy()) for _, f in pairs],
                     pixels=pixels, timestamps=timestamps),
                {str(out)!r},
            )
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = torch.load(out, weights_only=False)
    assert result["kind"] == "_OpenCVReader"
    assert result["indices"] == indices

    from qsv_reference.video import extract_frames

    reference = extract_frames(path)
    assert_same_frames(
        "OpenCV without decord", [f.numpy() for f in result["frames"]], reference.frames
    )
    # the same as the processor with decord, in this process
    pixels, timestamps = processor_pixels(processor, path)
    assert (
        result["timestamps"] == timestamps == original_timestamps(indices, source_fps)
    )
    assert torch.equal(result["pixels"], pixels)


def test_decord_failure_falls_back_to_opencv(
    videos, processor, reference_frames, reference_pixels, caplog
):
    """decord opens the 48 x 32 video but cannot batch-decode it: the processor
    logs it and returns the OpenCV frames (the original's decoder)."""
    import decord

    path = str(videos[DECORD_BROKEN])
    source_fps, frame_count = opencv_properties(path)
    indices = original_frame_indices(source_fps, frame_count)
    with pytest.raises(decord.DECORDError):
        decord.VideoReader(path).get_batch(indices[:2])

    with caplog.at_level("WARNING", logger="sglang.srt.multimodal.quicksviewer_video"):
        pixels, timestamps = processor_pixels(processor, path)
    assert any("OpenCV instead" in r.getMessage() for r in caplog.records)
    assert len(timestamps) == len(indices) == 75
    assert timestamps == original_timestamps(indices, source_fps)
    assert timestamps[:3] == ["0.5", "1.5", "2.5"]
    assert torch.equal(pixels, reference_pixels(reference_frames[DECORD_BROKEN].frames))
    # what the fallback decoded is what OpenCV decodes, not an empty video
    assert pixels.shape == (75, 3, 384, 384)
    assert not math.isclose(float(pixels.float().std()), 0.0)


def test_frames_are_video_frames(reference_frames):
    """Guard against a vacuous comparison: the frames move and are not blank."""
    for name, run in reference_frames.items():
        frames = np.stack(run.frames)
        assert frames.std() > 10, name
        assert not np.array_equal(frames[0], frames[-1]), name
        seconds, fps, width, height = STANDARD_VIDEOS[name]
        assert frames.shape[1:] == (height, width, 3), name


def _write_frames(path, frames, fps):
    import cv2

    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height)
    )
    for frame in frames:
        writer.write(frame)
    writer.release()
    return str(path)


def test_content_digest_is_the_content(processor, tmp_path):
    """The item hash and visual-cache key: equal for the same content in another
    file, different when one sampled frame differs or the sampling changes."""
    rng = np.random.default_rng(3)
    frames = [
        np.full((48, 64, 3), rng.integers(0, 256, 3), dtype=np.uint8) for _ in range(40)
    ]
    a = _write_frames(tmp_path / "a.mp4", frames, 4.0)
    copy = tmp_path / "copy.mp4"
    copy.write_bytes(open(a, "rb").read())
    changed = list(frames)
    changed[22] = np.full((48, 64, 3), 255 - frames[22][0, 0], dtype=np.uint8)
    b = _write_frames(tmp_path / "b.mp4", changed, 4.0)  # frame 22 = 5.5 s, sampled

    frames_a, ts_a, digest_a = processor._process_video(a)
    frames_b, ts_b, digest_b = processor._process_video(b)
    assert ts_a == ts_b and len(ts_a) == 10
    differing = [
        i for i in range(len(ts_a)) if not torch.equal(frames_a[i], frames_b[i])
    ]
    assert differing == [5]  # only the sampled frame that changed
    assert digest_a != digest_b
    assert processor._process_video(str(copy))[2] == digest_a
    sampled_less = processor.video_max_frames
    try:
        processor.video_max_frames = 6
        assert processor._process_video(a)[2] != digest_a
    finally:
        processor.video_max_frames = sampled_less
    assert processor._process_video(a)[2] == digest_a


def test_frame_cache_skips_decoding_a_video_seen_and_sees_new_bytes(
    processor, tmp_path
):
    """The processor's frame cache is keyed by the file's bytes: the same file again
    is a hit (no decoding), the same path with new content a miss."""
    rng = np.random.default_rng(4)
    frames = [
        np.full((48, 64, 3), rng.integers(0, 256, 3), dtype=np.uint8) for _ in range(12)
    ]
    path = _write_frames(tmp_path / "v.mp4", frames, 4.0)
    hits, misses = processor.frame_cache.hits, processor.frame_cache.misses
    first = processor._process_video(path)
    again = processor._process_video("file://" + path)
    assert processor.frame_cache.misses == misses + 1
    assert processor.frame_cache.hits == hits + 1
    assert again[2] == first[2] and torch.equal(again[0], first[0])
    _write_frames(tmp_path / "v.mp4", frames[::-1], 4.0)  # same path, new content
    rewritten = processor._process_video(path)
    assert processor.frame_cache.misses == misses + 2
    assert rewritten[2] != first[2]


def test_a_4k_video_is_resized_exactly(processor, reference_pixels, tmp_path):
    """3840x2160 frames: the processor's pixels are the original's (PIL bicubic of
    the same decoded frames)."""
    from qsv_reference.video import extract_frames

    rng = np.random.default_rng(5)
    ys, xs = np.mgrid[0:2160, 0:3840]
    frames = []
    for i in range(8):
        frame = np.empty((2160, 3840, 3), dtype=np.uint8)
        frame[..., 0] = (xs * (i + 1) // 15) % 256
        frame[..., 1] = (ys * (i + 2) // 9) % 256
        frame[..., 2] = rng.integers(0, 256)
        frames.append(frame)
    path = _write_frames(tmp_path / "4k.mp4", frames, 2.0)
    pixels, timestamps = processor_pixels(processor, path)
    reference = extract_frames(path)
    assert timestamps == ["0.5", "1.5", "2.5", "3.5"]
    assert torch.equal(pixels, reference_pixels(reference.frames))


@pytest.mark.parametrize(
    "fps,max_frames", [(1, 420), (2, 30), (3, 7), (1, 5), (30, 64)]
)
def test_per_request_sampling_is_the_originals(processor, videos, fps, max_frames):
    """fps / max_frames of a video_url part (VideoData.preprocess_kwargs) choose the
    frames exactly like the original's opencv_extract_frames_fps(path, n, fps)."""
    from qsv_reference.video import extract_frames
    from sglang.srt.utils.common import VideoData

    path = str(videos["12s_30fps"])
    source = VideoData(path, preprocess_kwargs={"fps": fps, "max_frames": max_frames})
    frames, timestamps, digest = processor._process_video(source)
    reference = extract_frames(path, num_frames=max_frames, fps=fps)
    assert timestamps == [str(t) for t in reference.timestamps]
    assert frames.shape[0] == len(reference.frames)
    default = processor._process_video(path)
    if (fps, max_frames) != (1, 420):
        assert digest != default[2] and timestamps != default[1]
    else:
        assert digest == default[2]


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"fps": 0.5}, "fps must be between 1 and 60"),
        ({"fps": 61}, "fps must be between 1 and 60"),
        ({"fps": "2"}, "fps must be a number"),
        ({"max_frames": 1}, "max_frames must be between 2 and 1024"),
        ({"max_frames": 5000}, "max_frames must be between 2 and 1024"),
        ({"max_frames": 2.5}, "max_frames must be an integer"),
    ],
)
def test_per_request_sampling_out_of_bounds(processor, videos, kwargs, message):
    from sglang.srt.utils.common import VideoData

    source = VideoData(str(videos["12s_30fps"]), preprocess_kwargs=kwargs)
    with pytest.raises(ValueError, match=message):
        processor._process_video(source)


def test_local_media_allowlist(processor, videos, tmp_path, monkeypatch):
    """SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH: local paths and file:// URLs only inside
    the allowed directories, symlinks resolved first; device files, FIFOs,
    directories and /proc never, even without an allowlist."""
    import shutil

    from sglang.srt.multimodal.quicksviewer_video import allowed_media_dirs

    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    allowed.mkdir()
    outside.mkdir()
    inside = allowed / "clip.mp4"
    shutil.copy(videos["12s_30fps"], inside)
    elsewhere = outside / "clip.mp4"
    shutil.copy(videos["12s_30fps"], elsewhere)
    link = allowed / "link.mp4"
    link.symlink_to(elsewhere)
    fifo = allowed / "fifo.mp4"
    os.mkfifo(fifo)
    monkeypatch.setenv("SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH", f"{allowed}:/nowhere")
    assert allowed_media_dirs() == [str(allowed.resolve()), "/nowhere"]
    monkeypatch.setattr(processor, "allowed_media_dirs", allowed_media_dirs())

    assert len(processor._process_video(str(inside))[1]) == 12
    assert len(processor._process_video(f"file://{inside}")[1]) == 12
    for source in (str(elsewhere), f"file://{elsewhere}", str(link)):
        with pytest.raises(ValueError, match="outside the directories"):
            processor._process_video(source)
    for source in ("/dev/zero", str(fifo), str(allowed), "/proc/self/status"):
        with pytest.raises(ValueError, match="not a regular file"):
            processor._process_video(source)
    with pytest.raises(ValueError, match="outside the directories"):
        processor._process_image(str(elsewhere))
    # without an allowlist any regular file is read, pseudo files still are not
    monkeypatch.setattr(processor, "allowed_media_dirs", None)
    assert len(processor._process_video(str(elsewhere))[1]) == 12
    with pytest.raises(ValueError, match="not a regular file"):
        processor._process_video("/dev/zero")
