"""Video-MME through the server: the original's evaluation, sent over HTTP.

    python benchmarks/videomme.py --url http://127.0.0.1:30000 \\
        --parquet Video-MME/videomme/test-00000-of-00001.parquet \\
        --videos Video-MME/video_mme_video/ --max-frames 420 --fps 1 \\
        --concurrency 8 --log videomme.json

This reproduces ``bash quicksviewer/eval/run_eval.sh videomme <checkpoint> 420 1``
of the original repository (github.com/quicksviewer/quicksviewer, files cited as
``eval_video_mme.py:N``, ``utils.py:N`` and ``llava_qwen.py:N`` below) against a
running SGLang server:

* the question and options are laid out exactly as ``MyDataset.__getitem__`` does,
  the video first, then that text (one user turn, no system prompt);
* frames: ``--max-frames`` / ``--fps`` go in the ``video_url`` part, sampled like
  the original's ``opencv_extract_frames_fps(path, video_nframes, video_fps)``;
* generation: like ``model.chat()``, no sampling parameter is sent, so the server
  applies the checkpoint's generation_config.json, and at most 2048 new tokens
  (``--greedy`` for reproducible greedy answers);
* the answer letter is ``extract_characters_regex`` (utils.py), the accuracy is
  ``calculate_metrics`` (overall, short / medium / long), plus the task type, the
  domain and the sub-category where the parquet has them.

Questions of one video are asked one after another (the second and third reuse the
server's frame, visual and prefix caches), ``--concurrency`` videos at a time. The
log (``--log``, one JSON document: config, summary, one record per question) is
rewritten atomically at most once a second and on exit; running the same command
again skips the questions it answered and asks again those that failed.
``--rescore LOG`` prints the summary of a log without a server.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import signal
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # first: this repository's benchmarks/

from benchmarks.chat_client import chat_stream, served_model, user_turn  # noqa: E402

# eval_video_mme.py:40 (no space after "answer.": the original's text)
INSTRUCTION = (
    "Carefully read the following question and select the letter corresponding to "
    "the correct answer.Highlight the applicable choices without giving "
    "explanations.\n"
)
# utils.py:7-17 as Python evaluates that list: two missing commas glue
# "The best option is" to "The correct option is" and "Best answer:" to
# "Best option:", so neither of the four is removed on its own
ANSWER_PREFIXES = (
    "The best answer is",
    "The correct answer is",
    "The answer is",
    "The answer",
    "The best option isThe correct option is",
    "Best answer:Best option:",
    "Answer:",
)
DURATIONS = ("short", "medium", "long")  # eval_video_mme.py:143
REQUIRED_COLUMNS = ("videoID", "question_id", "question", "options", "answer")
# reported per value when the parquet has them (Video-MME does)
GROUP_COLUMNS = ("duration", "task_type", "domain", "sub_category")
# llava_qwen.py:278: chat()'s max_new_tokens
ORIGINAL_MAX_NEW_TOKENS = 2048
# the config entries that change the answers: a log is resumed only with the same
# (and the same model)
SAMPLING_KEYS = ("fps", "max_frames", "max_tokens", "sampling", "prompt_suffix")
SAVE_EVERY_S = 1.0


# ------------------------------------------------------------- the original's rules
def build_question(question: str, options, prompt: str = "") -> str:
    """The text after the video, as the original sends it."""
    text = f"{INSTRUCTION}{question}\nOptions:"  # eval_video_mme.py:40
    for option in options:  # eval_video_mme.py:41-42
        text += f"\n{option}"
    if prompt:  # eval_video_mme.py:86 (--prompt, empty by default)
        text = text + "\n" + prompt
    # llava_qwen.py:343: chat() removes "<image>" from every text part
    return text.replace("<image>", "")


def extract_letter(response: str, maximum: int = 10) -> str:
    """``extract_characters_regex`` (utils.py:5-28): the first capital letter A-J
    left after removing the answer prefixes (case-sensitive), or ''."""
    s = response.strip()
    for prefix in ANSWER_PREFIXES:
        s = s.replace(prefix, "")
    letters = "[{}]".format("".join(chr(ord("A") + i) for i in range(maximum)))
    if len(s.split()) > 10 and not re.search(letters, s):
        return ""
    match = re.search(letters, s)
    if match is None:
        return ""
    return match[0]


def is_correct(record: dict) -> bool:
    """eval_video_mme.py:138: the letter against the answer, both lowercased; an
    empty letter (no answer, or a failed request: the original's ``outputs = ""``
    at eval_video_mme.py:103) is wrong."""
    return record["answer"].lower() == record["pred"].lower()


def parse_range(samples_range: str, rows: int) -> tuple[int, int]:
    """``--samples_range A_B`` (eval_video_mme.py:31-32): the slice [A:B], where
    only the literal '-1' means the end."""
    start, end = (int(x) if x != "-1" else rows for x in samples_range.split("_"))
    return start, end


def _group(records: list[dict]) -> dict:
    correct = sum(is_correct(r) for r in records)
    return {
        "questions": len(records),
        "correct": correct,
        "accuracy": correct / len(records) if records else None,
    }


def score(records: list[dict]) -> dict:
    """``calculate_metrics`` (eval_video_mme.py:120-150) and the same accuracy by
    task type, domain and sub-category."""
    summary = {"overall": _group(records)}
    for column in GROUP_COLUMNS:
        values = [r.get(column) for r in records]
        if all(v is None for v in values):
            continue
        keys = sorted(set(values) - {None})
        if column == "duration":  # the original's three first, all of them
            keys = [*DURATIONS, *(k for k in keys if k not in DURATIONS)]
        summary[f"by_{column}"] = {
            key: _group([r for r in records if r.get(column) == key]) for key in keys
        }
    # the original's own dict (eval_video_mme.py:141-145); np.mean of no
    # question is nan there, None here
    original = {"Tot": len(records), "Acc": summary["overall"]["accuracy"]}
    for duration in DURATIONS:
        group = summary.get("by_duration", {}).get(duration)
        original[f"{duration}_acc"] = group["accuracy"] if group else None
    summary["original_metrics"] = original
    summary["failed_requests"] = sum(r.get("error") is not None for r in records)
    return summary


# ------------------------------------------------------------------------ dataset
def load_questions(parquet: str, samples_range: str = "0_-1") -> list[dict]:
    import pyarrow.parquet as pq

    rows = pq.read_table(parquet).to_pylist()
    missing = [c for c in REQUIRED_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise SystemExit(f"{parquet}: no column {', '.join(missing)}")
    for index, row in enumerate(rows):
        row["index"] = index
    start, end = parse_range(samples_range, len(rows))
    return rows[start:end]


def video_path(videos: str, video_id: str) -> str:
    # eval_video_mme.py:45: video_dir + videoID + '.mp4'
    return str(Path(videos, video_id + ".mp4").resolve())


# ---------------------------------------------------------------------------- log
class Log:
    """The JSON log: config, summary and one record per question, by question_id.
    Written to a temporary file and renamed, so it is always a whole document."""

    def __init__(self, path: Path, config: dict):
        self.path, self.config = path, config
        self.records: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.saved_at = 0.0
        if path.exists():
            old = json.loads(path.read_text())
            mismatch = {
                key: (old["config"].get(key), config.get(key))
                for key in (*SAMPLING_KEYS, "model")
                if old["config"].get(key) != config.get(key)
            }
            if mismatch:
                raise SystemExit(
                    f"{path} was made with other settings (log, now): {mismatch}; "
                    "use another --log or the same settings"
                )
            self.records = {r["question_id"]: r for r in old["records"]}

    def answered(self) -> set[str]:
        return {qid for qid, r in self.records.items() if r["error"] is None}

    def add(self, record: dict) -> None:
        with self.lock:
            self.records[record["question_id"]] = record
            if time.monotonic() - self.saved_at >= SAVE_EVERY_S:
                self._save()

    def save(self) -> dict:
        with self.lock:
            return self._save()

    def _save(self) -> dict:
        records = sorted(self.records.values(), key=lambda r: r["index"])
        document = {"config": self.config, "summary": score(records)}
        document["records"] = records
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(document, indent=1, ensure_ascii=False))
        os.replace(tmp, self.path)
        self.saved_at = time.monotonic()
        return document


# ------------------------------------------------------------------------ running
def sampling_fields(args) -> dict:
    if args.greedy:
        return {"temperature": 0, "repetition_penalty": 1.0}
    return {}  # the checkpoint's generation_config.json, as model.chat() samples


def ask(args, row: dict) -> dict:
    prompt = build_question(row["question"], row["options"], args.prompt)
    messages = [
        user_turn(
            video_path(args.videos, row["videoID"]),
            prompt,
            fps=args.fps,
            max_frames=args.max_frames,
        )
    ]
    result = chat_stream(
        args.url,
        messages,
        args.max_tokens,
        timeout=args.request_timeout,
        **sampling_fields(args),
    )
    response = result.text if result.ok else ""
    record = {
        key: row.get(key)
        for key in ("index", "question_id", "videoID", "video_id", *GROUP_COLUMNS)
    }
    record.update(
        prompt=prompt,
        answer=row["answer"],
        response=response,
        pred=extract_letter(response),
        error=result.error,
        finish_reason=result.finish_reason,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        ttft_s=None if result.ttft_s is None else round(result.ttft_s, 3),
        latency_s=round(result.latency_s, 3),
        asked_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(result.sent)),
    )
    record["correct"] = is_correct(record)
    return record


def run(args) -> dict:
    questions = load_questions(args.parquet, args.samples_range)
    model = served_model(args.url)
    if model is None:
        raise SystemExit(f"no server answers GET {args.url}/v1/models")
    config = {
        "harness": "benchmarks/videomme.py",
        "server": args.url,
        "model": model,
        "parquet": str(Path(args.parquet).resolve()),
        "videos": str(Path(args.videos).resolve()),
        "fps": args.fps,
        "max_frames": args.max_frames,
        "max_tokens": args.max_tokens,
        "sampling": sampling_fields(args) or "generation_config.json",
        "prompt_suffix": args.prompt,
    }
    Path(args.log).parent.mkdir(parents=True, exist_ok=True)
    log = Log(Path(args.log), config)
    done = log.answered()
    pending = [q for q in questions if q["question_id"] not in done]
    by_video: OrderedDict[str, list[dict]] = OrderedDict()
    for row in pending:
        by_video.setdefault(row["videoID"], []).append(row)
    print(
        f"{len(questions)} questions selected, {len(questions) - len(pending)} "
        f"already in {args.log}, asking {len(pending)} ({len(by_video)} videos, "
        f"{args.concurrency} at a time)",
        flush=True,
    )
    stopping = threading.Event()
    asked = itertools.count(1)
    done_now = []

    def one_video(rows: list[dict]) -> None:
        for row in rows:
            if stopping.is_set():
                return
            record = ask(args, row)
            log.add(record)
            number = next(asked)
            done_now.append(row["question_id"])
            if args.verbose or record["error"]:
                status = record["error"] or f"{record['pred'] or '-'} ({row['answer']})"
                print(
                    f"[{number}/{len(pending)}] {row['question_id']}: {status}",
                    flush=True,
                )

    pool = ThreadPoolExecutor(max_workers=args.concurrency)
    futures = [pool.submit(one_video, rows) for rows in by_video.values()]
    try:
        for future in futures:
            future.result()
    except KeyboardInterrupt:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        document = log.save()
        print(
            f"\ninterrupted: {len(document['records'])} records in {args.log}; "
            "run the same command again to go on",
            flush=True,
        )
        os._exit(130)  # requests in flight are abandoned
    pool.shutdown()
    document = log.save()
    document["asked"] = done_now
    return document


def table(document: dict) -> str:
    summary, config = document["summary"], document["config"]
    lines = [
        f"Video-MME, {config.get('model')}: {config['max_frames']} frames at "
        f"{config['fps']} fps, sampling {config['sampling']}, "
        f"{summary['failed_requests']} failed requests",
        "",
        "| split | questions | correct | accuracy |",
        "|---|---|---|---|",
    ]

    def row(name: str, group: dict) -> None:
        acc = "-" if group["accuracy"] is None else f"{100 * group['accuracy']:.1f}%"
        lines.append(f"| {name} | {group['questions']} | {group['correct']} | {acc} |")

    row("overall", summary["overall"])
    for column in GROUP_COLUMNS:
        for key, group in summary.get(f"by_{column}", {}).items():
            row(key if column == "duration" else f"{column}: {key}", group)
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:30000", help="the server")
    parser.add_argument("--parquet", help="Video-MME's videomme/test-*.parquet")
    parser.add_argument("--videos", help="the folder of <videoID>.mp4")
    parser.add_argument("--log", default="videomme.json", help="JSON log (resumed)")
    parser.add_argument(
        "--max-frames", type=int, default=420, help="run_eval.sh NFRAMES (420)"
    )
    parser.add_argument("--fps", type=float, default=1, help="run_eval.sh FPS (1)")
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=ORIGINAL_MAX_NEW_TOKENS,
        help="new tokens at most (chat()'s 2048)",
    )
    # options alike only in shape to other benchmarks': each its own names and help
    parser.add_argument(
        "--greedy",
        action="store_true",
        help="temperature 0, repetition penalty 1 (default: the checkpoint's "
        "generation_config.json, as the original)",
    )
    parser.add_argument(
        "--prompt", default="", help="text appended to every question (--prompt)"
    )
    parser.add_argument(
        "--samples-range", default="0_-1", help="rows A_B of the parquet (0_-1: all)"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="videos at a time")
    parser.add_argument("--request-timeout", type=float, default=3600)
    parser.add_argument("--verbose", action="store_true", help="print every answer")
    parser.add_argument("--rescore", metavar="LOG", help="score a log, no server")
    args = parser.parse_args(argv)
    if args.rescore:
        document = json.loads(Path(args.rescore).read_text())
        document["summary"] = score(document["records"])
    else:
        if not (args.parquet and args.videos):
            parser.error("--parquet and --videos are needed (or --rescore LOG)")
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        document = run(args)
    print(table(document))
    return 0


if __name__ == "__main__":
    sys.exit(main())
