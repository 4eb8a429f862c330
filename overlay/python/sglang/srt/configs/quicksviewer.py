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
"""Configuration of Quicksviewer (arXiv 2504.15270).

Quicksviewer is a Qwen2 (or Llama-3.1) language model, a SigLIP vision tower, a "cubing"
network that cuts a video into variable-length cubes, and a 3D perceiver
resampler that turns every cube (and a thumbnail) into ``num_queries`` tokens.

The released checkpoints use ``model_type: quicksviewer_qwen`` and the
architecture name ``LlavaQwenForCausalLM``, which SGLang already maps to its
LLaVA-OneVision model (and forces to fp16). Converted checkpoints (see the
project's ``convert`` tool) use ``model_type: quicksviewer`` and
``QuicksviewerForCausalLM`` with explicit ``text_config`` and
``vision_config``; that is the layout this class reads.
"""

from typing import Any, Dict, List, Optional, Union

from transformers import (
    CONFIG_MAPPING,
    AutoConfig,
    PretrainedConfig,
    SiglipVisionConfig,
)

# The 8 marker tokens of the original tokenizer, in the order the original adds them.
QUICKSVIEWER_MARKERS = (
    "patch_start",
    "patch_end",
    "video_start",
    "video_end",
    "im_start",
    "im_end",
    "thumbnail_start",
    "thumbnail_end",
)

# anyres candidate resolutions (width, height) of the released model
DEFAULT_IMAGE_GRID_PINPOINTS = [
    [224, 448],
    [224, 672],
    [224, 896],
    [448, 448],
    [448, 224],
    [672, 224],
    [896, 224],
]


# The language models of the two released variants (text_config.model_type).
TEXT_MODEL_TYPES = ("qwen2", "llama")
# "anyres" tiles, or "square": the original's plain resize of each image to one view
# (its process_images else branch); the converter refuses the other values.
IMAGE_ASPECT_RATIOS = ("anyres", "square")


def num_cube_boundaries(num_frames: int, frames_per_cube: int = 5) -> int:
    """Cube boundaries the cubing network chooses besides frame 0 (the
    original's ``num_cubes``): ``max(round(N / frames_per_cube) - 1, 1)``."""
    return max(round(num_frames / frames_per_cube) - 1, 1)


def num_cubes(num_frames: int, frames_per_cube: int = 5) -> int:
    """Cubes of a video of ``num_frames`` sampled frames (K below): frame 0
    starts the first, every chosen boundary one more."""
    return 1 + num_cube_boundaries(num_frames, frames_per_cube)


class QuicksviewerVideoItem:
    """The processor-model contract of one video: a ``MultimodalDataItem`` of
    modality VIDEO, written by the processor, read by the model's
    ``prefetch_mm_inputs`` and ``pad_input_ids``.

    Dimensions:
        - N: sampled frames (N >= 2)
        - H, W: the pixel size (the SigLIP preprocessing's, 384 x 384)
        - K: cubes, ``num_cubes(N, cubing_frames_per_cube)``
        - Q: ``num_queries`` (64)

    Fields:
        - ``feature``: (N, H, W, 3) uint8, the resized frames (on the CPU, or
          on the GPU through SGLang's CUDA IPC pool)
        - ``offsets``: exactly two runs of placeholders, the thumbnail (Q) then
          the cubes (K * Q); only the cube run with ``use_thumbnail: false``.
          ``pad_input_ids`` replaces them with one run of Q per block.
        - ``hash``: the first 64 bits of ``CONTENT_DIGEST``

    ``model_specific_data`` (the keys below):
        - ``TIMESTAMP_TOKEN_IDS``: N lists of token ids: ``[]`` for frame 0
          (its timestamp stays in the prompt), then frame i's timestamp, which
          ``pad_input_ids`` writes before the cube that starts at frame i
        - ``TIMESTAMPS``: N floats, the frames' timestamps in seconds
        - ``PIXEL_TABLE``: (256, 3) fp16, the rescale + normalisation of every
          uint8 value per channel (also on image items)
        - ``CONTENT_DIGEST``: hex SHA-256 of the frames, timestamps and
          preprocessing (the visual cache's key)
        - ``ENCODED``: set by the model's ``prefetch_mm_inputs``: (embeddings
          (K + 1, Q, D), K cube starts, timing), taken by ``pad_input_ids``
        - ``T_MEDIA_DONE``: with ``SGLANG_QSV_TIMING=1``, when the processor
          finished (seconds since the epoch)

    An image item carries (V, H, W, 3) uint8 views (anyres: the base view then
    the tiles), ``PIXEL_TABLE`` and one run of Q per view.
    """

    TIMESTAMP_TOKEN_IDS = "timestamp_token_ids"
    TIMESTAMPS = "timestamps"
    PIXEL_TABLE = "pixel_table"
    CONTENT_DIGEST = "content_digest"
    ENCODED = "qsv_encoded"
    T_MEDIA_DONE = "qsv_t_media_done"


def _sub_config(cls, value):
    """A sub-config given as a dict, an instance or None (the defaults)."""
    if isinstance(value, cls):
        return value
    return cls(**(value or {}))


def _text_config(value) -> PretrainedConfig:
    """The language model's config: Qwen2 (the default) or Llama."""
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {})
    model_type = value.pop("model_type", "qwen2")
    if model_type not in TEXT_MODEL_TYPES:
        raise ValueError(
            f"text_config.model_type {model_type!r} is not supported; "
            f"expected one of {TEXT_MODEL_TYPES}"
        )
    return CONFIG_MAPPING[model_type](**value)


class QuicksviewerConfig(PretrainedConfig):
    model_type = "quicksviewer"
    sub_configs = {"text_config": AutoConfig, "vision_config": SiglipVisionConfig}

    def __init__(
        self,
        text_config: Optional[Union[Dict[str, Any], PretrainedConfig]] = None,
        vision_config: Optional[Union[Dict[str, Any], SiglipVisionConfig]] = None,
        num_queries: int = 64,
        resampler_num_heads: Optional[int] = None,
        vision_feature_size: int = 24,
        cubing_momentum: float = 0.8,
        cubing_frames_per_cube: int = 5,
        cubing_temperature: float = 0.5,
        use_thumbnail: bool = True,
        image_aspect_ratio: str = "anyres",
        image_grid_pinpoints: Optional[List[List[int]]] = None,
        video_max_frames: int = 420,
        video_fps: float = 1.0,
        mm_use_im_start_end: bool = True,
        mm_use_patch_start_end: bool = True,
        mm_use_video_start_end: bool = True,
        mm_use_thumbnail_start_end: bool = True,
        pad_token_id: Optional[int] = None,
        **kwargs,
    ):
        self.text_config = text_config = _text_config(text_config)
        self.vision_config = _sub_config(SiglipVisionConfig, vision_config)

        for marker in QUICKSVIEWER_MARKERS:
            key = f"{marker}_token_id"
            setattr(self, key, kwargs.pop(key, None))

        self.num_queries = num_queries
        # The original resampler uses one head per 128 channels unless told otherwise.
        self.resampler_num_heads = resampler_num_heads or text_config.hidden_size // 128
        self.vision_feature_size = vision_feature_size
        self.cubing_momentum = cubing_momentum
        self.cubing_frames_per_cube = cubing_frames_per_cube
        self.cubing_temperature = cubing_temperature
        self.use_thumbnail = use_thumbnail
        if image_aspect_ratio not in IMAGE_ASPECT_RATIOS:
            raise ValueError(
                f"image_aspect_ratio {image_aspect_ratio!r} is not supported; "
                f"expected one of {IMAGE_ASPECT_RATIOS}"
            )
        self.image_aspect_ratio = image_aspect_ratio
        self.image_grid_pinpoints = [
            list(p) for p in (image_grid_pinpoints or DEFAULT_IMAGE_GRID_PINPOINTS)
        ]
        self.video_max_frames = video_max_frames
        self.video_fps = video_fps
        self.mm_use_im_start_end = mm_use_im_start_end
        self.mm_use_patch_start_end = mm_use_patch_start_end
        self.mm_use_video_start_end = mm_use_video_start_end
        self.mm_use_thumbnail_start_end = mm_use_thumbnail_start_end
        if pad_token_id is None:
            pad_token_id = text_config.pad_token_id
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    def marker_token_ids(self) -> Dict[str, int]:
        """The ids of the 8 marker tokens, keyed by marker name."""
        ids = {m: getattr(self, f"{m}_token_id") for m in QUICKSVIEWER_MARKERS}
        missing = [m for m, i in ids.items() if i is None]
        if missing:
            raise ValueError(
                f"Quicksviewer config lacks the token ids of {missing}; "
                "convert the checkpoint with the project's convert tool."
            )
        return ids
