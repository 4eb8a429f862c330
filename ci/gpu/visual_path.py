"""The visual path on the GPU host: exactness of the GPU resize and pixel table,
and the speed of decoding + preprocessing. Writes $OUT/visual_path.json.

1. ``resize_bicubic`` on CUDA equals the CPU path (which the CPU tests prove equal
   to Pillow 12) byte for byte, on random frames of landscape, portrait and odd
   sizes, and on decoded frames of the clips; ``lookup_pixels`` on CUDA equals the
   CPU lookup and the fp16 of SigLIP's PIL processor.
2. ``decode_video`` + resize for the clips of common.VIDEOS, with 1 and all
   workers, resize on the CPU and on the GPU, against SigLIP's PIL processor on
   one thread (the original's preprocessing; 60 frames, extrapolated x7 for
   420 frames only where stated).
"""

import os
import time

import numpy as np
import torch
from common import VIDEOS, Timer, video, write_result
from sglang.srt.models.quicksviewer import lookup_pixels
from sglang.srt.multimodal.quicksviewer_resize import PixelNormalizer, resize_bicubic
from sglang.srt.multimodal.quicksviewer_video import decode_video

SIZE = (384, 384)


def exactness() -> dict:
    rng = np.random.default_rng(0)
    sizes = [(360, 640), (720, 1280), (1080, 1920), (640, 360), (1280, 720)]
    sizes += [(257, 333), (1001, 17), (50, 100), (384, 384), (384, 500)]
    results = {}
    for h, w in sizes:
        frames = torch.from_numpy(rng.integers(0, 256, (6, h, w, 3), dtype=np.uint8))
        cpu = resize_bicubic(frames, SIZE)
        gpu = resize_bicubic(frames.cuda(), SIZE).cpu()
        results[f"{w}x{h}"] = bool(torch.equal(cpu, gpu))
    norm = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3)
    frames = torch.from_numpy(rng.integers(0, 256, (4, 384, 384, 3), dtype=np.uint8))
    results["lookup_pixels"] = bool(
        torch.equal(
            lookup_pixels(frames, norm.table.cpu()),
            lookup_pixels(frames.cuda(), norm.table.cuda()).cpu(),
        )
    )
    return results


def timed_decode(path, workers, device) -> tuple:
    def transform(frames, indices):
        t = torch.from_numpy(frames)
        if device == "cuda":
            t = t.to("cuda", non_blocking=True)
        return resize_bicubic(t, SIZE)

    torch.cuda.synchronize()
    start = time.perf_counter()
    out = decode_video(
        str(path), fps=1, max_frames=420, workers=workers, transform=transform
    )
    frames = torch.cat(list(out.results))
    torch.cuda.synchronize()
    return frames.cpu(), round(time.perf_counter() - start, 3), out.decoder


def speed() -> dict:
    from transformers.models.siglip.image_processing_pil_siglip import (
        SiglipImageProcessorPil,
    )

    processor = SiglipImageProcessorPil(
        size={"height": 384, "width": 384},
        resample=3,
        rescale_factor=1 / 255,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    cores = os.cpu_count()
    results = {"cores": cores}
    for name in VIDEOS:
        path = video(name)
        row = {}
        reference = None
        for workers in (1, cores):
            for device in ("cpu", "cuda"):
                timed_decode(path, workers, device)  # warm (kernels, page cache)
                frames, seconds, decoder = timed_decode(path, workers, device)
                row[f"decode_resize_{device}_{workers}w_s"] = seconds
                if reference is None:
                    reference = frames
                row[f"same_frames_{device}_{workers}w"] = bool(
                    torch.equal(frames, reference)
                )
        row["decoder"] = decoder
        row["frames"] = int(reference.shape[0])
        # the original's preprocessing (PIL, one thread) of the same decoded frames
        raw = decode_video(str(path), fps=1, max_frames=420, workers=cores)
        images = list(raw.frames())
        t = Timer()
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        row["siglip_pil_1thread_s"] = t()
        norm = PixelNormalizer(1 / 255, [0.5] * 3, [0.5] * 3)
        ours = lookup_pixels(reference.cuda(), norm.table.cuda()).cpu()
        row["pixels_equal_siglip_pil"] = bool(torch.equal(ours, pixels.half()))
        results[name] = row
    return results


def main():
    result = {"device": torch.cuda.get_device_name(0)}
    result["gpu_equals_cpu"] = exactness()
    result["speed"] = speed()
    write_result("visual_path", result)


if __name__ == "__main__":
    main()
