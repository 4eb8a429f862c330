"""The Video-MME harness and the video serving benchmark (benchmarks/).

Scoring rules against hand-made answers (the original's ``extract_characters_regex``
and ``calculate_metrics``, edge cases included), the serving metrics and the
original's derived serial figures against hand-computed values; then both scripts
end to end through the real HTTP server on CPU (tests/helpers/http_server.py, the
tiny fp32 checkpoint): a synthetic Video-MME parquet written here with generated
videos (one missing), interrupted and resumed; a short serving run; the TTFT
decode and stall benchmarks on the shared client.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.bench_video_serving import compute_metrics, original_serial
from benchmarks.bench_video_stall import largest_gaps, phases
from benchmarks.chat_client import ChatResult
from benchmarks.videomme import (
    build_question,
    extract_letter,
    is_correct,
    parse_range,
    score,
)
from tests.helpers.holding_proxy import HoldingProxy
from tests.helpers.http_server import start_server
from tests.helpers.project import PROJECT_ROOT
from tools.media import write_video

RUN_TIMEOUT_S = 300

# ---------------------------------------------------------------- scoring rules
# response -> the letter the original extracts (utils.py:5-28), by hand
LETTERS = {
    "A": "A",
    "  \n B \n": "B",
    "(C) three": "C",
    "D. four shapes move to the left": "D",
    "The answer is C.": "C",
    "The best answer is D": "D",
    "The correct answer is B": "B",
    "The answer B": "B",
    "Answer: E": "E",
    # several letters: the first one counts
    "A and B": "A",
    "C, D": "C",
    # "Best answer:" is not removed (glued to "Best option:" by a missing comma),
    # so the B of "Best" is the answer
    "Best answer: C": "B",
    # "The correct option is" is not removed either, its T is no candidate
    "The correct option is D": "D",
    # capital letters A-J anywhere count: "I", "H", "G", "F"
    "I think it is B": "I",
    "Highlight: A": "H",
    "Given the video, C": "G",
    "From the frames: B": "F",
    # the prefixes are case-sensitive: "the answer is" stays, its letters are small
    "the answer is A": "A",
    # no letter A-J: nothing
    "": "",
    "   ": "",
    "b": "",
    "none of them": "",
    "K": "",
    "the video shows a man who walks along the road and then sits down there": "",
    # over ten words but with a letter: the letter
    "the video shows a man who walks along the road and then sits on a Bench": "B",
}


@pytest.mark.parametrize("response", list(LETTERS))
def test_answer_letter_extraction(response):
    assert extract_letter(response) == LETTERS[response]


def test_question_layout_is_the_originals():
    text = build_question("What is the man holding?", ["A. a cup", "B. a phone"])
    assert text == (
        "Carefully read the following question and select the letter corresponding"
        " to the correct answer.Highlight the applicable choices without giving "
        "explanations.\nWhat is the man holding?\nOptions:\nA. a cup\nB. a phone"
    )
    # --prompt is appended on a line of its own; "<image>" is removed as chat() does
    assert build_question("Q<image>?", ["A. x"], prompt="Answer.").endswith(
        "\nQ?\nOptions:\nA. x\nAnswer."
    )


def test_samples_range():
    assert parse_range("0_-1", 2700) == (0, 2700)
    assert parse_range("700_1400", 2700) == (700, 1400)
    assert parse_range("2100_-1", 2700) == (2100, 2700)
    assert parse_range("0_-2", 10) == (0, -2)  # only the literal -1 is the end


def record(duration, task, answer, pred, error=None) -> dict:
    r = dict(duration=duration, task_type=task, answer=answer, pred=pred)
    r["error"] = error
    return r


def test_accuracy_by_duration_and_task_type():
    records = [
        record("short", "Counting Problem", "A", "A"),  # right
        record("short", "OCR Problems", "B", "", error="HTTP 400: no video"),  # wrong
        record("medium", "Counting Problem", "C", "C"),  # right
        record("long", "OCR Problems", "D", "A"),  # wrong
        record("long", "Counting Problem", "b", "B"),  # right: both lowercased
    ]
    assert [is_correct(r) for r in records] == [True, False, True, False, True]
    summary = score(records)
    assert summary["overall"] == {"questions": 5, "correct": 3, "accuracy": 0.6}
    assert summary["by_duration"] == {
        "short": {"questions": 2, "correct": 1, "accuracy": 0.5},
        "medium": {"questions": 1, "correct": 1, "accuracy": 1.0},
        "long": {"questions": 2, "correct": 1, "accuracy": 0.5},
    }
    assert summary["by_task_type"] == {
        "Counting Problem": {"questions": 3, "correct": 3, "accuracy": 1.0},
        "OCR Problems": {"questions": 2, "correct": 0, "accuracy": 0.0},
    }
    assert summary["original_metrics"] == {
        "Tot": 5,
        "Acc": 0.6,
        "short_acc": 0.5,
        "medium_acc": 1.0,
        "long_acc": 0.5,
    }
    assert summary["failed_requests"] == 1
    # a duration without questions: None (the original's np.mean of nothing: nan)
    only_short = score(records[:2])
    assert only_short["by_duration"]["long"] == {
        "questions": 0,
        "correct": 0,
        "accuracy": None,
    }
    assert only_short["original_metrics"]["long_acc"] is None
    assert "by_domain" not in summary  # no such column


# -------------------------------------------------------------- serving metrics
def chat(sent, chunks, latency, prompt, completion, error=None) -> ChatResult:
    return ChatResult(
        sent=sent,
        chunk_s=chunks,
        latency_s=latency,
        prompt_tokens=prompt,
        completion_tokens=completion,
        error=error,
    )


def test_serving_metrics_by_hand():
    results = [
        chat(0.0, [0.5, 0.6, 0.8], 1.0, 100, 3),
        chat(0.2, [1.0, 1.5], 2.0, 50, 2),
        chat(0.3, [], 0.1, None, None, error="HTTP 400: bad video"),
    ]
    m = compute_metrics(results, duration_s=2.5)
    assert (m["completed"], m["failed"]) == (2, 1)
    assert (m["total_input_tokens"], m["total_output_tokens"]) == (150, 5)
    assert m["request_throughput"] == pytest.approx(0.8)
    assert m["input_throughput"] == pytest.approx(60.0)
    assert m["output_throughput"] == pytest.approx(2.0)
    assert m["total_throughput"] == pytest.approx(62.0)
    assert m["concurrency"] == pytest.approx(1.2)  # (1.0 + 2.0) / 2.5
    assert m["max_concurrent_requests"] == 2  # [0, 1.0] and [0.2, 2.2]
    assert m["mean_ttft_ms"] == pytest.approx(750)
    assert m["median_ttft_ms"] == pytest.approx(750)
    # TPOT: (1.0 - 0.5) / 2 and (2.0 - 1.0) / 1
    assert m["mean_tpot_ms"] == pytest.approx(625)
    # ITL: gaps 0.1, 0.2 and 0.5
    assert m["mean_itl_ms"] == pytest.approx(800 / 3, abs=1e-3)
    assert m["median_itl_ms"] == pytest.approx(200)
    assert m["max_itl_ms"] == pytest.approx(500)
    assert m["mean_e2e_latency_ms"] == pytest.approx(1500)
    assert m["p99_e2e_latency_ms"] == pytest.approx(1990)  # 1000 + 0.99 * 1000


def test_stall_gaps_are_placed_on_the_video_timeline_by_hand():
    # the video is sent at 100.0; processor until 101.0, encoder 101.1-103.0,
    # first token at 103.3
    record = {"t_media_done": 101.0, "t_start": 101.1, "t_end": 103.0}
    timeline = phases(100.0, 103.3, [record])
    assert timeline == [
        ("processor", 100.0, 101.0),
        ("hand-off", 101.0, 101.1),
        ("encoder", 101.1, 103.0),
        ("prefill", 103.0, 103.3),
    ]
    # gaps: 0.5 and 1.0 before the video and into the processor, 1.48 from the
    # processor over the hand-off into the encoder, 0.94 inside the encoder; the
    # smaller ones (0.02, 0.05, 0.25, 0.26, 0.3) are not among the 4 largest
    times = [99.0, 99.5, 100.5, 100.52, 102.0, 102.05, 102.99, 103.24, 103.5, 103.8]
    gaps = largest_gaps(times, timeline, 100.0, n=4)
    assert [g["gap_s"] for g in gaps] == [1.48, 1.0, 0.94, 0.5]
    assert gaps[0] == {
        "gap_s": 1.48,
        "from_s": 0.52,
        "to_s": 2.0,
        "phases": ["processor", "hand-off", "encoder"],
    }
    assert gaps[1]["phases"] == ["before", "processor"]
    assert gaps[2]["phases"] == ["encoder"]
    assert gaps[3]["phases"] == ["before"]
    # the gap across the encoder's end counts in both windows
    times = [102.9, 102.99, 103.24, 103.3]
    (gap,) = largest_gaps(times, timeline, 100.0, n=1)
    assert gap == {
        "gap_s": 0.25,
        "from_s": 2.99,
        "to_s": 3.24,
        "phases": ["encoder", "prefill"],
    }
    # after the first token, and without timing records one admission phase
    (gap,) = largest_gaps([103.4, 104.0], timeline, 100.0, n=1)
    assert gap["phases"] == ["after"]
    assert phases(100.0, 103.3, []) == [("admission", 100.0, 103.3)]
    (gap,) = largest_gaps([99.9, 100.2], phases(100.0, 103.3, []), 100.0, n=1)
    assert gap["phases"] == ["before", "admission"]


def test_original_serial_throughput_is_derived_from_its_figures():
    # one 60-frame request, 64 new tokens: TTFT 1.22-1.29 s + 63 steps at 27.3 tok/s
    one = original_serial(["60 frames"], 64)
    assert one["best"]["request_throughput"] == pytest.approx(1 / 3.527692, rel=1e-5)
    assert one["worst"]["request_throughput"] == pytest.approx(1 / 3.597692, rel=1e-5)
    assert one["best"]["output_throughput"] == pytest.approx(64 / 3.527692, rel=1e-5)
    assert one["best"]["mean_ttft_ms"] == pytest.approx(1220)
    # a 60-frame and a 420-frame (640x360) request one after the other
    two = original_serial(["60 frames", "420 frames, 640x360"], 64)
    assert two["best"]["request_throughput"] == pytest.approx(
        2 / (1.22 + 6.65 + 2 * 63 / 27.3), rel=1e-6
    )
    assert original_serial(["60 frames", None], 64) is None  # a clip not measured


# ---------------------------------------------------------- through the server
@pytest.fixture(scope="module")
def server(checkpoints, tmp_path_factory):
    """The tiny fp32 checkpoint behind the real HTTP server on CPU."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    srv = start_server(checkpoints.converted("fp32"), log)
    try:
        yield srv
    finally:
        srv.stop()


DURATIONS = ["short", "medium", "long"]
# videoID -> seconds of a 96x64 10 fps clip (1 fps: that many frames)
VIDEOS = {"vidA": 3, "vidB": 4, "vidC": 5}


def write_dataset(root: Path) -> tuple[Path, Path, list[dict]]:
    videos = root / "videos"
    videos.mkdir()
    for seed, (video_id, seconds) in enumerate(VIDEOS.items()):
        write_video(videos / f"{video_id}.mp4", seconds, 10.0, 96, 64, seed=20 + seed)
    rows = []
    for v, video_id in enumerate([*VIDEOS, "no_such_video"]):
        for q in range(2 if video_id in VIDEOS else 1):
            rows.append(
                {
                    "video_id": f"{v:03d}",
                    "duration": DURATIONS[v % 3],
                    "domain": "Knowledge",
                    "sub_category": "Humanity & History",
                    "url": "https://example.invalid/",
                    "videoID": video_id,
                    "question_id": f"{v:03d}-{q + 1}",
                    "task_type": ["Counting Problem", "Action Recognition"][q],
                    "question": f"How many shapes move in part {q + 1}?",
                    "options": ["A. one", "B. two", "C. three", "D. four"],
                    "answer": "ABCD"[(v + q) % 4],
                }
            )
    parquet = root / "test-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    return parquet, videos, rows


def harness(server_url, parquet, videos, log, *extra) -> list[str]:
    return [
        sys.executable,
        str(PROJECT_ROOT / "benchmarks" / "videomme.py"),
        "--url",
        server_url,
        "--parquet",
        str(parquet),
        "--videos",
        str(videos),
        "--log",
        str(log),
        "--max-frames",
        "8",
        "--fps",
        "1",
        "--max-tokens",
        "8",
        "--greedy",
        *extra,
    ]


def run(cmd, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        cmd, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S
    )
    if check:
        assert proc.returncode == 0, f"{cmd}\n{proc.stdout}\n{proc.stderr}"
    return proc


def run_bench(script, *args) -> subprocess.CompletedProcess:
    """``benchmarks/<script> <args>``, which must succeed."""
    bench = PROJECT_ROOT / "benchmarks" / script
    return run([sys.executable, str(bench), *map(str, args)])


def test_videomme_harness_end_to_end(server, tmp_path):
    parquet, videos, rows = write_dataset(tmp_path)
    log = tmp_path / "videomme.json"
    server.wait_ready()
    cmd = harness(server.url, parquet, videos, log, "--concurrency", "1")

    # interrupted (SIGINT) once its first answer is in the log, while the proxy
    # holds its second question (so it cannot have finished in the meantime)
    with HoldingProxy(server.url, passes=1) as proxy:
        proc = subprocess.Popen(
            harness(proxy.url, parquet, videos, log, "--concurrency", "1"),
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            # as from a terminal: a CI that runs in the background (``cmd &``)
            # passes SIGINT on ignored, and Python then never raises
            # KeyboardInterrupt
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while (
            not (proxy.holding.is_set() and log.exists())
            and proc.poll() is None
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out = proc.communicate(timeout=RUN_TIMEOUT_S)[0].decode()
    assert proc.returncode == 130, out
    first = {r["question_id"]: r for r in json.loads(log.read_text())["records"]}
    assert 1 <= len(first) < len(rows), out
    assert all(r["error"] is None for r in first.values())

    # the same command goes on: only the questions not answered are asked
    resumed = run(cmd)
    assert (
        f"{len(rows)} questions selected, {len(first)} already in {log}, "
        f"asking {len(rows) - len(first)}" in resumed.stdout
    ), resumed.stdout
    document = json.loads(log.read_text())
    records = document["records"]
    assert [r["question_id"] for r in records] == [r["question_id"] for r in rows]
    for qid, old in first.items():  # answered before: untouched
        assert next(r for r in records if r["question_id"] == qid) == old

    for rec, row in zip(records, rows):
        assert rec["prompt"] == build_question(row["question"], row["options"])
        assert (rec["answer"], rec["duration"]) == (row["answer"], row["duration"])
        assert rec["task_type"] == row["task_type"]
        assert rec["pred"] == extract_letter(rec["response"])
        assert rec["correct"] == (rec["pred"].lower() == rec["answer"].lower())
        if row["videoID"] in VIDEOS:
            assert rec["error"] is None, rec
            assert rec["prompt_tokens"] > 0 and 1 <= rec["completion_tokens"] <= 8
            assert rec["finish_reason"] in ("length", "stop")
        else:  # the missing video: a clear 400, no answer, counted wrong
            assert "neither an existing file" in rec["error"], rec
            assert (rec["response"], rec["pred"], rec["correct"]) == ("", "", False)

    # the summary is what the logged letters imply
    summary = document["summary"]
    correct = [r for r in records if r["pred"] and r["pred"] == r["answer"]]
    assert summary["overall"] == {
        "questions": len(rows),
        "correct": len(correct),
        "accuracy": len(correct) / len(rows),
    }
    for duration in DURATIONS:
        mine = [r for r in records if r["duration"] == duration]
        assert summary["by_duration"][duration]["questions"] == len(mine)
        assert summary["by_duration"][duration]["correct"] == sum(
            r in correct for r in mine
        )
    assert sum(g["questions"] for g in summary["by_task_type"].values()) == len(rows)
    assert summary["failed_requests"] == 1
    assert document["config"]["max_frames"] == 8 and document["config"]["fps"] == 1
    assert "| overall | 7 |" in resumed.stdout

    # again: the failed question is asked again, nothing else
    again = run(cmd)
    assert f"{len(rows) - 1} already in {log}, asking 1 " in again.stdout
    # other frame sampling: refused, the log is kept
    before = log.read_bytes()
    other = run(harness(server.url, parquet, videos, log, "--fps", "2"), check=False)
    assert other.returncode != 0 and "other settings" in other.stderr
    assert log.read_bytes() == before
    rescored = run([sys.executable, "benchmarks/videomme.py", "--rescore", str(log)])
    assert "| overall | 7 |" in rescored.stdout


def test_serving_benchmark_short_run(server, tmp_path):
    out = tmp_path / "serving.json"
    server.wait_ready()
    proc = run_bench(
        "bench_video_serving.py",
        "--url",
        server.url,
        "--num-requests",
        3,
        "--max-concurrency",
        2,
        "--video-spec",
        "3:96x64@10",
        "--video-spec",
        "4:64x48@8",
        "--output-len",
        5,
        "--video-dir",
        tmp_path / "clips",
        "--out",
        out,
    )
    result = json.loads(out.read_text())
    m, reqs = result["metrics"], result["requests"]
    assert (m["completed"], m["failed"], len(reqs)) == (3, 0, 3)
    # ignore_eos: exactly 5 new tokens each, as the server reported
    assert [r["completion_tokens"] for r in reqs] == [5, 5, 5]
    assert m["total_output_tokens"] == 15
    assert m["total_input_tokens"] == sum(r["prompt_tokens"] for r in reqs)
    assert len({r["video"] for r in reqs}) == 3  # a new video every request
    assert [r["kind"] for r in reqs] == [
        "3s_96x64_10fps",
        "4s_64x48_8fps",
        "3s_96x64_10fps",
    ]
    gaps = []
    for r in reqs:
        assert 1 <= len(r["chunk_s"]) <= 5 and r["text"]
        assert 0 < r["ttft_s"] == r["chunk_s"][0] <= r["latency_s"]
        gaps += [b - a for a, b in zip(r["chunk_s"], r["chunk_s"][1:])]
    assert m["request_throughput"] == pytest.approx(3 / m["duration_s"], rel=1e-3)
    assert m["mean_ttft_ms"] == pytest.approx(
        1000 * sum(r["ttft_s"] for r in reqs) / 3, abs=1e-2
    )
    assert m["mean_itl_ms"] == pytest.approx(1000 * sum(gaps) / len(gaps), abs=1e-2)
    order = ["median_itl_ms", "p90_itl_ms", "p95_itl_ms", "p99_itl_ms", "max_itl_ms"]
    assert [m[k] for k in order] == sorted(m[k] for k in order)
    assert 1 <= m["max_concurrent_requests"] <= 2
    by_video = result["by_video"]
    assert {k: v["completed"] for k, v in by_video.items()} == {
        "3s_96x64_10fps": 2,
        "4s_64x48_8fps": 1,
    }
    assert result["original_serial"] is None  # not the original's measured clips
    for label in ("Successful requests:", "Mean TTFT (ms):", "P99 ITL (ms):"):
        assert label in proc.stdout


def test_ttft_decode_stall_benchmarks_through_the_shared_client(server, tmp_path):
    clip = write_video(tmp_path / "clip.mp4", 3, 10.0, 96, 64, seed=31)
    out = tmp_path / "ttft.json"
    server.wait_ready()
    tiny = ["--url", server.url, "--video", f"tiny={clip}"]
    run_bench("bench_video_ttft.py", *tiny, "--tokens", 2, "--out", out)
    runs = json.loads(out.read_text())["tiny"]
    assert list(runs) == ["first", "again_1", "follow_up"]
    for r in runs.values():
        assert 0 < r["ttft_s"] <= r["total_s"] and r["prompt_tokens"] > 0
        assert r["text"]
    # the follow-up turn holds the first turn, its answer and a new question
    assert runs["follow_up"]["prompt_tokens"] > runs["first"]["prompt_tokens"]

    # bench_decode.py streams through bench_video_ttft.chat_stream too
    out = tmp_path / "decode.json"
    run_bench("bench_decode.py", *tiny, "--tokens", 4, "--out", out)
    decode = json.loads(out.read_text())["decode_tok_s"]
    assert list(decode) == ["short_bs1", "short_bs8", "long_bs1", "long_bs8"]
    for key, r in decode.items():
        assert r["batch"] == (8 if key.endswith("bs8") else 1)
        assert r["per_stream_tok_s"] > 0 and len(r["ttft_s"]) == r["batch"]

    # and bench_video_stall.py, on the chunk times of the shared client
    other = write_video(tmp_path / "other.mp4", 3, 10.0, 96, 64, seed=32)
    out = tmp_path / "stall.json"
    run_bench(
        "bench_video_stall.py",
        "--url",
        server.url,
        "--video",
        other,
        "--tokens",
        256,
        "--warmup-s",
        0.5,
        "--out",
        out,
    )
    stall = json.loads(out.read_text())
    assert stall["stream_tokens"] > 1 and stall["video_ttft_s"] > 0
    # no timing records from this server: one admission phase, the largest gap first
    assert [p["phase"] for p in stall["timeline"]] == ["admission"]
    assert stall["largest_gaps"][0]["gap_s"] == stall["overall"]["max_gap_s"]
