"""The original implementation's own figures on one H200, the benchmarks' anchor.

Measured with the original code's ``cli.py`` path (``load_video`` then
``LlavaQwenForCausalLM.chat()``), medians of 2-3 runs after a warm-up, one request
at a time, everything re-run on every turn: ../shared/reference/visual-path-facts.md
section 1 (2026-12-01). Clips: the project's synthetic mp4v clips (tools/media.py).
"""

# time to first token with frame extraction, (low, high) in seconds
TTFT_S = {
    "60 frames": (1.22, 1.29),
    "420 frames, 640x360": (6.65, 7.50),
    "420 frames, 1280x720": (11.5, 13.1),
}
# decode at batch 1 after the 60-frame prompt (35 ms a step)
DECODE_TOK_S = 27.3


def clip_name(seconds: float, width: int, height: int) -> str | None:
    """The measured clip a generated one matches, at the default sampling (1 fps,
    at most 420 frames): 60 s 640x360, 430 s 640x360, 430 s 1280x720."""
    return {
        (60, 640, 360): "60 frames",
        (430, 640, 360): "420 frames, 640x360",
        (430, 1280, 720): "420 frames, 1280x720",
    }.get((seconds, width, height))
