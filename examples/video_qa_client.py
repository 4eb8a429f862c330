"""Video question answering against a Quicksviewer server, with the OpenAI client.

The client is the series' upstream example,
overlay/examples/runtime/multimodal/quicksviewer_server.py (``make apply`` puts it at
examples/runtime/multimodal/ in SGLang's tree); this wrapper runs it from the
project, with the same arguments, plus:

- ``--video`` defaults to the demo's clip (build/demo/demo.mp4, ``make demo`` writes it);
- ``--json PATH`` writes every turn (answer, streamed chunks, prompt tokens, tokens
  from the cache) as JSON;
- a failed request ends with ``error: ...`` and exit status 1, not a traceback.

    # a server: the README's command, or the demo's tiny checkpoint on CPU
    .venv/bin/python -m sglang.launch_server --model-path build/demo/quicksviewer-tiny \\
        --device cpu --attention-backend torch_native --mm-attention-backend sdpa \\
        --max-total-tokens 16384 --enable-cache-report
    .venv/bin/python examples/video_qa_client.py [--video clip.mp4] [--base-url URL]
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UPSTREAM_EXAMPLE = (
    REPO / "overlay" / "examples" / "runtime" / "multimodal" / "quicksviewer_server.py"
)
DEMO_VIDEO = REPO / "build" / "demo" / "demo.mp4"


def load_upstream_example():
    spec = importlib.util.spec_from_file_location(
        "quicksviewer_server", UPSTREAM_EXAMPLE
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    example = load_upstream_example()
    parser = example.build_parser()
    parser.description = __doc__.split("\n\n")[0]
    parser.epilog = f"Here --video defaults to {DEMO_VIDEO}."
    parser.add_argument("--json", type=Path, default=None, help="write the turns here")
    argv = sys.argv[1:] if argv is None else list(argv)
    if not any(a == "--video" or a.startswith("--video=") for a in argv):
        argv += ["--video", str(DEMO_VIDEO)]
    args = parser.parse_args(argv)

    import openai

    try:
        turns = example.run(args)
    except openai.APIConnectionError as exc:
        print(
            f"\nerror: cannot reach the server at {args.base_url}: {exc}",
            file=sys.stderr,
        )
        return 1
    except openai.APIStatusError as exc:
        print(
            f"\nerror: the server answered {exc.status_code}: {exc.message}",
            file=sys.stderr,
        )
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps(turns, indent=1, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
