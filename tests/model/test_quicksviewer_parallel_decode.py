"""Parallel frame decoding (``quicksviewer_video.decode_video``) equals one sequential reader.

For every decoder the processor supports (decord through SGLang's loader; OpenCV, the
original's decoder, as on a host where the loader raises ImportError) and 1, 2 and 5
workers, ``decode_video`` returns the frames, indices and timestamps that one sequential
reader of that decoder returns (the processor's path before parallel decoding), and for
OpenCV those of the reference ``qsv_reference.video.extract_frames``. Clips: the mp4v
standard videos (30, 10, 4 and 29.97 fps; the 48-pixel-wide one decord cannot decode,
so the processor falls back to OpenCV), a longer 29.97 fps clip that splits five ways,
a truncated AVI whose header promises frames past the real end, and, where
``imageio-ffmpeg`` (an ffmpeg binary with libx264/libx265) is installed, H.264 and HEVC
with B-frames and open GOPs, an H.264 edit list (OpenCV reports frames past the end), a
variable-frame-rate clip (never split) and an MPEG-4 AVI with B-frames whose OpenCV
timestamps disagree with its packets (the parallel decode notices and reads it with
one reader). Also: the transform runs on the pool's threads and results come back in
order, bad inputs raise ValueError, bytes/base64/data-URL sources leave no temp file,
worker errors propagate, and concurrent requests share one bounded pool.
"""

from __future__ import annotations

import base64
import concurrent.futures
import os
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from tests.helpers.frames import assert_same_frames, frames_of
from tools.media import write_video

WORKERS = (1, 2, 5)
TIMEOUT_S = 120
DECODERS = ("sglang", "opencv")
MODULE_LOGGER = "sglang.srt.multimodal.quicksviewer_video"

# mp4v clips written here: name -> (seconds, fps, width, height)
EXTRA_MP4V = {"45s_29.97fps": (45, 29.97, 64, 48)}
STANDARD = ["12s_30fps", "75s_10fps", "500s_4fps", "20s_29.97fps"]
# needs the ffmpeg of imageio-ffmpeg
ENCODED = [
    "h264_bframes_open_gop",
    "hevc_bframes_open_gop",
    "h264_edit_list",
    "h264_vfr",
    "mpeg4_bframes_avi",
]
CLIPS = STANDARD + list(EXTRA_MP4V) + ["truncated_avi"] + ENCODED
# OpenCV cannot split these: no constant frame rate / timestamps that disagree
OPENCV_ONE_READER = {"h264_vfr", "mpeg4_bframes_avi"}
# decord 0.6.0 decodes this one differently from run to run, sequentially too
DECORD_UNSTABLE = {"mpeg4_bframes_avi"}


def _ffmpeg_exe():
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def _ffmpeg(*args):
    exe = _ffmpeg_exe()
    cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True, timeout=TIMEOUT_S, capture_output=True)


def _write_truncated_avi(path: Path):
    """mp4v in AVI, cut at 60%: the header still counts every frame."""
    full = path.with_name("full.avi")
    write_video(full, 40, 10.0, 64, 48, seed=3)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) * 6 // 10])


def _write_encoded(root: Path, name: str) -> Path:
    path = root / f"{name}.{'avi' if name.endswith('_avi') else 'mp4'}"
    if path.exists():
        return path
    source = root / "source_60s_29.97fps.mp4"
    if not source.exists():
        write_video(source, 60, 29.97, 64, 48, seed=5)
    h264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
    if name == "h264_bframes_open_gop":
        _ffmpeg(
            "-i", source, *h264, "-bf", 3, "-g", 60, "-x264-params", "open-gop=1", path
        )
    elif name == "hevc_bframes_open_gop":
        x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"]
        params = "open-gop=1:bframes=4:keyint=60:log-level=error"
        _ffmpeg("-i", source, *x265, "-x265-params", params, path)
    elif name == "h264_edit_list":
        # a cut at 2.2 s without re-encoding: an edit list over the first GOP
        full = _write_encoded(root, "h264_bframes_open_gop")
        _ffmpeg("-ss", 2.2, "-i", full, "-c", "copy", path)
    elif name == "h264_vfr":
        # frames 1.5 frame durations apart from frame 900 on
        slower = "setpts='(N+0.5*max(N-900,0))/FRAME_RATE/TB'"
        _ffmpeg("-i", source, "-vf", slower, "-fps_mode", "vfr", *h264, path)
    elif name == "mpeg4_bframes_avi":
        _ffmpeg("-i", source, "-c:v", "mpeg4", "-bf", 2, "-g", 30, path)
    return path


@pytest.fixture(scope="module")
def clips(videos, tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel_decode")
    paths = {name: Path(videos[name]) for name in STANDARD}
    for name, (seconds, fps, width, height) in EXTRA_MP4V.items():
        paths[name] = write_video(root / f"{name}.mp4", seconds, fps, width, height)
    paths["truncated_avi"] = root / "truncated.avi"
    _write_truncated_avi(paths["truncated_avi"])
    if _ffmpeg_exe() is not None:
        for name in ENCODED:
            paths[name] = _write_encoded(root, name)
    return paths


@pytest.fixture
def qv():
    from sglang.srt.multimodal import quicksviewer_video

    return quicksviewer_video


@pytest.fixture
def no_loader(qv, monkeypatch):
    """SGLang's loader raises ImportError, as where neither decord nor torchcodec is
    installed: the processor decodes with OpenCV."""

    def load_video(*args, **kwargs):
        raise ImportError("no decord, no torchcodec")

    monkeypatch.setattr(qv, "load_video", load_video)


def clip_path(clips, name) -> str:
    if name not in clips:
        pytest.skip("needs imageio-ffmpeg (an ffmpeg with libx264 and libx265)")
    return str(clips[name])


def decode(qv, source, **kwargs):
    """decode_video with the processor's settings, failing instead of hanging."""
    kwargs = {"fps": 1.0, "max_frames": 420, **kwargs}
    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(qv.decode_video, source, **kwargs).result(timeout=TIMEOUT_S)


def _read_all(qv, reader):
    """(indices, frames, avg_fps) of ``reader.read`` over the sampled frames."""
    avg_fps = reader.avg_fps
    indices = qv.sample_frame_indices(avg_fps, reader.frame_count, 1.0, 420)
    return (*frames_of(reader, indices), avg_fps)


def sequential(qv, path, decoder):
    """(decoder name, indices, frames, avg_fps) of ONE sequential reader, as the
    processor read before: SGLang's loader, OpenCV where it fails to decode."""
    if decoder == "opencv":
        return ("opencv", *_read_all(qv, qv._OpenCVReader(path)))
    reader = qv.open_video(path)
    try:
        return (reader.backend, *_read_all(qv, reader))
    except qv.FrameDecodeError:
        return ("opencv", *_read_all(qv, qv._OpenCVReader(path)))


def assert_same_result(got, expected_decoder, indices, frames, avg_fps, label):
    assert got.decoder == expected_decoder, label
    assert got.indices == indices, label
    assert got.timestamps == [str(round(i / avg_fps, 1)) for i in indices], label
    assert got.avg_fps == avg_fps
    assert [i for batch in got.batches for i in batch] == got.indices
    assert_same_frames(label, list(got.frames()) if got.indices else [], frames)


# ------------------------------------------------------------- frames are equal
# decord 0.6.0 is not deterministic on DECORD_UNSTABLE streams (two sequential reads
# differ), so there is nothing to compare its parallel reads with: not collected
@pytest.mark.parametrize(
    "clip,decoder",
    [
        (clip, decoder)
        for clip in CLIPS
        for decoder in DECODERS
        if not (decoder == "sglang" and clip in DECORD_UNSTABLE)
    ],
)
def test_parallel_decode_equals_sequential_reader(qv, clips, clip, decoder, request):
    path = clip_path(clips, clip)
    if decoder == "opencv":
        request.getfixturevalue("no_loader")
    name, indices, frames, avg_fps = sequential(qv, path, decoder)
    assert len(indices) >= 2 and np.stack(frames).std() > 5  # not a vacuous check
    if decoder == "opencv":
        from qsv_reference.video import extract_frames

        ref = extract_frames(path)
        assert ref.indices == indices
        assert [str(t) for t in ref.timestamps] == [
            str(round(i / avg_fps, 1)) for i in indices
        ]
        assert_same_frames(f"{clip}: reference", frames, ref.frames)
    for workers in WORKERS:
        got = decode(qv, path, workers=workers)
        label = f"{clip}, {decoder}, {workers} workers"
        assert_same_result(got, name, indices, frames, avg_fps, label)
        if workers == 1 or len(indices) < 2 * qv.MIN_FRAMES_PER_RANGE:
            assert got.readers == 1, label
        elif got.decoder == "opencv" and clip in OPENCV_ONE_READER:
            assert got.readers == 1, label
        else:
            assert got.readers > 1, label  # the clip was really split
        if name == "opencv" and decoder == "sglang":
            assert got.fallback and "video decoder failed" in got.fallback


def test_frames_past_the_end_are_dropped(qv, clips, no_loader):
    """The truncated AVI promises 400 frames and holds fewer: the sampled frames past
    the real end are missing, as in the original's sequential read."""
    path = clip_path(clips, "truncated_avi")
    reader = qv._OpenCVReader(path)
    assert reader.frame_count == 400
    reader.close()
    sampled = qv.sample_frame_indices(10.0, 400, 1.0, 420)
    got = decode(qv, path, workers=5)
    assert 10 < len(got.indices) < len(sampled) == 40 and got.readers == 5
    assert got.indices == sampled[: len(got.indices)]


def test_mismatched_timestamps_fall_back_to_one_reader(qv, clips, no_loader, caplog):
    """A packet table that disagrees with the decoded frames (as a seek that lands
    elsewhere would) makes the video decode again with one reader."""
    path = clip_path(clips, "45s_29.97fps")
    _, indices, frames, avg_fps = sequential(qv, path, "opencv")
    scan = qv._PacketTable.scan

    def shifted(path, fps):
        table = scan(path, fps)
        table.msec = table.msec[1:] + [table.msec[-1] + 1000 / fps]
        return table

    with pytest.MonkeyPatch.context() as mp, caplog.at_level("WARNING", MODULE_LOGGER):
        mp.setattr(qv._PacketTable, "scan", staticmethod(shifted))
        got = decode(qv, path, workers=5)
    assert got.readers == 1
    assert any("with one reader" in r.getMessage() for r in caplog.records)
    assert_same_result(got, "opencv", indices, frames, avg_fps, "mismatch fallback")


def test_opencv_keyframes_are_decords_on_mp4v(qv, clips):
    """The demux-only pass finds decord's keyframes where decode order is
    presentation order (mp4v, no B-frames)."""
    import decord

    for name in ("12s_30fps", "45s_29.97fps", "truncated_avi"):
        path = clip_path(clips, name)
        table = qv._PacketTable.scan(path, qv._OpenCVReader(path).avg_fps)
        assert table is not None and len(table.keyframes) > 2, name
        assert table.keyframes == list(decord.VideoReader(path).get_key_indices())


def test_opencv_keyframes_are_i_pictures_with_b_frames(qv, clips):
    """With B-frames (decode order != presentation order) the pass gives the
    presentation indices of I pictures; a variable frame rate gives no table."""
    import cv2

    for name in ("h264_bframes_open_gop", "hevc_bframes_open_gop"):
        path = clip_path(clips, name)
        table = qv._PacketTable.scan(path, qv._OpenCVReader(path).avg_fps)
        cap = cv2.VideoCapture(path)
        types = []
        while cap.grab():
            types.append(chr(int(cap.get(cv2.CAP_PROP_FRAME_TYPE))))
        assert len(table.keyframes) > 2 and len(types) == len(table.msec), name
        assert {types[k] for k in table.keyframes} == {"I"}, name
        assert "B" in types, name
    path = clip_path(clips, "h264_vfr")
    assert qv._PacketTable.scan(path, qv._OpenCVReader(path).avg_fps) is None


# ----------------------------------------------------- transform, batches, pool
@pytest.mark.parametrize("decoder", DECODERS)
def test_transform_runs_in_worker_threads_in_order(qv, clips, decoder, request):
    if decoder == "opencv":
        request.getfixturevalue("no_loader")
    path = clip_path(clips, "500s_4fps")
    calls = []

    def transform(frames, indices):
        assert frames.dtype == np.uint8 and frames.ndim == 4 and frames.shape[-1] == 3
        assert frames.flags.c_contiguous and len(frames) == len(indices)
        calls.append(threading.current_thread().name)
        return list(indices), frames.copy()

    got = decode(qv, path, workers=5, transform=transform)
    assert got.readers > 1 and len(got.indices) == 420
    assert all(name.startswith("qsv-video") for name in calls)
    assert [i for indices, _ in got.results for i in indices] == got.indices
    assert [indices for indices, _ in got.results] == got.batches
    assert max(len(b) for b in got.batches) <= qv.DECODE_CHUNK
    plain = decode(qv, path, workers=1)
    assert_same_frames(
        "transform", [f for _, fr in got.results for f in fr], list(plain.frames())
    )


def test_batches_are_bounded_in_bytes(qv, clips, monkeypatch, no_loader):
    """Large frames come in small batches (at most BATCH_BYTES of frames)."""
    path = clip_path(clips, "12s_30fps")
    plain = decode(qv, path, workers=1)
    monkeypatch.setattr(qv, "BATCH_BYTES", 3 * 96 * 64 * 3)
    got = decode(qv, path, workers=2)
    assert max(len(b) for b in got.batches) == 3
    assert_same_frames("small batches", list(got.frames()), list(plain.frames()))


def test_concurrent_requests_share_one_bounded_pool(qv, clips):
    names = ["500s_4fps", "45s_29.97fps", "12s_30fps"]
    expected = {n: decode(qv, str(clips[n]), workers=1) for n in names}
    lock, running, peak = threading.Lock(), [0], [0]

    def transform(frames, indices):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        try:
            return frames.copy()
        finally:
            with lock:
                running[0] -= 1

    with concurrent.futures.ThreadPoolExecutor(len(names)) as requests:
        futures = {
            n: requests.submit(
                qv.decode_video,
                str(clips[n]),
                fps=1.0,
                max_frames=420,
                workers=4,
                transform=transform,
            )
            for n in names
        }
        got = {n: f.result(timeout=TIMEOUT_S) for n, f in futures.items()}
    pool = qv._pool()
    assert pool is qv._pool() and peak[0] <= pool._max_workers
    for n in names:
        assert got[n].indices == expected[n].indices
        assert_same_frames(n, list(got[n].frames()), list(expected[n].frames()))


def test_nested_decode_on_a_pool_thread_does_not_deadlock(qv, clips):
    inner = []

    def transform(frames, indices):
        if not inner:
            inner.append(decode_inner())
        return frames

    def decode_inner():
        return qv.decode_video(
            str(clips["12s_30fps"]), fps=1.0, max_frames=420, workers=4
        )

    got = decode(qv, str(clips["500s_4fps"]), workers=8, transform=transform)
    assert len(got.indices) == 420 and inner[0].readers == 1


def _decode_in_child(qv, path, queue):
    queue.put(len(qv.decode_video(path, fps=1.0, max_frames=420, workers=2).indices))


def test_forked_child_gets_its_own_pool(qv, clips):
    """A child forked after the pool started (its copy of the pool has no
    threads) decodes with a new pool instead of waiting forever."""
    import multiprocessing

    path = str(clips["12s_30fps"])
    assert len(decode(qv, path, workers=2).indices) == 12  # the pool runs
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_decode_in_child, args=(qv, path, queue))
    child.start()
    try:
        assert queue.get(timeout=TIMEOUT_S) == 12
    finally:
        child.join(TIMEOUT_S)
        if child.is_alive():
            child.kill()


def test_workers_default_from_environment(qv, monkeypatch):
    monkeypatch.delenv(qv.WORKERS_ENV, raising=False)
    assert qv.default_workers() == max(1, min(os.cpu_count() or 1, 16))
    monkeypatch.setenv(qv.WORKERS_ENV, "3")
    assert qv.default_workers() == 3
    for bad in ("0", "many"):
        monkeypatch.setenv(qv.WORKERS_ENV, bad)
        with pytest.raises(ValueError, match=qv.WORKERS_ENV):
            qv.default_workers()


def test_workers_none_reads_the_environment(qv, clips, monkeypatch):
    monkeypatch.setenv(qv.WORKERS_ENV, "3")
    got = decode(qv, str(clips["500s_4fps"]))
    assert got.readers == 3


# ------------------------------------------------------------ sources and errors
@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """Where the module's (and SGLang's) temporary files go during the test."""
    import tempfile

    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


@pytest.mark.parametrize("decoder", DECODERS)
def test_bytes_base64_and_data_url_sources(qv, clips, decoder, temp_dir, request):
    if decoder == "opencv":
        request.getfixturevalue("no_loader")
    path = clips["20s_29.97fps"]
    expected = decode(qv, str(path), workers=2)
    data = path.read_bytes()
    b64 = base64.b64encode(data).decode()
    seen = []

    def transform(frames, indices):
        seen.append(sorted(os.listdir(temp_dir)))
        return frames

    for source in (data, b64, f"data:video/mp4;base64,{b64}", f"file://{path}"):
        got = decode(qv, source, workers=2, transform=transform)
        assert got.indices == expected.indices and got.timestamps == expected.timestamps
        assert_same_frames("source", list(got.frames()), list(expected.frames()))
        assert os.listdir(temp_dir) == []
    # the bytes were decoded from one temporary file, removed afterwards
    assert any(len(names) == 1 for names in seen)


@pytest.mark.parametrize("decoder", DECODERS)
def test_bad_inputs_raise_value_error(qv, clips, tmp_path, temp_dir, decoder, request):
    if decoder == "opencv":
        request.getfixturevalue("no_loader")
    rng = np.random.default_rng(0)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    whole = clips["20s_29.97fps"].read_bytes()  # mp4v: the index is at the end
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(whole[: len(whole) // 2])
    sources = {
        "random bytes": rng.integers(0, 256, 4096, dtype=np.uint8).tobytes(),
        "empty bytes": b"",
        "text file": str(text),
        "empty file": str(empty),
        "truncated mp4": str(truncated),
        "truncated mp4 bytes": whole[: len(whole) // 2],
        "missing file URL": f"file://{tmp_path}/missing.mp4",
        "no file, no base64": str(tmp_path / "missing.mp4"),
    }
    for label, source in sources.items():
        with pytest.raises(ValueError, match="Could not decode video|neither an"):
            decode(qv, source, workers=5)
        assert os.listdir(temp_dir) == [], label


@pytest.mark.parametrize("decoder", DECODERS)
def test_worker_errors_propagate(qv, clips, temp_dir, decoder, request):
    if decoder == "opencv":
        request.getfixturevalue("no_loader")
    data = clips["500s_4fps"].read_bytes()
    calls = []

    def transform(frames, indices):
        calls.append(indices[0])
        if len(calls) == 3:
            raise RuntimeError("transform failed")
        return frames

    with pytest.raises(RuntimeError, match="transform failed"):
        decode(qv, data, workers=5, transform=transform)
    assert os.listdir(temp_dir) == []
    # the pool still works afterwards
    assert len(decode(qv, data, workers=5).indices) == 420


def test_module_keeps_the_processor_api(qv):
    """What the processor imported from its own module, with the same behaviour."""
    from tests.helpers.frames import INDEX_CASES, original_frame_indices

    for source_fps, frame_count in INDEX_CASES.values():
        assert qv.sample_frame_indices(
            source_fps, frame_count, 1.0, 420
        ) == original_frame_indices(source_fps, frame_count)
    assert issubclass(qv.FrameDecodeError, RuntimeError)
    assert qv.DECODE_CHUNK == 32
