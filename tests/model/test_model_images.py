"""Images through the real Engine (fp32, CPU) against the reference implementation.

Quicksviewer reads images with "anyres" (qsv_reference/preprocess.py,
``anyres_views``): a 384 x 384 base view plus the 384 x 384 tiles of the image resized
and padded to the best of 7 pinpoints, each view one 64-token block between
``<patch_start>``/``<patch_end>``, the image between ``<im_start>``/``<im_end>``.
Checked here:

* one image, and two images of different aspect ratios: the Engine's final input ids
  and its 16 greedy tokens equal the reference's;
* the number of views of several image sizes, computed in this file from the
  original's ``select_best_resolution`` rule (the reference's), equals the
  processor's ``anyres_tiles`` and the number of 64-token blocks the Engine puts in
  the prompt.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from qsv_reference import preprocess as reference
from tests.helpers.model_fixtures import as_reported, chatml_prompt, reported_input_ids
from tests.helpers.project import PROJECT_ROOT

NEW_TOKENS = 16
QUESTION = "What is in the image?"
TILE = 384
QUERIES = 64
# (W, H) candidates of the released model, in the order of its image_grid_pinpoints
PINPOINTS = [
    (224, 448),
    (224, 672),
    (224, 896),
    (448, 448),
    (448, 224),
    (672, 224),
    (896, 224),
]

# (width, height) -> the test's own expectation (see expected_views)
SIZES = [
    (320, 240),  # 4:3 -> (448, 448), 4 tiles
    (150, 600),  # 1:4, small: every pinpoint that holds it is a tie -> least waste
    (200, 800),  # 1:4, larger -> (224, 896), 3 tiles
    (400, 400),  # -> (448, 448)
    (800, 200),  # -> (896, 224), 3 tiles
    (600, 200),  # -> (672, 224), 2 tiles
    (600, 300),  # -> (448, 224)
    (20, 20),  # tiny: all pinpoints tie on effective and waste -> the first
    (1280, 720),
    (90, 1000),
]


def best_pinpoint(width: int, height: int) -> tuple[int, int]:
    """The original ``select_best_resolution`` (llava mm_utils), as the reference
    has it (qsv_reference/preprocess.py): the pinpoint with the most effective pixels
    (the image downscaled to fit, capped at its own size), then the least waste; the
    first one wins a full tie."""
    return reference.select_best_resolution((width, height), PINPOINTS)


def expected_views(width: int, height: int) -> int:
    """1 base view + the 384-px grid over the padded pinpoint (from (0, 0))."""
    grid_w, grid_h = best_pinpoint(width, height)
    return 1 + math.ceil(grid_w / TILE) * math.ceil(grid_h / TILE)


def test_expectation_facts():
    """Hand-checked against the notes, so the rule above is the original's."""
    # a table of facts, like convert.py's KNOWN_IMAGE_SIZES only in shape
    assert {
        p: 1 + math.ceil(p[0] / TILE) * math.ceil(p[1] / TILE) for p in PINPOINTS
    } == {
        (224, 448): 3,
        (224, 672): 3,
        (224, 896): 4,
        (448, 448): 5,
        (448, 224): 3,
        (672, 224): 3,
        (896, 224): 4,
    }
    assert best_pinpoint(320, 240) == (448, 448)
    assert best_pinpoint(150, 600) == (224, 672)  # holds all 90000 px, least waste
    assert best_pinpoint(200, 800) == (224, 896)
    assert best_pinpoint(800, 200) == (896, 224)
    assert best_pinpoint(600, 200) == (672, 224)
    assert best_pinpoint(20, 20) == (224, 448)
    assert {expected_views(w, h) - 1 for w, h in SIZES} == {2, 3, 4}
    assert {best_pinpoint(w, h) for w, h in SIZES} == set(PINPOINTS)


def make_image(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour ramps plus noise, so resizing and tiling matter."""
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    base = np.stack(
        [255 * xs / max(width - 1, 1), 255 * ys / max(height - 1, 1), 128 + 0 * xs],
        axis=-1,
    )
    noisy = base + rng.normal(0, 30, size=base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    paths = {}
    for seed, (width, height) in enumerate(SIZES):
        path = root / f"{width}x{height}.png"
        make_image(width, height, seed).save(path)
        paths[(width, height)] = path
    return paths


@pytest.fixture(scope="module")
def tokenizer(references):
    return references.model("fp32").tokenizer


def engine_run(engine, paths, question=QUESTION, new_tokens=NEW_TOKENS):
    media = "<image>\n" * len(paths)
    return engine.generate(
        prompt=chatml_prompt(media, question),
        image_data=[str(p) for p in paths],
        sampling_params={"temperature": 0, "max_new_tokens": new_tokens},
        return_logprob=True,
        logprob_start_len=0,
    )


@pytest.mark.parametrize(
    "sizes",
    [[(320, 240)], [(320, 240), (150, 600)]],
    ids=["one_image", "two_images"],
)
def test_engine_matches_reference(sizes, image_files, engines, references, tokenizer):
    paths = [image_files[size] for size in sizes]
    question = QUESTION if len(paths) == 1 else "What is in the images?"
    ref = references.model("fp32").run_images(
        paths, question, max_new_tokens=NEW_TOKENS
    )
    assert ref.views_per_image == [expected_views(*size) for size in sizes]
    # the original prompt: "<image>\n" per image, then the question
    # (qsv_reference/preprocess.py, image_user_message)
    assert ref.prompt.startswith("<|im_start|>user\n<im_start><patch_start>")
    assert ref.prompt.endswith(
        f"<im_end>\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )

    out = engine_run(engines("fp32"), paths, question)
    expected_ids = as_reported(ref.expanded_input_ids, len(tokenizer))
    assert reported_input_ids(out["meta_info"]) == expected_ids
    assert len(ref.tokens) == NEW_TOKENS  # no early eos: all 16 are compared
    assert out["output_ids"] == ref.tokens


def image_blocks(ids: list[int], tokenizer) -> list[list[int]]:
    """Every ``<im_start> ... <im_end>`` span of ``ids``, markers included."""
    start = tokenizer.convert_tokens_to_ids("<im_start>")
    end = tokenizer.convert_tokens_to_ids("<im_end>")
    blocks, opened = [], None
    for i, token in enumerate(ids):
        if token == start:
            assert opened is None, "nested <im_start>"
            opened = i
        elif token == end:
            assert opened is not None, "<im_end> without <im_start>"
            blocks.append(ids[opened : i + 1])
            opened = None
    assert opened is None, "unclosed <im_start>"
    return blocks


def test_anyres_views(image_files, engines, tokenizer, checkpoints):
    """Views per image: the rule above == processor's anyres_tiles == the Engine's
    64-token blocks (all sizes in one request, in order)."""
    import json

    from sglang.srt.multimodal.processors.quicksviewer import (
        anyres_tiles,
        select_best_resolution,
    )

    config = json.loads((checkpoints.converted("fp32") / "config.json").read_text())
    assert [tuple(p) for p in config["image_grid_pinpoints"]] == PINPOINTS
    assert config["vision_config"]["image_size"] == TILE

    for width, height in SIZES:
        image = Image.open(image_files[(width, height)]).convert("RGB")
        assert select_best_resolution((width, height), PINPOINTS) == best_pinpoint(
            width, height
        ), (width, height)
        views = anyres_tiles(image, PINPOINTS, TILE)
        assert len(views) == expected_views(width, height), (width, height)
        assert all(view.size == (TILE, TILE) for view in views)

    paths = [image_files[size] for size in SIZES]
    out = engine_run(engines("fp32"), paths, "Compare the images.", new_tokens=1)
    ids = reported_input_ids(out["meta_info"])
    patch = [tokenizer.convert_tokens_to_ids("<patch_start>")]
    patch += [0] * QUERIES + [tokenizer.convert_tokens_to_ids("<patch_end>")]
    blocks = image_blocks(ids, tokenizer)
    assert len(blocks) == len(SIZES)
    for (width, height), block in zip(SIZES, blocks):
        views = expected_views(width, height)
        assert block[1:-1] == patch * views, (
            f"{width}x{height}: expected {views} views, got "
            f"{(len(block) - 2) / len(patch):g}"
        )
    total = sum(expected_views(w, h) for w, h in SIZES)
    assert ids.count(0) == QUERIES * total


def test_bf16_image_stages_are_bit_identical_to_the_reference(checkpoints, tmp_path):
    """Issue #9: in bf16, the pixels, the SigLIP features and the resampler output
    of one and of two images are the reference's, bit for bit, on CPU (the GPU run
    of the same script bounds each stage on CUDA kernels, docs/gpu-runs.md)."""
    proc = subprocess.run(
        [
            sys.executable,
            str(PROJECT_ROOT / "ci" / "gpu" / "image_stages.py"),
            "--original",
            str(checkpoints.original("bf16")),
            "--converted",
            str(checkpoints.converted("bf16")),
            "--device",
            "cpu",
            "--no-engine",
            "--tokens",
            "2",
            "--images-dir",
            str(tmp_path / "images"),
        ],
        cwd=PROJECT_ROOT,
        env={**os.environ, "OUT": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    stages = json.loads((tmp_path / "image_stages.json").read_text())["stages"]
    assert set(stages) == {"one", "two"}
    for name, result in stages.items():
        assert result["views"] >= 3
        for stage in (
            "pixels",
            "tower",
            "resampler",
            "resampler_on_reference_features",
        ):
            assert result[stage]["identical"], (name, stage, result[stage])
