"""
Usage:

python3 -m sglang.launch_server --model-path /models/quicksviewer-sglang --dtype bfloat16 --enable-cache-report

python3 quicksviewer_server.py --video /data/clip.mp4

Video question answering with Quicksviewer through the OpenAI-compatible API: one
question about a local video, streamed, then a follow-up question about the same
video in the same conversation. The follow-up request sends the whole conversation
again, video included; the server recognizes the video (the same file gives the
same frames and visual tokens), so the prompt prefix, video included, comes from
the radix cache (printed as "from the cache" with --enable-cache-report).

The model path is a checkpoint in SGLang's format (model_type "quicksviewer").
A local path must be readable by the server (SGLANG_QSV_ALLOWED_LOCAL_MEDIA_PATH,
when set, lists the directories it may read).
"""

import argparse
import os
import sys

import openai


def create_openai_client(base_url):
    return openai.Client(api_key="EMPTY", base_url=base_url)


def video_message(video, question, fps=None, max_frames=None):
    """A user message with a video_url part, then the question."""
    if os.path.isfile(video):
        video = os.path.abspath(video)  # the server resolves paths on its side
    video_url = {"url": video}
    if fps is not None:
        video_url["fps"] = fps
    if max_frames is not None:
        video_url["max_frames"] = max_frames
    return {
        "role": "user",
        "content": [
            {"type": "video_url", "video_url": video_url},
            {"type": "text", "text": question},
        ],
    }


def stream_chat(client, messages, max_tokens, temperature=None, extra_body=None):
    """Send the conversation, print the answer as it streams; return the answer
    with its token counts."""
    kwargs = {} if temperature is None else {"temperature": temperature}
    stream = client.chat.completions.create(
        model="default",
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
        extra_body=extra_body,
        **kwargs,
    )
    text, chunks, usage = "", 0, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        if chunk.choices and chunk.choices[0].delta.content:
            content = chunk.choices[0].delta.content
            text += content
            chunks += 1
            sys.stdout.write(content)
            sys.stdout.flush()
    print()
    details = getattr(usage, "prompt_tokens_details", None)
    return {
        "text": text,
        "chunks": chunks,
        "prompt_tokens": usage.prompt_tokens if usage else None,
        "completion_tokens": usage.completion_tokens if usage else None,
        "cached_tokens": getattr(details, "cached_tokens", None) or 0,
    }


def video_qa(client, video, questions, max_tokens=256, temperature=None, **video_kw):
    """Ask ``questions`` about ``video`` in one conversation: the video goes with the
    first question, every later question is a follow-up turn."""
    messages, turns = [], []
    for number, question in enumerate(questions):
        if number == 0:
            messages.append(video_message(video, question, **video_kw))
        else:
            messages.append({"role": "user", "content": question})
        print(f"USER: {question}")
        print("ASSISTANT: ", end="", flush=True)
        turn = stream_chat(client, messages, max_tokens, temperature)
        print(
            f"({turn['prompt_tokens']} prompt tokens, {turn['cached_tokens']} of "
            f"them from the cache; {turn['completion_tokens']} new tokens)"
        )
        messages.append({"role": "assistant", "content": turn["text"]})
        turns.append(turn)
    return turns


def build_parser():
    parser = argparse.ArgumentParser(description="Video QA with Quicksviewer")
    parser.add_argument("--base-url", default="http://127.0.0.1:30000/v1")
    parser.add_argument("--video", required=True, help="a local path or a URL")
    parser.add_argument("--question", default="What is happening in the video?")
    parser.add_argument("--follow-up", default="What happens at the end of the video?")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--temperature",
        type=float,
        default=None,
        help="default: the checkpoint's generation_config.json",
    )
    parser.add_argument("--fps", type=float, default=None, help="default: 1")
    parser.add_argument("--max-frames", type=int, default=None, help="default: 420")
    return parser


def run(args):
    client = create_openai_client(args.base_url)
    questions = [args.question] + ([args.follow_up] if args.follow_up else [])
    return video_qa(
        client,
        args.video,
        questions,
        max_tokens=args.max_tokens,
        temperature=args.temperature,
        fps=args.fps,
        max_frames=args.max_frames,
    )


def main():
    run(build_parser().parse_args())


if __name__ == "__main__":
    main()
