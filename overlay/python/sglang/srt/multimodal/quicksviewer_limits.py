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
"""Resource limits of Quicksviewer's media inputs (server settings, environment).

Every limit is a clear ``ValueError`` (HTTP 400) naming the limit and its variable:

=================================  =======  ==========================================
variable                           default  what
=================================  =======  ==========================================
SGLANG_QSV_MAX_VIDEO_MB            2048     bytes of one video (file, upload, download)
SGLANG_QSV_MAX_IMAGE_MB            64       bytes of one image
SGLANG_QSV_MAX_VIDEO_SECONDS       14400    duration of one video (4 h)
SGLANG_QSV_MAX_FRAME_SIDE          8192     width and height of a video frame (8K: 7680)
SGLANG_QSV_FETCH_TIMEOUT_S         60       a whole http(s) download
SGLANG_QSV_MAX_VIDEOS_PER_REQUEST  4        videos in one request
SGLANG_QSV_MAX_IMAGES_PER_REQUEST  16       images in one request
=================================  =======  ==========================================

The sampled frames per video are bounded separately (``max_frames`` <= 1024, 420 by
default), and decoding holds at most one batch of decoded frames per reader
(``quicksviewer_video.BATCH_BYTES``), so a 4K or 8K source does not multiply host
memory by its frame count. The defaults fit one 80 GB GPU: 4 videos of 1024 frames
give at most 4 x 64 x 205 visual tokens.
"""

import os
import time
from dataclasses import dataclass

import requests

MB = 1 << 20


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        parsed = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None
    if parsed <= 0:
        raise ValueError(f"{name}={value!r} must be positive")
    return parsed


@dataclass(frozen=True)
class MediaLimits:
    max_video_bytes: int = 2048 * MB
    max_image_bytes: int = 64 * MB
    max_video_seconds: float = 14400.0
    max_frame_side: int = 8192
    fetch_timeout_s: float = 60.0
    max_videos: int = 4
    max_images: int = 16

    @classmethod
    def from_env(cls) -> "MediaLimits":
        d = cls()
        return cls(
            max_video_bytes=int(
                _env_float("SGLANG_QSV_MAX_VIDEO_MB", d.max_video_bytes / MB) * MB
            ),
            max_image_bytes=int(
                _env_float("SGLANG_QSV_MAX_IMAGE_MB", d.max_image_bytes / MB) * MB
            ),
            max_video_seconds=_env_float(
                "SGLANG_QSV_MAX_VIDEO_SECONDS", d.max_video_seconds
            ),
            max_frame_side=int(
                _env_float("SGLANG_QSV_MAX_FRAME_SIDE", d.max_frame_side)
            ),
            fetch_timeout_s=_env_float("SGLANG_QSV_FETCH_TIMEOUT_S", d.fetch_timeout_s),
            max_videos=int(
                _env_float("SGLANG_QSV_MAX_VIDEOS_PER_REQUEST", d.max_videos)
            ),
            max_images=int(
                _env_float("SGLANG_QSV_MAX_IMAGES_PER_REQUEST", d.max_images)
            ),
        )

    # ---------------------------------------------------------------- checks
    def check_counts(self, videos: int, images: int) -> None:
        if videos > self.max_videos:
            raise ValueError(
                f"The request has {videos} videos; the server accepts at most "
                f"{self.max_videos} (SGLANG_QSV_MAX_VIDEOS_PER_REQUEST)"
            )
        if images > self.max_images:
            raise ValueError(
                f"The request has {images} images; the server accepts at most "
                f"{self.max_images} (SGLANG_QSV_MAX_IMAGES_PER_REQUEST)"
            )

    def check_bytes(self, size: int, kind: str) -> None:
        """``kind`` "video" or "image": the size of one encoded input."""
        limit = self.max_video_bytes if kind == "video" else self.max_image_bytes
        if size > limit:
            raise ValueError(
                f"The {kind} has {size:,} bytes or more; the server accepts at most "
                f"{limit / MB:g} MB (SGLANG_QSV_MAX_{kind.upper()}_MB)"
            )

    def check_encoded(self, source, kind: str) -> None:
        """Bytes, a base64 string or a data URL, before decoding it."""
        if isinstance(source, (bytes, bytearray)):
            self.check_bytes(len(source), kind)
        elif isinstance(source, str) and not source.startswith(
            ("http://", "https://", "file://", "/")
        ):
            # base64 (also inside a data URL): 4 characters per 3 bytes
            self.check_bytes(len(source) * 3 // 4, kind)

    def check_video(self, frame_count: int, avg_fps: float) -> None:
        if avg_fps > 0 and frame_count / avg_fps > self.max_video_seconds:
            raise ValueError(
                f"The video lasts {frame_count / avg_fps:.0f} s; the server accepts "
                f"at most {self.max_video_seconds:g} s (SGLANG_QSV_MAX_VIDEO_SECONDS)"
            )

    def check_frame(self, height: int, width: int) -> None:
        if max(height, width) > self.max_frame_side:
            raise ValueError(
                f"The video's frames are {width}x{height}; the server accepts at most "
                f"{self.max_frame_side} pixels a side (SGLANG_QSV_MAX_FRAME_SIDE)"
            )

    # ----------------------------------------------------------------- fetch
    def fetch(self, url: str, kind: str = "video") -> bytes:
        """Download ``url`` with the size cap (checked as it streams) and a deadline
        for the whole transfer (checked whenever bytes arrive; a stalled socket
        times out on its own). Errors name the URL and the cause."""
        shown = url[:200]
        deadline = time.monotonic() + self.fetch_timeout_s
        try:
            with requests.get(
                url, stream=True, timeout=min(self.fetch_timeout_s, 30)
            ) as response:
                response.raise_for_status()
                declared = response.headers.get("Content-Length")
                if declared and declared.isdigit():
                    self.check_bytes(int(declared), kind)
                chunks, size = [], 0
                # read1: whatever has arrived (read(n) would wait for n bytes)
                while chunk := response.raw.read1(1 << 16):
                    size += len(chunk)
                    self.check_bytes(size, kind)
                    if time.monotonic() > deadline:
                        raise ValueError(
                            f"Could not fetch {kind} {shown!r}: not complete after "
                            f"{self.fetch_timeout_s:g} s (SGLANG_QSV_FETCH_TIMEOUT_S)"
                        )
                    chunks.append(chunk)
        except requests.HTTPError as e:
            status = e.response.status_code if e.response is not None else "error"
            raise ValueError(f"Could not fetch {kind} {shown!r}: HTTP {status}") from e
        except ValueError:
            raise
        except Exception as e:  # requests / urllib3: refused, reset, timed out
            raise ValueError(
                f"Could not fetch {kind} {shown!r}: {type(e).__name__}"
            ) from e
        data = b"".join(chunks)
        if not data:
            raise ValueError(f"Could not fetch {kind} {shown!r}: the response is empty")
        return data
