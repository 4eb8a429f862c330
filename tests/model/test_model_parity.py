"""Parity of Quicksviewer in SGLang with the reference implementation.

Same tiny checkpoint (original format for the reference, converted for SGLang),
same mp4 files decoded for real, CPU, fp32 and bf16:

* the processor's frames, timestamps and pixels equal the reference's;
* SGLang's visual encoder picks the same cube boundaries and gives the same
  visual embeddings (fp32: to float rounding; bf16: to bf16 tolerance);
* through the real Engine, the final prompt ids (after cubing) are identical,
  the first-token log-probabilities agree and the greedy tokens are identical
  for 16 tokens.
"""

import math

import pytest
import torch

from qsv_reference.constants import IMAGE_TOKEN_INDEX
from qsv_reference.model import num_boundaries
from tests.helpers.model_fixtures import (
    as_reported,
    chatml_prompt,
    reported_input_ids,
    run_script,
)
from tools.media import STANDARD_VIDEOS

VIDEOS = sorted(STANDARD_VIDEOS)
NEW_TOKENS = 16
# Max |SGLang - reference| of the visual embeddings, relative to max |reference|.
# fp32 differs only by kernel rounding; bf16 by a few bf16 ulps (2^-8 = 0.004).
EMBEDDING_TOLERANCE = {"fp32": 1e-4, "bf16": 3e-2}
# Boundary scores (probabilities): equal in fp32 (measured on the 5 videos); in
# bf16 the tower's rounding moves them by up to 4 bf16 ulps of 0.5 (0.0156 measured)
SCORE_TOLERANCE = {"fp32": 0.0, "bf16": 2**-5}
# First-token log-probabilities (SGLang's top 5) may differ by this many units in
# the last place of the reference logit: fp32 kernels round differently, bf16
# logits are quantised to 2^-8 of their size on both sides.
LOGPROB_ULPS = {"fp32": 2**12, "bf16": 4}
MANTISSA_BITS = {"fp32": 23, "bf16": 7}


def ulp(value: float, dtype: str) -> float:
    return 2.0 ** (math.floor(math.log2(max(abs(value), 1.0))) - MANTISSA_BITS[dtype])


@pytest.fixture(scope="module")
def encoder_outputs(checkpoints, videos, tmp_path_factory):
    """SGLang processor + encoder results per dtype, from one subprocess each."""
    results = {}
    for dtype in ("fp32", "bf16"):
        out = tmp_path_factory.mktemp("encoder") / f"{dtype}.pt"
        paths = [videos[name] for name in VIDEOS]
        run_script(
            "sglang_encoder.py", checkpoints.converted(dtype), dtype, out, *paths
        )
        runs = torch.load(out, weights_only=False)
        results[dtype] = {name: run for name, run in zip(VIDEOS, runs)}
    return results


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("video", VIDEOS)
def test_processor_matches_reference(dtype, video, encoder_outputs, references, videos):
    ours = encoder_outputs[dtype][video]
    ref = references.video(dtype, videos[video])
    # the original's chunks between two frames (tokenizer_image_token): the
    # timestamp of frame k >= 1; frame 0's shares the chunk after the thumbnail
    chunks, current = [], []
    for token in ref.input_ids:
        if token == IMAGE_TOKEN_INDEX:
            chunks.append(current)
            current = []
        else:
            current.append(token)
    frames = len(ref.frames.timestamps)
    assert ours["timestamp_token_ids"] == [[]] + chunks[2 : frames + 1]
    tokenizer = references.model(dtype).tokenizer
    for ids, t in zip(ours["timestamp_token_ids"][1:], ref.frames.timestamps[1:]):
        assert ids == tokenizer.encode(str(t), add_special_tokens=False)
    # the original rounds pixels to fp16, then casts to the model dtype
    assert torch.equal(ours["pixels"].to(ref.pixels.dtype), ref.pixels)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("video", VIDEOS)
def test_encoder_matches_reference(dtype, video, encoder_outputs, references, videos):
    ours = encoder_outputs[dtype][video]
    ref = references.video(dtype, videos[video])
    assert ours["starts"] == [start for start, _ in ref.cube_bounds]
    # the boundary scores reported with the segments: the reference's probs
    probs = ref.encoding.cubes.probs.float()
    assert len(ours["scores"]) == len(probs) == len(ref.frames.timestamps) - 1
    score_error = (torch.tensor(ours["scores"]) - probs).abs().max()
    assert score_error <= SCORE_TOLERANCE[dtype], f"score error {score_error:.2e}"
    expected = ref.encoding.features.float()
    assert ours["embeddings"].shape == expected.shape
    error = (ours["embeddings"] - expected).abs().max() / expected.abs().max()
    assert error <= EMBEDDING_TOLERANCE[dtype], f"relative error {error:.2e}"


# dtype nearest the function: the fp32 cases run in a row, then the bf16 ones, so
# the one engine of engine_slot starts twice, not once per case
@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_engine_matches_reference(dtype, video, engines, references, videos):
    ref = references.video(dtype, videos[video])
    engine = engines(dtype)
    out = engine.generate(
        prompt=chatml_prompt("<video>\n"),
        video_data=[str(videos[video])],
        sampling_params={"temperature": 0, "max_new_tokens": NEW_TOKENS},
        return_logprob=True,
        logprob_start_len=0,
        top_logprobs_num=5,
    )
    vocab_size = len(references.model(dtype).tokenizer)
    expected_ids = as_reported(ref.expanded_input_ids, vocab_size)
    assert reported_input_ids(out["meta_info"]) == expected_ids
    check_greedy_tokens(out, ref.generation, dtype)

    logits = ref.generation.first_logits
    reference_logprobs = torch.log_softmax(logits, dim=-1)
    for logprob, token, _ in out["meta_info"]["output_top_logprobs"][0]:
        expected = reference_logprobs[token].item()
        tolerance = LOGPROB_ULPS[dtype] * ulp(logits.abs().max().item(), dtype)
        assert abs(logprob - expected) <= tolerance, (token, logprob, expected)


def check_greedy_tokens(out: dict, generation, dtype: str) -> None:
    """fp32: the reference's 16 greedy tokens exactly. bf16: the same, except that
    the two may part at a step where the reference's best two logits lie within the
    bf16 tolerance of each other (a tie to bf16 rounding, which differs between CPUs'
    kernels: CI's host once took the runner-up at step 5); at that step SGLang's own
    top-5 must hold the reference's token within the same tolerance of its choice.
    After it the contexts differ, so nothing further is compared."""
    tokens, expected = out["output_ids"], generation.tokens[:NEW_TOKENS]
    assert len(expected) == NEW_TOKENS
    if dtype == "fp32" or tokens == expected:
        assert tokens == expected
        return
    step = next((i for i, (a, b) in enumerate(zip(tokens, expected)) if a != b), None)
    assert step is not None, (tokens, expected)
    tolerance = LOGPROB_ULPS[dtype] * ulp(generation.scales[step], dtype)
    assert generation.margins[step] <= tolerance, (
        f"step {step}: SGLang took {tokens[step]}, the reference {expected[step]} "
        f"by a logit margin of {generation.margins[step]:.4f} > {tolerance:.4f}"
    )
    top = {
        token: logprob
        for logprob, token, _ in out["meta_info"]["output_top_logprobs"][step]
    }
    assert expected[step] in top, (step, expected[step], top)
    assert top[tokens[step]] - top[expected[step]] <= tolerance, (step, top)


def test_chunked_prefill_mixed_with_decode_matches_reference(
    engines, references, videos
):
    """The video's prompt prefilled in chunks of 32 tokens, each chunk batched with
    another request's decode steps (``--enable-mixed-chunk``, the setting that keeps
    other streams moving during a long video's prefill): general_mm_embed_routine
    slices the visual embeddings per chunk, so the prompt ids and the greedy tokens
    are still the reference's."""
    video = "12s_30fps"
    ref = references.video("fp32", videos[video])
    engine = engines("fp32", chunked_prefill_size=32, enable_mixed_chunk=True)
    text, out = engine.generate(
        prompt=[chatml_prompt("", "Count to twenty."), chatml_prompt("<video>\n")],
        video_data=[None, [str(videos[video])]],
        sampling_params=[
            {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True},
            {"temperature": 0, "max_new_tokens": NEW_TOKENS},
        ],
        return_logprob=True,
        logprob_start_len=0,
    )
    vocab_size = len(references.model("fp32").tokenizer)
    assert len(ref.expanded_input_ids) > 4 * 32
    assert reported_input_ids(out["meta_info"]) == as_reported(
        ref.expanded_input_ids, vocab_size
    )
    assert out["output_ids"] == ref.tokens[:NEW_TOKENS]
    assert len(text["output_ids"]) == 24


def test_visual_token_count_follows_the_cube_formula(encoder_outputs):
    """64 x (cubes + thumbnail), cubes = max(round(N/5) - 1, 1) + 1 (the reference's
    num_boundaries, plus the cube at frame 0)."""
    for video, run in encoder_outputs["fp32"].items():
        frames = len(run["timestamp_token_ids"])
        cubes = num_boundaries(frames) + 1
        assert len(run["starts"]) == cubes
        assert run["embeddings"].shape[:2] == (cubes + 1, 64)
        runs = run["offsets"]
        assert sum(end - start + 1 for start, end in runs) == 64 * (cubes + 1)
