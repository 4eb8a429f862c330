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

Frames, pixels and prompt expansion follow the original implementation:

* video: one frame at the middle of every second (1 fps), at most 420 frames
  by uniform sub-sampling, timestamps ``round(index / fps, 1)``; decoded with
  SGLang's loader (torchcodec or decord) or, where neither is installed, with
  OpenCV (the original's own decoder);
* pixels: SigLIP's PIL/NumPy processor (bicubic 384x384, mean = std = 0.5),
  then rounded to fp16 as the original does before the tower;
* images: "anyres" tiles (a 384x384 base view plus the 384x384 tiles of the
  image resized and padded to the best grid pinpoint);
* prompt: a video becomes ``<video_start><thumbnail_start>[64]<thumbnail_end>``
  followed by one 64-token block per cube and ``<video_end>``; the model's
  ``pad_input_ids`` inserts the timestamp of each cube's first frame once the
  cubes are known. An image becomes ``<im_start>(<patch_start>[64]<patch_end>)
  x tiles<im_end>``.
"""

import asyncio
import binascii
import json
import logging
import math
import os
import re
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from transformers.models.siglip.image_processing_pil_siglip import (
    SiglipImageProcessorPil,
)

from sglang.srt.managers.schedule_batch import (
    Modality,
    MultimodalDataItem,
    MultimodalProcessorOutput,
)
from sglang.srt.models.quicksviewer import QuicksviewerCubing, QuicksviewerForCausalLM
from sglang.srt.multimodal.processors.base_processor import BaseMultimodalProcessor
from sglang.srt.utils import load_image
from sglang.srt.utils.common import _normalize_video_input, load_video

logger = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
# Qwen2.5 tokens that stand for visual positions until pad_input_ids fills them.
IMAGE_PAD_TOKEN = "<|image_pad|>"
VIDEO_PAD_TOKEN = "<|video_pad|>"
# Frames are decoded and preprocessed in chunks to bound memory on long,
# high-resolution videos.
DECODE_CHUNK = 32


def sample_frame_indices(
    native_fps: float, frame_count: int, fps: float, max_frames: int
) -> List[int]:
    """Frame indices of the original ``opencv_extract_frames_fps``.

    One frame at the middle of every 1/fps seconds, then ``max_frames`` by
    the original's uniform sub-sampling (which keeps all frames when there
    are fewer). Indices past the last frame are dropped, as the original's
    sequential reader silently does.
    """
    if not (native_fps > 0 and math.isfinite(native_fps)):
        raise ValueError(f"video reports an invalid frame rate ({native_fps})")
    fps = min(fps, native_fps)
    step, per_step = round(native_fps), round(fps)
    if step < 1 or per_step < 1:
        raise ValueError(f"video frame rate {native_fps} is below 1 fps")
    indices = [
        int(i + j * native_fps / fps + native_fps / fps / 2)
        for i in range(0, int(frame_count - 1) + 1, step)
        for j in range(per_step)
    ]
    if not indices:
        return []
    gap = len(indices) / max_frames
    picks = sorted({int(i * gap + gap / 2) for i in range(max_frames)})
    return [indices[p] for p in picks if indices[p] < frame_count]


class FrameDecodeError(RuntimeError):
    """The decoder opened the video but could not return its frames."""


class _OpenCVReader:
    """The original's decoder, for hosts without torchcodec and decord."""

    def __init__(self, source):
        import cv2

        self._cv2 = cv2
        self._tmp = None
        path = _normalize_video_input(source)
        if isinstance(path, bytes):
            fd, self._tmp = tempfile.mkstemp(suffix=".mp4")
            with os.fdopen(fd, "wb") as f:
                f.write(path)
            path = self._tmp
        if not isinstance(path, str):
            raise ValueError(f"Unsupported video input type: {type(source)}")
        self._cap = cv2.VideoCapture(path)
        if not self._cap.isOpened():
            self.close()
            raise ValueError("Could not decode video: OpenCV cannot open it")
        self.avg_fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.frame_count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))

    def read(self, indices: Sequence[int]):
        """Yield (index, RGB frame) reading sequentially like the original."""
        cv2 = self._cv2
        wanted = set(indices)
        self._cap.set(cv2.CAP_PROP_POS_FRAMES, float(indices[0]))
        for index in range(indices[0], indices[-1] + 1):
            if index in wanted:
                ok, frame = self._cap.read()
                if ok:
                    yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            else:
                ok = self._cap.grab()
            if not ok:
                return

    def close(self):
        if getattr(self, "_cap", None) is not None:
            self._cap.release()
            self._cap = None
        if self._tmp is not None:
            os.unlink(self._tmp)
            self._tmp = None


class _SGLangReader:
    """SGLang's own video loader (torchcodec or decord)."""

    def __init__(self, decoder):
        self._decoder = decoder
        self.avg_fps = decoder.avg_fps
        self.frame_count = len(decoder)

    def read(self, indices: Sequence[int]):
        for start in range(0, len(indices), DECODE_CHUNK):
            chunk = list(indices[start : start + DECODE_CHUNK])
            try:
                frames = np.asarray(self._decoder.get_frames_at(chunk))
            except Exception as e:
                raise FrameDecodeError(f"video decoder failed: {e}") from e
            if (
                frames.ndim != 4
                or frames.shape[0] != len(chunk)
                or frames.shape[-1] != 3
            ):
                raise FrameDecodeError(
                    f"video decoder returned frames of shape {frames.shape}"
                )
            yield from zip(chunk, frames)

    def close(self):
        close = getattr(self._decoder, "close", None)
        if close is not None:
            close()


def open_video(source):
    """A frame reader over ``source`` (path, URL, data URL, base64 or bytes)."""
    try:
        return _SGLangReader(load_video(source, use_gpu=False))
    except ImportError:
        return _OpenCVReader(source)
    except binascii.Error as e:
        # SGLang reads a string that is no file, URL or data URL as base64
        raise ValueError(
            f"Video {source[:100]!r} is neither an existing file, a URL nor "
            f"base64 data ({e})"
        ) from e


def select_best_resolution(
    size: Tuple[int, int], pinpoints: Sequence[Sequence[int]]
) -> Tuple[int, int]:
    """The anyres grid (width, height) of the original: most effective pixels,
    then least waste."""
    width, height = size
    best, best_effective, best_waste = None, 0, float("inf")
    for cand_w, cand_h in pinpoints:
        scale = min(cand_w / width, cand_h / height)
        effective = min(int(width * scale) * int(height * scale), width * height)
        waste = cand_w * cand_h - effective
        if effective > best_effective or (
            effective == best_effective and waste < best_waste
        ):
            best, best_effective, best_waste = (cand_w, cand_h), effective, waste
    return best


def anyres_tiles(
    image: Image.Image, pinpoints: Sequence[Sequence[int]], tile: int
) -> List[Image.Image]:
    """Base view plus the tiles of the image resized and padded (black) to the
    best pinpoint, in the original's order and with PIL's default resampling."""
    target_w, target_h = select_best_resolution(image.size, pinpoints)
    width, height = image.size
    scale_w, scale_h = target_w / width, target_h / height
    if scale_w < scale_h:
        new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
    else:
        new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
    canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
    canvas.paste(
        image.resize((new_w, new_h)), ((target_w - new_w) // 2, (target_h - new_h) // 2)
    )
    tiles = [
        canvas.crop((x, y, x + tile, y + tile))
        for y in range(0, target_h, tile)
        for x in range(0, target_w, tile)
    ]
    return [image.resize((tile, tile))] + tiles


class QuicksviewerProcessor(BaseMultimodalProcessor):
    models = [QuicksviewerForCausalLM]
    gpu_image_decode = False

    def __init__(self, hf_config, server_args, _processor, *args, **kwargs):
        super().__init__(hf_config, server_args, _processor, *args, **kwargs)
        tokenizer = self._tokenizer
        self.markers = hf_config.marker_token_ids()
        for name, token_id in self.markers.items():
            found = tokenizer.convert_tokens_to_ids(f"<{name}>")
            if found != token_id:
                raise ValueError(
                    f"config says <{name}> is token {token_id}, the tokenizer says "
                    f"{found}; the checkpoint's config and tokenizer do not match"
                )
        self.image_pad_id = self._special_token_id(IMAGE_PAD_TOKEN)
        self.video_pad_id = self._special_token_id(VIDEO_PAD_TOKEN)
        self.num_queries = hf_config.num_queries
        self.tile_size = hf_config.vision_config.image_size
        self.pinpoints = hf_config.image_grid_pinpoints
        self.video_fps = hf_config.video_fps
        self.video_max_frames = hf_config.video_max_frames
        self.frames_per_cube = hf_config.cubing_frames_per_cube
        self.pixel_processor = self._load_pixel_processor(server_args.model_path)
        self.placeholder_regex = re.compile(
            f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})"
        )

    def _special_token_id(self, token: str) -> int:
        token_id = self._tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == self._tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {token} token")
        return token_id

    def _load_pixel_processor(self, model_path: str) -> SiglipImageProcessorPil:
        """SigLIP's slow (PIL/NumPy) preprocessing, from the checkpoint's
        preprocessor_config.json when it has one."""
        config = {}
        path = os.path.join(model_path, "preprocessor_config.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                config = json.load(f)
        size = config.get("size") or {}
        return SiglipImageProcessorPil(
            size={
                "height": size.get("height", self.tile_size),
                "width": size.get("width", self.tile_size),
            },
            resample=config.get("resample", 3),
            rescale_factor=config.get("rescale_factor", 1 / 255),
            image_mean=config.get("image_mean", [0.5, 0.5, 0.5]),
            image_std=config.get("image_std", [0.5, 0.5, 0.5]),
        )

    def _pixels(self, images) -> torch.Tensor:
        """(N, 3, H, W) fp16, the original's rounding before the tower."""
        out = self.pixel_processor(images=list(images), return_tensors="pt")
        return out["pixel_values"].to(torch.float16)

    # ------------------------------------------------------------------ media
    def _process_video(self, source) -> Tuple[torch.Tensor, List[str]]:
        source = getattr(source, "url", source)
        reader = open_video(source)
        try:
            pixels, timestamps = self._read_frames(reader)
        except FrameDecodeError as e:
            # decord fails on some valid streams (e.g. odd frame sizes); the
            # original decodes with OpenCV, so that is the faithful fallback
            logger.warning("%s; decoding the video with OpenCV instead", e)
            reader.close()
            reader = _OpenCVReader(source)
            pixels, timestamps = self._read_frames(reader)
        finally:
            reader.close()
        if len(timestamps) < 2:
            raise ValueError(
                f"Quicksviewer needs a video of at least 2 frames at {self.video_fps} "
                f"fps (about 1.5 s or longer); this one gives {len(timestamps)}"
            )
        return pixels, timestamps

    def _read_frames(self, reader) -> Tuple[Optional[torch.Tensor], List[str]]:
        indices = sample_frame_indices(
            reader.avg_fps, reader.frame_count, self.video_fps, self.video_max_frames
        )
        if not indices:
            raise ValueError("Could not decode video: it reports no frames")
        chunks, timestamps, frames = [], [], []
        for index, frame in reader.read(indices):
            frames.append(frame)
            timestamps.append(str(round(index / reader.avg_fps, 1)))
            if len(frames) == DECODE_CHUNK:
                chunks.append(self._pixels(frames))
                frames = []
        if frames:
            chunks.append(self._pixels(frames))
        return (torch.cat(chunks) if chunks else None), timestamps

    def _process_image(self, data) -> torch.Tensor:
        image, _ = load_image(data, gpu_image_decode=False)
        image = image.convert("RGB")
        return self._pixels(anyres_tiles(image, self.pinpoints, self.tile_size))

    # ----------------------------------------------------------------- prompt
    def _encode(self, text: str) -> List[int]:
        return self._tokenizer.encode(text, add_special_tokens=False)

    def _video_ids(self, num_frames: int) -> List[int]:
        """Ids of a video before the cubes are known: the thumbnail run, then
        one run for all cubes (pad_input_ids adds their timestamps)."""
        q, m = self.num_queries, self.markers
        num_cubes = QuicksviewerCubing.num_boundaries(num_frames, self.frames_per_cube)
        num_cubes += 1
        return (
            [m["video_start"], m["thumbnail_start"]]
            + [self.video_pad_id] * q
            + [m["thumbnail_end"]]
            + [self.video_pad_id] * (q * num_cubes)
            + [m["video_end"]]
        )

    def _image_ids(self, num_tiles: int) -> List[int]:
        q, m = self.num_queries, self.markers
        tile = [m["patch_start"]] + [self.image_pad_id] * q + [m["patch_end"]]
        return [m["im_start"]] + tile * num_tiles + [m["im_end"]]

    @staticmethod
    def _runs(ids: List[int], pad_id: int, base: int) -> List[Tuple[int, int]]:
        """Inclusive (start, end) of every run of ``pad_id``, offset by ``base``."""
        runs = []
        for i, token in enumerate(ids):
            if token != pad_id:
                continue
            if runs and runs[-1][1] == base + i - 1:
                runs[-1] = (runs[-1][0], base + i)
            else:
                runs.append((base + i, base + i))
        return runs

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

        input_ids: List[int] = []
        items: List[MultimodalDataItem] = []
        for part in parts:
            if part == VIDEO_PLACEHOLDER:
                pixels, timestamps = next(videos)
                ids, pad_id = self._video_ids(pixels.shape[0]), self.video_pad_id
                item = MultimodalDataItem(
                    modality=Modality.VIDEO,
                    feature=pixels,
                    model_specific_data={
                        "timestamp_token_ids": [self._encode(t) for t in timestamps]
                    },
                )
            elif part == IMAGE_PLACEHOLDER:
                pixels = next(images)
                ids, pad_id = self._image_ids(pixels.shape[0]), self.image_pad_id
                item = MultimodalDataItem(modality=Modality.IMAGE, feature=pixels)
            else:
                input_ids += self._encode(part)
                continue
            item.offsets = self._runs(ids, pad_id, len(input_ids))
            input_ids += ids
            items.append(item)
        return MultimodalProcessorOutput(
            input_ids=input_ids,
            mm_items=items,
            im_token_id=self.image_pad_id,
            video_token_id=self.video_pad_id,
        )
