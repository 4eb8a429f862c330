"""qsv_reference against facts derived by hand from the original code (not by calling
the code under test): frame sampling, prompt layout, token counts, anyres tiling,
cube selection with ties, placeholder merging, pixel preprocessing."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from qsv_reference import preprocess as pre
from qsv_reference.checkpoint import CheckpointError
from qsv_reference.model import (
    QuicksviewerReference,
    Resampler3D,
    cube_boundaries,
    select_topk,
    sincos_3d_table,
    thumbnail_features,
)
from qsv_reference.video import VideoReadError, extract_frames
from tools.checkpoints.tiny import make_tiny_checkpoint
from tools.media import STANDARD_VIDEOS, standard_video, write_video

SENTINEL = -200
QUESTION = "What is happening in the video?"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("ref") / "quicksviewer-tiny", 0)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("videos")
    for name in STANDARD_VIDEOS:
        standard_video(directory, name)
    return directory


@pytest.fixture(scope="module")
def models(ckpt):
    return {
        "fp32": QuicksviewerReference(ckpt, dtype=torch.float32),
        "bf16": QuicksviewerReference(ckpt, dtype=torch.bfloat16),
    }


@pytest.fixture(scope="module")
def runs(models, video_dir):
    """(video name, dtype) -> VideoRun, computed once."""
    cache = {}

    def get(name, dtype):
        if (name, dtype) not in cache:
            path = video_dir / f"{name}.mp4"
            cache[name, dtype] = models[dtype].run_video(path, QUESTION, 16)
        return cache[name, dtype]

    return get


def _expected_sampling(source_fps, frame_count, max_frames=420):
    """opencv_extract_frames_fps(num_frames=420, fps=1), re-derived by hand."""
    candidates = [
        int(i + source_fps / 2)
        for i in range(0, int(frame_count - 1) + 1, round(source_fps))
    ]
    if len(candidates) > max_frames:
        gap = len(candidates) / max_frames
        keep = sorted({int(k * gap + gap / 2) for k in range(max_frames)})
        candidates = [candidates[k] for k in keep]
    indices = [i for i in candidates if i < frame_count]
    return indices, [round(i / source_fps, 1) for i in indices]


@pytest.mark.parametrize("name", list(STANDARD_VIDEOS))
def test_frame_sampling(video_dir, name):
    import cv2

    path = video_dir / f"{name}.mp4"
    capture = cv2.VideoCapture(str(path))
    source_fps = capture.get(cv2.CAP_PROP_FPS)
    frame_count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    capture.release()
    indices, timestamps = _expected_sampling(source_fps, frame_count)
    frames = extract_frames(path)
    assert frames.indices == indices
    assert frames.timestamps == timestamps
    seconds, fps, width, height = STANDARD_VIDEOS[name]
    assert frames.frames[0].shape == (height, width, 3)
    if name == "12s_30fps":
        assert indices == list(range(15, 360, 30))
        assert timestamps == [k + 0.5 for k in range(12)]
    if name == "500s_4fps":
        assert len(indices) == 420 and timestamps[:4] == [0.5, 1.5, 2.5, 4.5]
    if name == "20s_29.97fps":
        assert indices[:3] == [14, 44, 74] and timestamps[:3] == [0.5, 1.5, 2.5]


def test_frames_are_the_decoded_rgb_frames(video_dir):
    import cv2

    path = video_dir / "12s_30fps.mp4"
    capture = cv2.VideoCapture(str(path))
    decoded = []
    ok, frame = capture.read()
    while ok:
        decoded.append(frame)
        ok, frame = capture.read()
    capture.release()
    frames = extract_frames(path)
    for index, frame in zip(frames.indices, frames.frames):
        assert np.array_equal(frame, cv2.cvtColor(decoded[index], cv2.COLOR_BGR2RGB))


def test_unreadable_video(tmp_path):
    with pytest.raises(VideoReadError):
        extract_frames(tmp_path / "missing.mp4")


def test_pixels_are_the_slow_siglip_processor(models, video_dir):
    """PIL bicubic 384x384, x/255 in float64 -> float32, (x - 0.5) / 0.5; then the
    CLI's fp16 rounding and the tower dtype."""
    frame = extract_frames(video_dir / "12s_30fps.mp4").frames[3]
    resized = np.asarray(Image.fromarray(frame).resize((384, 384), Image.BICUBIC))
    scaled = (resized.astype(np.float64) * (1 / 255)).astype(np.float32)
    expected = torch.from_numpy(((scaled - 0.5) / 0.5).transpose(2, 0, 1).copy())
    raw = pre.pixels_of([frame], models["fp32"].image_processor)[0]
    assert torch.equal(raw, expected)
    bf16 = models["bf16"].pixels([frame])[0]
    assert torch.equal(bf16, expected.half().to(torch.bfloat16))


@pytest.mark.parametrize(
    "name, dtype, frames, blocks",
    [
        ("12s_30fps", "fp32", 12, 3),
        ("12s_30fps", "bf16", 12, 3),
        ("75s_10fps", "fp32", 75, 16),
        ("20s_29.97fps", "bf16", 20, 5),
    ],
)
def test_visual_token_count(runs, name, dtype, frames, blocks):
    run = runs(name, dtype)
    cubes = max(round(frames / 5) - 1, 1) + 1
    assert len(run.frames.frames) == frames and cubes + 1 == blocks
    assert len(run.cube_bounds) == cubes
    assert run.cube_bounds[0][0] == 0 and run.cube_bounds[-1][1] == frames
    assert all(a[1] == b[0] for a, b in zip(run.cube_bounds, run.cube_bounds[1:]))
    assert tuple(run.encoding.features.shape) == (blocks, 64, 128)
    assert run.merged_input_ids.count(SENTINEL) == blocks
    assert run.input_ids.count(SENTINEL) == frames + 1
    assert run.expanded_input_ids.count(SENTINEL) == 64 * blocks
    assert run.encoding.features.dtype == (
        torch.float32 if dtype == "fp32" else torch.bfloat16
    )
    assert torch.isfinite(run.encoding.features.float()).all()


def test_420_frame_cap_and_pos_table_growth(models, video_dir):
    model = models["fp32"]
    run = model.run_video(video_dir / "500s_4fps.mp4", QUESTION, 2)
    assert len(run.frames.frames) == 420
    assert len(run.cube_bounds) == 84 and run.merged_input_ids.count(SENTINEL) == 85
    assert model.resampler.pos_embed.shape[0] == 420


def test_cube_boundaries_are_stable_and_untied(runs):
    """The tiny checkpoint spreads P(boundary): no tie at the top-k cut, and fp32 and
    bf16 agree on the cubes for the test videos."""
    cases = [("12s_30fps", "fp32"), ("12s_30fps", "bf16"), ("75s_10fps", "fp32")]
    cases += [("20s_29.97fps", "fp32"), ("20s_29.97fps", "bf16")]
    for name, dtype in cases:
        probs = runs(name, dtype).encoding.cubes.probs.float()
        k = max(round((len(probs) + 1) / 5) - 1, 1)
        ordered = torch.sort(probs, descending=True).values
        assert ordered[k - 1] > ordered[k], (name, dtype)
    for name in ("12s_30fps", "20s_29.97fps"):
        assert runs(name, "fp32").cube_bounds == runs(name, "bf16").cube_bounds


def test_prompt_layout_token_by_token(runs, models):
    run = runs("12s_30fps", "fp32")
    t = models["fp32"].tokenizer
    ids = t.convert_tokens_to_ids
    # Qwen ranks: "user" 872, "assistant" 77091, "\n" 198, "." 13, digits 15..24
    head = [ids("<|im_start|>"), 872, 198, ids("<video_start>")]
    tail = [ids("<video_end>"), 198] + t(QUESTION).input_ids
    tail += [ids("<|im_end|>"), 198, ids("<|im_start|>"), 77091, 198]

    def stamp(seconds: float) -> list[int]:
        return [13 if c == "." else 15 + int(c) for c in str(seconds)]

    before = head + [ids("<thumbnail_start>"), SENTINEL, ids("<thumbnail_end>")]
    for second in range(12):
        before += stamp(second + 0.5) + [SENTINEL]
    assert run.input_ids == before + tail
    assert run.prompt == (
        "<|im_start|>user\n<video_start><thumbnail_start><image><thumbnail_end>"
        + "".join(f"{s + 0.5}<image>" for s in range(12))
        + f"<video_end>\n{QUESTION}<|im_end|>\n<|im_start|>assistant\n"
    )
    after = head + [ids("<thumbnail_start>"), SENTINEL, ids("<thumbnail_end>")]
    for start, _ in run.cube_bounds:
        after += stamp(start + 0.5) + [SENTINEL]
    assert run.merged_input_ids == after + tail

    # Chunk-wise tokenization (the original) equals whole-string tokenization.
    whole = t(run.prompt.replace("<image>", "<|image_pad|>")).input_ids
    pad = ids("<|image_pad|>")
    assert whole == [pad if i == SENTINEL else i for i in run.input_ids]


def test_merge_placeholders_by_hand():
    a, b, c, t0, t1, t2, pad = 1, 2, 3, 10, 11, 12, 99
    ids = [a, SENTINEL, b, t0, SENTINEL, t1, SENTINEL, t2, SENTINEL, c]
    videos_bound = [(0, 4)]
    cubes = [[(0, 1), (1, 3), (3, 4)]]  # thumbnail, frames {0, 1}, frame {2}
    merged = pre.merge_cube_placeholders(ids, videos_bound, cubes, pad)
    assert merged == [a, SENTINEL, b, t0, SENTINEL, t2, SENTINEL, c]
    with_pad = ids[:5] + [pad] + ids[5:]
    assert pre.merge_cube_placeholders(with_pad, videos_bound, cubes, pad) == [
        a,
        SENTINEL,
        b,
        t0,
        SENTINEL,
    ]
    images_only = [a, SENTINEL, b, SENTINEL, c]
    assert pre.merge_cube_placeholders(images_only, [], [], pad) == images_only
    assert pre.expand_placeholders([a, SENTINEL, c], 3) == [a] + [SENTINEL] * 3 + [c]


def test_cube_selection_with_ties_by_hand():
    # N = 15 frames -> k = max(round(3) - 1, 1) = 2 boundaries besides frame 0.
    d = torch.zeros(14)
    d[[3, 8, 10]] = 2.0  # a three-way tie for two slots: the lowest positions win
    logits = torch.stack([torch.zeros(14), d], dim=1)
    cubes = cube_boundaries(logits)
    assert cubes.selected == [3, 8]
    assert cubes.bounds == [(0, 4), (4, 9), (9, 15)]
    assert cubes.z_hard[0] == 1 and cubes.z_hard[[1, 2, 3, 5, 11]].abs().sum() == 0
    expected = 1 / (1 + math.exp(-4.0))  # softmax([0, 2] / 0.5)[1]
    assert cubes.probs[3].item() == pytest.approx(expected, rel=1e-6)

    # Values distinct in fp32 that round to one bf16 value tie in bf16.
    # sigmoid(6) = 0.99753 and sigmoid(6.125) = 0.99781 both round to 1 - 2**-8.
    d = torch.zeros(14)
    d[5], d[2] = 3.0625, 3.0  # both exact in bf16
    logits = torch.stack([torch.zeros(14), d], dim=1)
    assert cube_boundaries(logits).selected == [5, 2]
    bf16 = cube_boundaries(logits.to(torch.bfloat16))
    assert bf16.probs[2] == bf16.probs[5] == 1 - 2**-8
    assert bf16.selected == [2, 5]
    assert select_topk(torch.ones(10), 3).tolist() == [0, 1, 2]


def test_thumbnail_is_the_pooled_mean_of_cube_starts(models):
    head = models["fp32"].cubing
    video = torch.randn(6, 576, 64, generator=torch.Generator().manual_seed(0))
    z_hard = torch.tensor([1.0, 0, 0, 1, 0, 1])
    out = thumbnail_features(video, z_hard, head)
    mean = video[[0, 3, 5]].mean(dim=0)
    pooled = mean.view(64, 9, 64).mean(dim=1)  # 9 consecutive tokens per output row
    expected = head.thumbnail_fn[1](pooled).unsqueeze(0)
    assert torch.allclose(out, expected, atol=1e-5)


def test_sincos_table_by_hand():
    table = sincos_3d_table(128, [7, 24, 24])  # 32 time, 48 row, 48 column channels
    t, row, col = 5, 3, 11
    assert table[t, row, col, 0].item() == pytest.approx(math.sin(t))
    assert table[t, row, col, 16].item() == pytest.approx(math.cos(t))
    omega = 1 / 10000 ** (1 / 24)
    assert table[t, row, col, 32 + 1].item() == pytest.approx(math.sin(row * omega))
    assert table[t, row, col, 80 + 24].item() == pytest.approx(math.cos(col))

    resampler = Resampler3D(128, 64, 64, 2, [4, 24, 24])
    prefix = resampler.pos_embed.clone()
    with torch.no_grad():
        out = resampler(torch.randn(1, 3 * 576, 64), [[3, 6], [0, 24], [0, 24]])
    assert out.shape == (1, 64, 128) and resampler.pos_embed.shape[0] == 6
    assert torch.equal(resampler.pos_embed[:4], prefix)


@pytest.mark.parametrize(
    "size, best, views",
    [
        ((640, 480), (448, 448), 5),
        ((300, 900), (224, 672), 3),
        ((1000, 250), (896, 224), 4),
        ((100, 100), (224, 448), 3),
    ],
)
def test_anyres_tiling(models, size, best, views):
    config = models["fp32"].config
    pinpoints = pre.parse_grid_pinpoints(config["image_grid_pinpoints"])
    assert pre.select_best_resolution(size, pinpoints) == best
    image = Image.new("RGB", size, (200, 100, 50))
    tiles = pre.anyres_views(image, models["fp32"].image_processor, pinpoints)
    assert len(tiles) == views and all(tile.size == (384, 384) for tile in tiles)
    if best == (448, 448):  # the top-right tile overhangs the 448 px canvas: black
        right = np.asarray(tiles[2])
        assert right[:, 448 - 384 :].max() == 0 and right[:, : 448 - 384].max() > 0


def test_image_question(models):
    model = models["fp32"]
    image = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    )
    run = model.run_images([image], "Describe the image.", 4)
    assert run.views_per_image == [5]
    assert tuple(run.features.shape) == (5, 64, 128)
    t = model.tokenizer
    ids = t.convert_tokens_to_ids
    block = [ids("<patch_start>"), SENTINEL, ids("<patch_end>")]
    expected = [ids("<|im_start|>"), 872, 198, ids("<im_start>")] + block * 5
    expected += [ids("<im_end>"), 198] + t("Describe the image.").input_ids
    expected += [ids("<|im_end|>"), 198, ids("<|im_start|>"), 77091, 198]
    assert run.input_ids == expected
    assert len(run.tokens) == 4


def test_generation_is_deterministic_and_varied(runs, models, video_dir):
    first = runs("12s_30fps", "fp32")
    assert len(set(first.tokens)) >= 4
    again = models["fp32"].run_video(first.frames, QUESTION, 16)
    assert again.tokens == first.tokens
    assert torch.equal(again.generation.first_logits, first.generation.first_logits)
    assert len(set(runs("12s_30fps", "bf16").tokens)) >= 4


def test_one_frame_video_is_refused(models, tmp_path):
    path = write_video(tmp_path / "one.mp4", 1, 10.0, 32, 24)
    frames = extract_frames(path)
    assert len(frames.frames) == 1
    with pytest.raises(ValueError, match="at least 2 frames"):
        models["fp32"].run_video(frames, QUESTION, 1)


def test_missing_vision_tower(tmp_path, ckpt):
    import os
    import shutil

    src = tmp_path / "ckpt"
    shutil.copytree(
        ckpt, src, ignore=shutil.ignore_patterns("siglip-tiny"), copy_function=os.link
    )
    with pytest.raises(CheckpointError, match="pass vision_tower="):
        QuicksviewerReference(src, dtype=torch.float32)
    model = QuicksviewerReference(
        src, dtype=torch.float32, vision_tower=ckpt / "siglip-tiny"
    )
    assert model.tower_dir == ckpt / "siglip-tiny"


def test_cli_prints_a_json_summary(ckpt, video_dir, runs, capsys):
    from qsv_reference.__main__ import main

    argv = ["--model", str(ckpt), "--video", str(video_dir / "12s_30fps.mp4")]
    argv += ["--question", QUESTION, "--dtype", "fp32", "--max-new-tokens", "4"]
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out)
    run = runs("12s_30fps", "fp32")
    assert summary["tokens"] == run.tokens[:4]
    assert summary["cube_bounds"] == [list(b) for b in run.cube_bounds]
    assert summary["frame_indices"] == run.frames.indices
    assert summary["visual_blocks"] == 3
    assert summary["prompt_tokens"] == len(run.expanded_input_ids)


def test_cli_reports_errors_without_traceback(ckpt, tmp_path, capsys):
    from qsv_reference.__main__ import main

    argv = ["--model", str(ckpt), "--video", str(tmp_path / "missing.mp4")]
    assert main(argv + ["--question", "q", "--dtype", "fp32"]) == 2
    assert capsys.readouterr().err.startswith("error: OpenCV cannot open")


ORIGINAL_FILES = (
    "quicksviewer/constants.py",
    "quicksviewer/conversation.py",
    "quicksviewer/data/preprocess.py",
    "quicksviewer/utils/mm_utils.py",
    "quicksviewer/utils/data_util.py",
    "quicksviewer/model/multimodal_resampler/resampler_3d.py",
    "quicksviewer/model/multimodal_cubing/cubing_momentum.py",
    "quicksviewer/model/llava_arch.py",
)


@pytest.fixture
def original_code(tmp_path, monkeypatch):
    """The original modules, imported from a git dir given by QSV_ORIGINAL_REPO.

    Only CPU-side stubs: no sequence parallelism, ``Tensor.cuda`` is the identity
    (``sample_gumbel`` moves its zero-weighted noise to the GPU)."""
    import ast
    import os

    repo = os.environ.get("QSV_ORIGINAL_REPO")
    if not repo:
        pytest.skip("set QSV_ORIGINAL_REPO to the original repository's git dir")
    root = tmp_path / "original"
    for name in ORIGINAL_FILES + ("quicksviewer/train/sequence_parallel/__init__.py",):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        for parent in path.relative_to(root).parents:
            (root / parent / "__init__.py").touch()
    for name in ORIGINAL_FILES:
        show = subprocess.run(
            ["git", f"--git-dir={repo}", "show", f"HEAD:{name}"],
            capture_output=True,
            check=True,
        )
        (root / name).write_bytes(show.stdout)
    (root / "quicksviewer/train/sequence_parallel/__init__.py").write_text(
        "def get_pg_manager():\n    return None\n"
    )
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(torch.Tensor, "cuda", lambda self, *a, **k: self)
    for module in [m for m in sys.modules if m.startswith("quicksviewer")]:
        monkeypatch.delitem(sys.modules, module)
    source = (root / "quicksviewer/model/llava_arch.py").read_text()
    merge = next(
        node
        for node in ast.parse(source).body
        if getattr(node, "name", "") == "update_placeholders_by_cube"
    )
    namespace = {"torch": torch, "IGNORE_INDEX": -100, "get_pg_manager": lambda: None}
    exec(compile(ast.Module([merge], []), "llava_arch.py", "exec"), namespace)
    return namespace["update_placeholders_by_cube"]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_matches_the_original_code(original_code, models, video_dir, dtype):
    """Opt-in: the original functions and modules (with our SigLIP as their tower)
    give the same frames, ids, pixels, cubes and features, bit for bit; only the
    thumbnail differs, by the CPU division the reference replaces with CUDA's
    reciprocal multiplication."""
    from types import SimpleNamespace

    from quicksviewer import conversation
    from quicksviewer.data import preprocess as original_pre
    from quicksviewer.model.multimodal_cubing.cubing_momentum import Cubing
    from quicksviewer.model.multimodal_resampler.resampler_3d import Resampler
    from quicksviewer.utils import mm_utils
    from quicksviewer.utils.data_util import opencv_extract_frames_fps

    model = models[dtype]
    config = SimpleNamespace(**model.config, is_multimodal=True)
    conversation.default_conversation = conversation.conv_templates["qwen2"]
    pad = model.config["pad_token_id"]
    for name in ("12s_30fps", "20s_29.97fps"):
        path = video_dir / f"{name}.mp4"
        frames, stamps = opencv_extract_frames_fps(str(path), 420, 1, to_pilimg=False)
        run = model.run_video(path, QUESTION, 2)
        assert stamps == run.frames.timestamps
        assert all(np.array_equal(a, b) for a, b in zip(frames, run.frames.frames))
        messages = [
            {"from": "human", "value": f"<image>\n{QUESTION}"},
            {"from": "gpt", "value": ""},
        ]
        conv = original_pre.preprocess_multimodal_video(
            [messages], config, len(stamps), stamps, True, True
        )
        ids = original_pre.preprocess(conv, model.tokenizer, True, build_labels=False)
        assert ids["input_ids"][0].tolist() == run.input_ids
        pil = [Image.fromarray(f) for f in frames]
        pixels = mm_utils.process_images(pil, model.image_processor, config, "original")
        pixels = pixels.view(-1, 3, 384, 384).half().to(model.dtype)
        assert torch.equal(pixels, run.pixels)

        args = SimpleNamespace(num_queries=64, num_heads=2, max_size=[300, 24, 24])
        resampler = Resampler(
            args, mm_resampler_embeddim=128, mm_resampler_visiondim=64
        )
        resampler.load_state_dict(model.resampler.state_dict())
        cubing = Cubing("momentum", 64, 576, lm_dim=128)
        cubing.load_state_dict(model.cubing.state_dict())
        resampler.to(model.dtype).eval()
        cubing.to(model.dtype).eval()
        with torch.no_grad():
            feats, videos_bound, cube_bound, _ = cubing(
                lambda images, n=-1: model.vision(images),
                resampler,
                pixels,
                (24, 24),
                [[0, len(frames)]],
                0.5,
                5,
                0.0,
            )
        shifted = [(s + 1, e + 1) for s, e in run.cube_bounds]
        assert cube_bound == [[(0, 1)] + shifted]
        assert torch.equal(feats[1:], run.encoding.features[1:])
        thumb = run.encoding.features[0].float()
        assert torch.allclose(feats[0].float(), thumb, rtol=1e-2, atol=1e-5)
        tensor = torch.tensor([run.input_ids])
        merged = original_code(
            cube_bound, videos_bound, tensor, tensor.ne(pad), tensor.clone(), PADID=pad
        )[0]
        assert merged[0].tolist() == run.merged_input_ids
