"""Print a video's event timeline: the cubes Quicksviewer cuts it into.

Quicksviewer segments every video into cubes (its events) before it answers. A chat
completion with the extra body field ``"return_segments": true`` returns that
segmentation; with ``max_tokens=0`` the server only segments the video and generates
no text (one encode; a video seen before comes from the server's visual cache).
``--question`` asks a question as well and prints the answer after the timeline,
from the same encode.

- ``--video`` may be given up to 4 times (one request; one timeline per video, in
  order);
- ``--json PATH`` writes the segmentation (and the answer) as JSON;
- a failed request ends with ``error: ...`` and exit status 1, not a traceback.

    # a server: the README's command, or the demo's tiny checkpoint on CPU
    .venv/bin/python -m sglang.launch_server --model-path build/demo/quicksviewer-tiny \\
        --device cpu --attention-backend torch_native --mm-attention-backend sdpa \\
        --max-total-tokens 16384
    .venv/bin/python examples/video_timeline.py --video clip.mp4 [--base-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def clock(seconds: float) -> str:
    """0:07.5, 12:03.0, 1:02:03.5"""
    minutes, rest = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    if hours:
        return f"{hours}:{minutes:02d}:{rest:04.1f}"
    return f"{minutes}:{rest:04.1f}"


def timeline(name: str, segments: dict) -> list[str]:
    """The lines printed for one video's segmentation."""
    timestamps, cubes = segments["timestamps"], segments["cubes"]
    lines = [
        f"{name}: {len(timestamps)} frames sampled "
        f"({clock(timestamps[0])} to {clock(timestamps[-1])}), {len(cubes)} events"
    ]
    scores = segments.get("boundary_scores") or [None] * len(timestamps)
    for number, cube in enumerate(cubes, 1):
        first, last = cube["start_frame"], cube["end_frame"] - 1
        count = last - first + 1
        # how sure the cubing network was that an event starts here (frame 0: always)
        score = "" if scores[first] is None else f"  boundary {scores[first]:.2f}"
        lines.append(
            f"  {number:3d}  {clock(cube['start_s']):>9} - {clock(cube['end_s']):<9}"
            f"  frames {first}-{last} ({count} frame{'s' if count > 1 else ''}){score}"
        )
    return lines


def video_part(video: str, fps=None, max_frames=None) -> dict:
    # An example stays one file users can copy (no project imports), so these lines
    # repeat benchmarks/chat_client.py's and the upstream example's video part.
    if os.path.isfile(video):
        video = os.path.abspath(video)  # the server resolves paths on its side
    video_url = {"url": video}
    if fps is not None:
        video_url["fps"] = fps
    if max_frames is not None:
        video_url["max_frames"] = max_frames
    return {"type": "video_url", "video_url": video_url}


def segment(client, videos, question=None, max_tokens=256, fps=None, max_frames=None):
    """(segments, answer) of one chat completion about ``videos``."""
    content = [video_part(v, fps, max_frames) for v in videos]
    content.append({"type": "text", "text": question or "Describe the video."})
    response = client.chat.completions.create(
        model="default",
        messages=[{"role": "user", "content": content}],
        # 0: segmentation only, no text is generated
        max_tokens=max_tokens if question else 0,
        temperature=0,
        extra_body={"return_segments": True},
    )
    segments = (response.model_extra or {}).get("segments")
    if segments is None:
        raise RuntimeError("the server returned no segments (no return_segments?)")
    answer = response.choices[0].message.content if question else None
    return segments, answer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:30000/v1")
    parser.add_argument(
        "--video",
        action="append",
        required=True,
        help="a local path or a URL; repeat for several videos",
    )
    parser.add_argument("--question", default=None, help="also ask this")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument("--fps", type=float, default=None, help="default: 1")
    parser.add_argument("--max-frames", type=int, default=None, help="default: 420")
    parser.add_argument("--json", type=Path, default=None, help="write the result")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    import openai

    client = openai.Client(api_key="EMPTY", base_url=args.base_url)
    try:
        segments, answer = segment(
            client,
            args.video,
            args.question,
            args.max_tokens,
            args.fps,
            args.max_frames,
        )
    except openai.APIConnectionError as exc:
        print(
            f"error: cannot reach the server at {args.base_url}: {exc}", file=sys.stderr
        )
        return 1
    except openai.APIStatusError as exc:
        print(
            f"error: the server answered {exc.status_code}: {exc.message}",
            file=sys.stderr,
        )
        return 1
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for video, video_segments in zip(args.video, segments):
        print("\n".join(timeline(video, video_segments)))
    if answer is not None:
        print(f"\nQUESTION: {args.question}\nANSWER: {answer}")
    if args.json is not None:
        result = {"videos": args.video, "segments": segments, "answer": answer}
        args.json.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
