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
"""Multimodal processor of Quicksviewer (arXiv 2504.15270).

What it computes (frame sampling, pixels, anyres views, the prompt's layout) is
described with the algorithm, in the model's docstring
(``sglang/srt/models/quicksviewer.py``); what it hands to the model is
``QuicksviewerVideoItem`` (``sglang/srt/configs/quicksviewer.py``). How:

* video: decoded with SGLang's loader (torchcodec or decord) or, where neither
  is installed, with OpenCV (the original's own decoder), in parallel
  (``quicksviewer_video``);
* pixels: Pillow <= 12's fixed-point bicubic (``quicksviewer_resize``, whatever
  Pillow is installed; on the GPU when the server runs on one), then the model
  applies the (256, 3) fp16 table of the rescale + normalisation on the device.
  Videos travel to the scheduler as resized uint8 frames (a quarter of fp32,
  half of fp16), through SGLang's CUDA IPC pool when the server uses it, with
  their hash computed here, in parallel, once;
* prompt: the original's expansion (``preprocess_multimodal_video`` / ``_image``
  with the checkpoint's thumbnail and marker flags) tokenized chunk by chunk like
  ``tokenizer_image_token``, so any tokenizer gives the original's ids (a BOS
  once, if the tokenizer adds one). A video's frames share one run of K * Q
  placeholders; the model's ``pad_input_ids`` inserts the timestamp of each
  later cube's first frame once the cubes are known.
"""

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import time
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from sglang.srt.configs.quicksviewer import (
    QUICKSVIEWER_MARKERS,
    QuicksviewerVideoItem,
    num_cubes,
)
from sglang.srt.managers.schedule_batch import (
    Modality,
    MultimodalDataItem,
    MultimodalProcessorOutput,
)
from sglang.srt.models.quicksviewer import (
    QuicksviewerForCausalLM,
    QuicksviewerVisualCache,
)
from sglang.srt.multimodal.mm_utils import divide_to_patches, select_best_resolution
from sglang.srt.multimodal.processors.base_processor import BaseMultimodalProcessor
from sglang.srt.multimodal.quicksviewer_limits import MediaLimits
from sglang.srt.multimodal.quicksviewer_resize import (
    PixelNormalizer,
    resize_bicubic,
    resize_image,
)
from sglang.srt.multimodal.quicksviewer_video import (
    ALLOWED_MEDIA_ENV,
    allowed_media_dirs,
    check_local_media,
    decode_video,
)
from sglang.srt.utils import load_image

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
MARKER_TEXT = {name: f"<{name}>" for name in QUICKSVIEWER_MARKERS}
# Bounds of the per-request frame sampling (video_url fps / max_frames).
MAX_SAMPLING_FPS = 60.0
MAX_SAMPLED_FRAMES = 1024
# SGLANG_QSV_TIMING=1 logs the split of every video request (benchmarks/).
TIMING = os.environ.get("SGLANG_QSV_TIMING", "0") == "1"
# where the exact resize runs: auto (the GPU when the server runs on CUDA), cpu, cuda
RESIZE_DEVICE = os.environ.get("SGLANG_QSV_RESIZE_DEVICE", "auto")


def anyres_tiles(
    image: Image.Image, pinpoints: Sequence[Sequence[int]], tile: int
) -> List[Image.Image]:
    """Base view plus the tiles of the image resized and padded (black) to the
    best pinpoint, in the original's order and with PIL's default resampling
    (bicubic, Pillow <= 12 semantics).

    The grid and the tiles are upstream's (``select_best_resolution``,
    ``divide_to_patches``). The resize and pad is written out: upstream's
    ``resize_and_pad_image`` resizes with the installed Pillow, whose bicubic
    changed in Pillow 13, and the original's pixels are Pillow 12's.
    """
    target_w, target_h = select_best_resolution(image.size, pinpoints)
    width, height = image.size
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(
        resize_image(image, (new_w, new_h)),
        ((target_w - new_w) // 2, (target_h - new_h) // 2),
    )
    return [resize_image(image, (tile, tile))] + divide_to_patches(canvas, tile)


class QuicksviewerProcessor(BaseMultimodalProcessor):
    models = [QuicksviewerForCausalLM]
    gpu_image_decode = False

    def __init__(self, hf_config, server_args, _processor, *args, **kwargs):
        super().__init__(hf_config, server_args, _processor, *args, **kwargs)
        tokenizer = self._tokenizer
        self.markers = hf_config.marker_token_ids()
        for name, token_id in self.markers.items():
            found = tokenizer.convert_tokens_to_ids(MARKER_TEXT[name])
            if found != token_id:
                raise ValueError(
                    f"config says <{name}> is token {token_id}, the tokenizer says "
                    f"{found}; the checkpoint's config and tokenizer do not match"
                )
        # Visual positions are located by the items' offsets and overwritten with
        # pad values in pad_input_ids before anything embeds them (the original
        # marks them with -200, outside the vocabulary). Until then they hold an
        # id the tokenizer is known to have: its <im_start> / <video_start>.
        self.image_placeholder_id = self.markers["im_start"]
        self.video_placeholder_id = self.markers["video_start"]
        self.config = hf_config
        self.num_queries = hf_config.num_queries
        self.tile_size = hf_config.vision_config.image_size
        self.pinpoints = hf_config.image_grid_pinpoints
        self.video_fps = hf_config.video_fps
        self.video_max_frames = hf_config.video_max_frames
        self.frames_per_cube = hf_config.cubing_frames_per_cube
        self._load_pixel_config(server_args.model_path)
        self.resize_device = self._resize_device(server_args)
        # videos seen, by the SHA-256 of their bytes: a repeated video (a follow-up
        # turn) is not decoded again
        self.frame_cache = QuicksviewerVisualCache.from_env(
            "SGLANG_QSV_FRAME_CACHE_MB",
            1024,
            "frame cache",
            metrics=server_args.enable_metrics,
        )
        self.limits = MediaLimits.from_env()
        self.allowed_media_dirs = allowed_media_dirs()
        if self.allowed_media_dirs is None:
            logger.warning(
                "Quicksviewer: any client may have local files read as media; set "
                "%s to the directories allowed",
                ALLOWED_MEDIA_ENV,
            )
        self.placeholder_regex = re.compile(
            f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})"
        )

    def _load_pixel_config(self, model_path: str) -> None:
        """SigLIP's preprocessing from the checkpoint's preprocessor_config.json
        (its defaults otherwise): the resize target and the fp16 pixel table."""
        config = {}
        path = os.path.join(model_path, "preprocessor_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        if config.get("resample", 3) != 3:
            raise ValueError(
                f"preprocessor_config.json resample={config['resample']}: only "
                "3 (bicubic, SigLIP's) is implemented"
            )
        size = config.get("size") or {}
        self.pixel_size = (
            size.get("height", self.tile_size),
            size.get("width", self.tile_size),
        )
        self.pixel_table = PixelNormalizer(
            config.get("rescale_factor", 1 / 255),
            config.get("image_mean", [0.5, 0.5, 0.5]),
            config.get("image_std", [0.5, 0.5, 0.5]),
        ).table.cpu()
        # what both cache keys hash besides the video: the preprocessing
        self._preprocess_tag = (
            json.dumps(list(self.pixel_size)).encode()
            + self.pixel_table.numpy().tobytes()
        )

    def _resize_device(self, server_args) -> torch.device:
        if RESIZE_DEVICE == "cpu" or (
            RESIZE_DEVICE == "auto"
            and not (server_args.device == "cuda" and torch.cuda.is_available())
        ):
            return torch.device("cpu")
        return torch.device("cuda", server_args.base_gpu_id)

    # ------------------------------------------------------------------ media
    def _resize_chunk(self, frames: np.ndarray, indices: List[int]):
        """Runs in a decoding worker: hash every decoded frame, resize them.

        Per-frame digests, so the video's digest does not depend on how the
        frames were split into batches (worker count, host, fallbacks)."""
        self.limits.check_frame(*frames.shape[1:3])
        digests = [hashlib.sha256(np.ascontiguousarray(f)).digest() for f in frames]
        tensor = torch.from_numpy(frames)
        if self.resize_device.type == "cuda":
            tensor = tensor.to(self.resize_device, non_blocking=True)
        return digests, resize_bicubic(tensor, self.pixel_size)

    @staticmethod
    def _video_request(source) -> Tuple[object, dict]:
        """(the video, its sampling fields) of a request item: a chat video_url part
        (VideoData with fps / max_frames), a /generate dict {"url", "fps",
        "max_frames"}, or the video alone."""
        if isinstance(source, dict):
            unknown = sorted(set(source) - {"url", "fps", "max_frames"})
            if unknown or "url" not in source:
                raise ValueError(
                    "a video given as an object takes the keys url (required), fps "
                    f"and max_frames; got {sorted(source)}"
                )
            return source["url"], source
        kwargs = getattr(source, "preprocess_kwargs", None) or {}
        return getattr(source, "url", source), kwargs

    def _sampling(self, kwargs: dict) -> Tuple[float, int]:
        """(fps, max_frames) of one video: the request's (a video_url part's fps and
        max_frames), else the checkpoint's (1 fps, 420 frames, as the original)."""
        fps = kwargs.get("fps", self.video_fps)
        max_frames = kwargs.get("max_frames", self.video_max_frames)
        if isinstance(fps, bool) or not isinstance(fps, (int, float)):
            raise ValueError(f"video fps must be a number, got {fps!r}")
        if not 1 <= fps <= MAX_SAMPLING_FPS:
            raise ValueError(
                f"video fps must be between 1 and {MAX_SAMPLING_FPS:g}, got {fps}"
            )
        if isinstance(max_frames, bool) or not isinstance(max_frames, int):
            raise ValueError(f"video max_frames must be an integer, got {max_frames!r}")
        if not 2 <= max_frames <= MAX_SAMPLED_FRAMES:
            raise ValueError(
                f"video max_frames must be between 2 and {MAX_SAMPLED_FRAMES}, "
                f"got {max_frames}"
            )
        return float(fps), max_frames

    def _source_key(self, source, sampling: Tuple[float, int]) -> Optional[str]:
        """SHA-256 of a local file's (or a byte payload's) bytes, the sampling and
        the preprocessing: the frame cache's key. None for URLs and base64 strings,
        which the decoder resolves."""
        digest = hashlib.sha256(b"quicksviewer-source-v1")
        if isinstance(source, bytes):
            digest.update(source)
        elif isinstance(source, str):
            path = source[len("file://") :] if source.startswith("file://") else source
            if not os.path.isfile(path):
                return None
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 24), b""):
                    digest.update(block)
        else:
            return None
        digest.update(json.dumps(sampling).encode())
        digest.update(self._preprocess_tag)
        return digest.hexdigest()

    def _process_video(self, source) -> Tuple[torch.Tensor, List[str], str]:
        """(N, H, W, 3) uint8 frames at the pixel size, their timestamps and the
        SHA-256 of what the model sees (decoded frames, timestamps, preprocessing),
        the key of the radix cache and of the model's visual cache."""
        start = time.perf_counter()
        source, kwargs = self._video_request(source)
        check_local_media(source, self.allowed_media_dirs)
        sampling = self._sampling(kwargs)
        key = self._source_key(source, sampling)
        result = self.frame_cache.get(key)
        if result is None:
            result = self._decode_video(source, *sampling)
            self.frame_cache.put(key, result, result[0].nbytes)
        if TIMING:
            record = {
                "stage": "processor",
                "frames": len(result[1]),
                "seconds": round(time.perf_counter() - start, 4),
                "t_end": time.time(),
            }
            logger.warning("qsv-timing %s", json.dumps(record))
        return result

    def _decode_video(
        self, source, fps: Optional[float] = None, max_frames: Optional[int] = None
    ) -> Tuple[torch.Tensor, List[str], str]:
        fps = self.video_fps if fps is None else fps
        max_frames = self.video_max_frames if max_frames is None else max_frames
        decoded = decode_video(
            source,
            fps=fps,
            max_frames=max_frames,
            transform=self._resize_chunk,
            limits=self.limits,
        )
        if len(decoded.timestamps) < 2:
            raise ValueError(
                f"Quicksviewer needs a video of at least 2 frames at {fps} "
                f"fps; this one gives {len(decoded.timestamps)}"
            )
        frames = torch.cat([resized for _, resized in decoded.results])
        digest = hashlib.sha256(b"quicksviewer-video-v1")
        for frame_digests, _ in decoded.results:
            for frame_digest in frame_digests:
                digest.update(frame_digest)
        digest.update(json.dumps(decoded.timestamps).encode())
        digest.update(self._preprocess_tag)
        if frames.is_cuda:
            torch.cuda.current_stream(frames.device).synchronize()
        return frames, decoded.timestamps, digest.hexdigest()

    def _process_image(self, data) -> torch.Tensor:
        check_local_media(data, self.allowed_media_dirs)
        source = getattr(data, "url", data)
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            data = self.limits.fetch(source, "image")
        elif isinstance(source, str) and os.path.isfile(source.replace("file://", "")):
            self.limits.check_bytes(
                os.path.getsize(source.replace("file://", "")), "image"
            )
        else:
            self.limits.check_encoded(source, "image")
        try:
            image, _ = load_image(data, gpu_image_decode=False)
            image = image.convert("RGB")
        except Exception as e:  # PIL, requests, base64: the client's image is bad
            # SGLang's own ValueError already says why ("Invalid image: ...";
            # 0.5.23: "Could not decode image: ..."), other errors get their type
            why = str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"
            raise ValueError(f"Could not open the image: {why}") from e
        if self.config.image_aspect_ratio == "anyres":
            tiles = anyres_tiles(image, self.pinpoints, self.tile_size)
        else:  # the original's plain resize: one view
            tiles = [image]
        frames = torch.from_numpy(np.stack([np.asarray(t) for t in tiles]))
        return resize_bicubic(frames, self.pixel_size)

    def _transport(self, frames: torch.Tensor):
        """Hand a video's frames to the scheduler: CUDA IPC pool or CPU."""
        if frames.is_cuda and self.use_cuda_ipc:
            return self._wrap_tensor_for_cuda_ipc(frames)
        return frames.cpu()

    # ----------------------------------------------------------------- prompt
    def _video_segments(self, timestamps: List[str], media: int) -> list:
        """``preprocess_multimodal_video``: text and visual positions of a video
        (one per frame, after the frame's timestamp; the thumbnail first)."""
        c, marker = self.config, MARKER_TEXT
        segments = []
        for index, timestamp in enumerate(timestamps):
            segments += [timestamp, ("frame", media, index)]
        if c.use_thumbnail:
            thumbnail = [("thumbnail", media, 0)]
            if c.mm_use_thumbnail_start_end:
                thumbnail = (
                    [marker["thumbnail_start"]] + thumbnail + [marker["thumbnail_end"]]
                )
            segments = thumbnail + segments
        if c.mm_use_video_start_end:
            segments = [marker["video_start"]] + segments + [marker["video_end"]]
        return segments

    def _image_segments(self, num_views: int, media: int) -> list:
        """``preprocess_multimodal_image``: text and one visual position per view."""
        c, marker = self.config, MARKER_TEXT
        view = [("view", media, 0)]
        if c.mm_use_patch_start_end:
            view = [marker["patch_start"]] + view + [marker["patch_end"]]
        segments = view * num_views
        if c.mm_use_im_start_end:
            segments = [marker["im_start"]] + segments + [marker["im_end"]]
        return segments

    def _tokenize_chunks(self, chunks: List[str]) -> List[List[int]]:
        """``tokenizer_image_token``: every chunk between two visual positions is
        tokenized on its own, with the tokenizer's special tokens; a BOS the
        tokenizer puts first is kept once (the first token of every chunk is
        dropped then, as the original does)."""
        # one batched call (each chunk still tokenized on its own)
        encoded = self._tokenizer(chunks).input_ids
        bos = self._tokenizer.bos_token_id
        if not (encoded[0] and bos is not None and encoded[0][0] == bos):
            return encoded
        return [[bos] + encoded[0][1:]] + [ids[1:] for ids in encoded[1:]]

    async def process_mm_data_async(
        self, image_data, audio_data, input_text, request_obj, **kwargs
    ) -> Optional[MultimodalProcessorOutput]:
        video_data = request_obj.video_data or []
        if not isinstance(video_data, list):
            video_data = [video_data]
        image_data = image_data or []
        if not image_data and not video_data:
            return None
        if audio_data:
            raise ValueError("Quicksviewer does not take audio input")
        self.limits.check_counts(len(video_data), len(image_data))
        if isinstance(input_text, list):
            input_text = self._tokenizer.decode(input_text)

        parts = self.placeholder_regex.split(input_text)
        counts = {p: parts.count(p) for p in (IMAGE_PLACEHOLDER, VIDEO_PLACEHOLDER)}
        if counts[IMAGE_PLACEHOLDER] != len(image_data) or counts[
            VIDEO_PLACEHOLDER
        ] != len(video_data):
            raise ValueError(
                f"The prompt has {counts[IMAGE_PLACEHOLDER]} {IMAGE_PLACEHOLDER} and "
                f"{counts[VIDEO_PLACEHOLDER]} {VIDEO_PLACEHOLDER} placeholders but the "
                f"request carries {len(image_data)} images and {len(video_data)} videos"
            )

        loop = asyncio.get_running_loop()
        videos = [
            loop.run_in_executor(self.io_executor, self._process_video, v)
            for v in video_data
        ]
        images = [
            loop.run_in_executor(self.io_executor, self._process_image, i)
            for i in image_data
        ]
        videos, images = iter(await asyncio.gather(*videos)), iter(
            await asyncio.gather(*images)
        )

        # The prompt as the original expands it: text, and a (kind, media, index)
        # per visual position (the thumbnail, every frame of a video, image views).
        segments: list = []
        items: List[MultimodalDataItem] = []
        # per item: cubes and frames of a video (0, 0 for an image); the frames
        # are counted here, the feature may be a CUDA IPC handle
        cubes: List[int] = []
        num_frames: List[int] = []
        for part in parts:
            if part == VIDEO_PLACEHOLDER:
                frames, timestamps, digest = next(videos)
                data = {
                    QuicksviewerVideoItem.TIMESTAMP_TOKEN_IDS: [[]],
                    # in seconds, for the segmentation (return_segments)
                    QuicksviewerVideoItem.TIMESTAMPS: [float(t) for t in timestamps],
                    QuicksviewerVideoItem.PIXEL_TABLE: self.pixel_table,
                    QuicksviewerVideoItem.CONTENT_DIGEST: digest,
                }
                if TIMING:
                    data[QuicksviewerVideoItem.T_MEDIA_DONE] = time.time()
                item = MultimodalDataItem(
                    modality=Modality.VIDEO,
                    feature=self._transport(frames),
                    model_specific_data=data,
                )
                item.hash = int(digest[:16], 16)
                segments += self._video_segments(timestamps, len(items))
                cubes.append(num_cubes(len(timestamps), self.frames_per_cube))
                num_frames.append(len(timestamps))
            elif part == IMAGE_PLACEHOLDER:
                frames = next(images)
                item = MultimodalDataItem(
                    modality=Modality.IMAGE,
                    feature=frames,
                    model_specific_data={
                        QuicksviewerVideoItem.PIXEL_TABLE: self.pixel_table
                    },
                )
                segments += self._image_segments(frames.shape[0], len(items))
                cubes.append(0)
                num_frames.append(0)
            else:
                segments.append(part)
                continue
            item.offsets = []
            items.append(item)
        chunks, visuals = [""], []
        for segment in segments:
            if isinstance(segment, str):
                chunks[-1] += segment
            else:
                visuals.append(segment)
                chunks.append("")
        chunk_ids = self._tokenize_chunks(chunks)

        # Every visual position becomes Q placeholders, except that the frames of
        # a video share one run of (number of cubes) * Q: once the cubes are
        # known, pad_input_ids keeps the timestamp of each cube's first frame (the
        # chunk before that frame; frame 0's chunk stays in the prompt).
        # The offsets are recorded here, not found afterwards by upstream's
        # get_mm_items_offset: a placeholder id is also a marker's, and without
        # the patch or thumbnail markers a marker or the next run touches a run.
        q = self.num_queries
        input_ids: List[int] = list(chunk_ids[0])
        for (kind, media, index), ids in zip(visuals, chunk_ids[1:]):
            item = items[media]
            if kind != "frame" or index == 0:
                run = q * cubes[media] if kind == "frame" else q
                item.offsets.append((len(input_ids), len(input_ids) + run - 1))
                placeholder = (
                    self.video_placeholder_id
                    if item.is_video()
                    else self.image_placeholder_id
                )
                input_ids += [placeholder] * run
            if kind == "frame" and index + 1 < num_frames[media]:
                item.model_specific_data[
                    QuicksviewerVideoItem.TIMESTAMP_TOKEN_IDS
                ].append(ids)
            else:
                input_ids += ids
        return MultimodalProcessorOutput(
            input_ids=input_ids,
            mm_items=items,
            im_token_id=self.image_placeholder_id,
            video_token_id=self.video_placeholder_id,
        )
