"""Sequential vs parallel frame decoding of the Quicksviewer processor.

    .venv/bin/python benchmarks/bench_video_decode.py [--workers 1 2] [--repeat 3]
        [--clip PATH ...] [--seconds 120 --fps 10 --size 640x360]

Times, per clip and decoder (SGLang's loader = decord here, and OpenCV), one
sequential reader as the processor used it (``open_video(...).read``) against
``decode_video(..., workers=N)``, and checks that the frames are identical. Without
a clip it writes an mp4v clip with tools/media.py. On a host without SGLang (the GPU
host has OpenCV and NumPy only) it loads the module from overlay/ with a stand-in for
``sglang.srt.utils.common`` whose loader raises ImportError, i.e. OpenCV alone
(QSV_BENCH_OPENCV_ONLY=1 forces that here).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
MODULE = ROOT / "overlay/python/sglang/srt/multimodal/quicksviewer_video.py"


def load_module():
    """(module, has SGLang's loader)."""
    if not os.environ.get("QSV_BENCH_OPENCV_ONLY"):
        try:
            from sglang.srt.multimodal import quicksviewer_video

            return quicksviewer_video, True
        except ImportError:
            pass

    def load_video(*args, **kwargs):
        raise ImportError("no SGLang video loader on this host")

    def normalize(source):
        return source if isinstance(source, (str, bytes)) else None

    for name in ("sglang", "sglang.srt", "sglang.srt.utils"):
        sys.modules.setdefault(name, types.ModuleType(name))
    common = types.ModuleType("sglang.srt.utils.common")
    common.load_video, common._normalize_video_input = load_video, normalize
    sys.modules["sglang.srt.utils.common"] = common
    spec = importlib.util.spec_from_file_location("quicksviewer_video", MODULE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module, False


def resize_384(frames, indices=None):
    """About the processor's per-frame work: SigLIP's PIL resize, scaled to fp16."""
    from PIL import Image

    out = [
        np.asarray(Image.fromarray(f).resize((384, 384), Image.BICUBIC)) for f in frames
    ]
    return ((np.stack(out).astype(np.float32) / 127.5) - 1.0).astype(np.float16)


def best_of(repeat, fn):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clip", nargs="*", default=[])
    parser.add_argument("--workers", nargs="*", type=int, default=[1, 2])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--size", default="640x360")
    parser.add_argument(
        "--resize",
        action="store_true",
        help="also run a processor-like transform (PIL bicubic 384x384, fp16)",
    )
    args = parser.parse_args()
    qv, has_loader = load_module()
    import cv2

    clips = [Path(c) for c in args.clip]
    if not clips:
        from tools.media import write_video

        width, height = map(int, args.size.split("x"))
        path = Path(tempfile.gettempdir()) / (
            f"qsv_bench_{args.seconds:g}s_{args.fps:g}fps_{width}x{height}.mp4"
        )
        if not path.exists():
            write_video(path, args.seconds, args.fps, width, height)
        clips = [path]
    print(
        f"host {platform.node()} cpus {os.cpu_count()} python {platform.python_version()}"
        f" opencv {cv2.__version__} pool {qv.default_workers()}"
        f" date {time.strftime('%Y-%m-%d %H:%M')}"
    )
    for clip in clips:
        reader = qv._OpenCVReader(str(clip))
        meta = (reader.avg_fps, reader.frame_count)
        reader.close()
        indices = qv.sample_frame_indices(*meta, 1.0, 420)
        t_scan, _ = best_of(
            args.repeat, lambda: qv._PacketTable.scan(str(clip), meta[0])
        )
        print(
            f"{clip.name}: {meta[1]} frames at {meta[0]:g} fps, {len(indices)} sampled;"
            f" demux-only keyframe pass {t_scan * 1000:.0f} ms"
        )
        decoders = [("opencv", lambda: qv._OpenCVReader(str(clip)))]
        if has_loader:
            decoders.insert(
                0,
                (
                    "sglang-loader",
                    lambda: qv._SGLangReader(qv.load_video(str(clip), use_gpu=False)),
                ),
            )
        for name, open_reader in decoders:

            for transform in [None, resize_384] if args.resize else [None]:
                run(qv, args, name, open_reader, indices, clip, transform)


def run(qv, args, name, open_reader, indices, clip, transform):
    label = name + ("+resize" if transform else "")

    def sequential():
        rd = open_reader()
        try:
            frames = [np.asarray(f) for _, f in rd.read(indices)]
        finally:
            rd.close()
        if transform is None:
            return frames
        chunk = qv.DECODE_CHUNK
        return [transform(frames[i : i + chunk]) for i in range(0, len(frames), chunk)]

    try:
        t_seq, expected = best_of(args.repeat, sequential)
    except qv.FrameDecodeError as e:
        print(f"  {label}: sequential read fails ({e}); skipped")
        return
    expected = np.concatenate(expected) if transform else expected
    print(f"  {label:20s} sequential reader      {t_seq:7.3f} s")
    saved = qv.load_video
    if name == "opencv":
        qv.load_video = lambda *a, **k: (_ for _ in ()).throw(ImportError())
    try:
        for workers in args.workers:
            t_par, got = best_of(
                args.repeat,
                lambda: qv.decode_video(
                    str(clip),
                    fps=1.0,
                    max_frames=420,
                    workers=workers,
                    transform=transform,
                ),
            )
            frames = np.concatenate(got.results) if got.results else []
            same = len(got.indices) == len(expected) and all(
                np.array_equal(a, b) for a, b in zip(frames, expected)
            )
            print(
                f"  {label:20s} decode_video workers={workers:<2d}"
                f" {t_par:7.3f} s  x{t_seq / t_par:4.2f}  readers={got.readers}"
                f" decoder={got.decoder} identical={same}"
            )
    finally:
        qv.load_video = saved


if __name__ == "__main__":
    main()
