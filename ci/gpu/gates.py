"""GPU CI gates: a run fails when parity breaks or a promised figure regresses.

    python3 ci/gpu/gates.py check --run DIR [--baseline FILE] [--only STAGE,...]
    python3 ci/gpu/gates.py baseline --run DIR [--out FILE] [--commit SHA] [--date D]
    python3 ci/gpu/gates.py record --run DIR [--name NAME]
    python3 ci/gpu/gates.py stages [--part N] [--gates]
                                            # the stages `ci/gpu/run.sh ci` runs
    python3 ci/gpu/gates.py note ...        # run.sh's record of stages (stages.json)

A run directory is ``$OUT`` of ``ci/gpu/run.sh`` or a recorded run
(``docs/gpu-runs/<date>/``): the ``<file>.json`` files its stages write (STAGES
below; one stage may write several) and ``stages.json``, run.sh's record of which
stages ran, how long and with what status (absent in runs recorded before it). The
record accumulates over several calls of run.sh with the same ``$OUT``: the gates
judge the union (the CI in two calls, CI_PARTS).

Everything the gates read is declared here, in three tables:

* STAGES: stage name (as given to run.sh) -> the JSON files it writes, which of
  them a run cannot lack, and, for a stage whose script does not exist yet, why it
  is pending (not gated until it lands). FILE_STAGE maps each file back to the one
  stage that writes it.
* CHECKS: exact-result checks (parity, the server, the install...). They do not
  depend on the GPU model and have no baseline: the first-token log-probability
  tolerance is LOGPROB_TOLERANCE, set from the recorded runs.
* METRICS: metric name -> (file, key path inside it, which direction is better,
  the allowed regression). A new benchmark plugs in by adding its rows here, its
  values to the baselines (``make gpu-baseline``), its file to its stage and the
  stage to CI_PARTS.

The baseline is per GPU model: ``ci/gpu/baseline-<gpu>.json`` with ``<gpu>`` the
slug of the device name (``NVIDIA H200`` -> ``h200``). It lists every metric of
METRICS; a value of null means "not yet gated": the metric is measured and shown
when present, and neither its absence nor its value fails the run. A metric with a
baseline value fails when its file or key is missing, when the measurement is not
what it claims to be (a "first request" served from the cache), or when it is
worse than the baseline by more than max(rel x baseline, abs). The metrics of a
stage outside the CI (bench) are gated only in a run that has their file.

Exit status of ``check``: 0 when every gate passes, 1 when one fails, 2 on a usage
error. It writes ``gates.json`` (every gate, its value, baseline, limit and result)
and ``gates.md`` (a block in the format of docs/gpu-runs.md) into the run directory.
Standard library only: it runs with the GPU host's python3 and on CPU.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
BASELINE_DIR = REPO / "ci" / "gpu"
GPU_RUNS_DIR = REPO / "docs" / "gpu-runs"

# bf16, random full-size weights: logits of about |30| are quantised to 0.125, so the
# first-token top-20 log-probabilities of SGLang and the reference differ by up to
# 0.189 (H100, 2026-11-27) and 0.188 (H200, 2026-12-01); docs/gpu-runs.md.
LOGPROB_TOLERANCE = 0.19
SGLANG_VERSION_PREFIX = "0.5.17+qsv"


@dataclass(frozen=True)
class Stage:
    files: tuple  # the JSON files it writes: <file>.json for each
    required: tuple = ()  # of those, the ones a run cannot lack (their checks are
    # the point); the others are required through their metrics (a metric with a
    # baseline value fails without its file)
    pending: Optional[str] = None  # no script yet: why it is not gated


def _only(file: str, required: bool = False) -> Stage:
    """A stage that writes one file."""
    return Stage((file,), (file,) if required else ())


STAGES = {
    "install": _only("install", required=True),
    "make_checkpoint": _only("checkpoint", required=True),
    "parity": _only("parity", required=True),
    "image_stages": _only("image_stages", required=True),
    "server": _only("server", required=True),
    # ci/gpu/serving.py: one server, then every benchmark of what users feel, in
    # this order (ttft.json ... soak.json), and serving.json, its own report
    "serving": Stage(
        ("ttft", "stall", "decode", "serving-bench", "soak", "serving"),
        required=("soak",),
    ),
    # run when asked; checked (and their metrics shown or gated) when their JSON is
    # there. bench: benchmarks/bench_quicksviewer.py --gpu-suite, SGLang against the
    # reference in-process; its decode and concurrency figures are superseded in
    # the CI by serving's decode.json and serving-bench.json (the H100 run of
    # 2026-11-27 has bench.json). tp needs 2 GPUs.
    "bench": _only("bench"),
    "visual_path": _only("visual_path"),
    "tp": _only("tp"),
}
# what .github/workflows/gpu.yml and `ci/gpu/run.sh ci` run, in this order, in two
# parts: `run.sh ci --part 1`, then `run.sh ci --part 2` (which ends with the
# gates) on the same host and $OUT, for a caller whose calls are limited in time
# (the device tool: 10 minutes a call; about 300 s and 450 s on an H200)
CI_PARTS = (
    ("install", "make_checkpoint", "parity", "image_stages"),
    ("server", "serving"),
)
CI_STAGES = tuple(stage for part in CI_PARTS for stage in part)


def _file_stage() -> dict:
    owner = {}
    for name, stage in STAGES.items():
        for file in stage.files:
            assert file not in owner, f"{file}.json: stages {owner[file]} and {name}"
            owner[file] = name
        assert set(stage.required) <= set(stage.files), name
    return owner


FILE_STAGE = _file_stage()  # file -> the one stage that writes it

MISSING = object()


def lookup(data: Any, path: tuple) -> Any:
    for key in path:
        if isinstance(data, dict) and key in data:
            data = data[key]
        else:
            return MISSING
    return data


# ------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class Check:
    file: str
    name: str
    what: str
    # (data of the file) -> (passed, value shown, message when it fails)
    test: Callable[[dict], tuple]


def _flag(path: tuple, fail: str = "") -> Callable[[dict], tuple]:
    def test(data):
        value = lookup(data, path)
        if value is MISSING:
            return False, None, f"no key {'.'.join(path)}"
        return value is True, value, fail or f"{'.'.join(path)} is {value!r}"

    return test


def _ids_equal(data):
    value = lookup(data, ("ids_equal",))
    if value is MISSING:
        return False, None, "no key ids_equal"
    where = data.get("first_id_mismatch")
    return (
        value is True,
        value,
        (
            f"the final prompt ids differ from the reference's (first mismatch at "
            f"position {where} of {data.get('prompt_tokens')}): different cubes or "
            f"timestamps"
        ),
    )


def _tokens_equal(key_a: str, key_b: str, flag: str):
    def test(data):
        a, b, equal = data.get(key_a), data.get(key_b), data.get(flag)
        if a is None or b is None or equal is None:
            return False, None, f"no keys {key_a}, {key_b}, {flag}"
        ok = equal is True and a == b and len(a) > 0
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if first is None and len(a) != len(b):
            first = min(len(a), len(b))
        return (
            ok,
            ok,
            (
                f"greedy tokens differ: {key_a} {a[:8]}..., {key_b} {b[:8]}... "
                f"(first difference at token {first}; {flag}={equal!r})"
            ),
        )

    return test


def _logprobs(data):
    value = lookup(data, ("first_token_top20_max_abs_logprob_diff",))
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False, None, "no key first_token_top20_max_abs_logprob_diff"
    ok = math.isfinite(value) and value <= LOGPROB_TOLERANCE
    return (
        ok,
        round(value, 4),
        (
            f"first-token top-20 log-probabilities differ by {value:.4f} > "
            f"{LOGPROB_TOLERANCE} (the recorded bf16 tolerance)"
        ),
    )


def _top1(data):
    a = data.get("first_token_top1_sglang")
    b = data.get("first_token_top1_reference")
    if a is None or b is None:
        return False, None, "no keys first_token_top1_sglang/_reference"
    return a == b, a == b, f"first token: SGLang's top-1 {a}, the reference's {b}"


def _imports(data):
    imports = data.get("imports")
    if not isinstance(imports, dict):
        return False, None, "no imports result (check_imports.py did not run)"
    problems, missing = imports.get("problems"), imports.get("missing")
    ok = problems == [] and missing == {}
    return ok, ok, f"import problems {problems}, missing modules {missing}"


def _sglang_version(data):
    version = data.get("sglang_version")
    ok = isinstance(version, str) and version.startswith(SGLANG_VERSION_PREFIX)
    return ok, version, f"sglang {version!r} is not the patched wheel"


def _positive(path: tuple):
    def test(data):
        value = lookup(data, path)
        ok = isinstance(value, (int, float)) and value > 0
        return ok, None if value is MISSING else value, f"{'.'.join(path)}={value!r}"

    return test


def _all_true(data):
    """Every boolean leaf of the file is true (visual_path.json's equalities)."""
    bad, count = [], 0

    def walk(node, where):
        nonlocal count
        if isinstance(node, bool):
            count += 1
            if not node:
                bad.append(where)
        elif isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{where}.{key}" if where else key)

    walk(data, "")
    return (
        (not bad and count > 0),
        f"{count - len(bad)}/{count}",
        (f"not equal: {', '.join(bad) or 'no equality recorded'}"),
    )


# image_stages.json (ci/gpu/image_stages.py): for each case of its SIZES, the
# deviation of SGLang's stage from the reference's. These four must be bit-identical
# in bf16 (they were on the H200, 2026-12-01); the language model's greedy text
# ("llm") may part at a near-tie of bf16 logits and is recorded, not gated.
IMAGE_CASES = ("one", "two")  # one image (anyres), two images
IMAGE_PARTS = ("pixels", "tower", "resampler", "resampler_on_reference_features")


def _image_stages(data):
    stages = data.get("stages")
    if not isinstance(stages, dict):
        return False, None, "no key stages"
    bad, count = [], 0
    for case in IMAGE_CASES:
        for part in IMAGE_PARTS:
            count += 1
            entry = lookup(stages, (case, part))
            if not isinstance(entry, dict) or "identical" not in entry:
                bad.append(f"{case}.{part} (not recorded)")
            elif entry["identical"] is not True:
                ulps = entry.get("bf16_ulps_of_max")
                ulps = f"{ulps:.3g} bf16 ulps" if _number(ulps) else "differs"
                bad.append(f"{case}.{part} ({ulps} of its largest value)")
    return (
        not bad,
        f"{count - len(bad)}/{count}",
        f"not bit-identical to the reference: {', '.join(bad)}",
    )


# fmt: off
CHECKS = [
    Check("install", "install_imports", "every module of the GPU path imports",
          _imports),
    Check("install", "install_sglang", "sglang is the patched wheel", _sglang_version),
    Check("install", "install_site", "sglang is imported from the bundle's site",
          _flag(("sglang_from_site",))),
    Check("checkpoint", "checkpoint", "the full-size checkpoint was written",
          _positive(("bytes",))),
    Check("parity", "parity_ids", "final prompt ids equal the reference's", _ids_equal),
    Check("parity", "parity_tokens", "greedy tokens equal the reference's",
          _tokens_equal("tokens_sglang", "tokens_reference", "tokens_equal")),
    Check("parity", "parity_logprobs",
          f"first-token top-20 log-probabilities within {LOGPROB_TOLERANCE}",
          _logprobs),
    Check("parity", "parity_top1", "same top-1 first token", _top1),
    Check("parity", "parity_repeat", "a repeated request gives the same tokens",
          _flag(("second_run_tokens_equal",))),
    Check("image_stages", "image_stages", "pixels, SigLIP features and resampler "
          "output of one and two images bit-identical to the reference (bf16)",
          _image_stages),
    Check("server", "server", "HTTP server with CUDA graphs: 200, 400 for a corrupt "
          "video, 200 again with the same text", _flag(("ok",))),
    Check("soak", "soak", "soak: server healthy, answers unchanged, every bad "
          "request a 4xx", _flag(("ok",))),
    Check("tp", "tp_ids", "TP=2 prompt ids equal TP=1's", _flag(("ids_equal",))),
    Check("tp", "tp_tokens", "TP=2 greedy tokens equal TP=1's",
          _tokens_equal("tokens_tp2", "tokens_tp1", "tokens_equal")),
    Check("visual_path", "visual_path", "GPU resize and pixels equal the CPU's and "
          "SiglipImageProcessorPil's", _all_true),
]
# fmt: on


# ------------------------------------------------------------------------ metrics
LOWER, HIGHER = "lower", "higher"


@dataclass(frozen=True)
class Metric:
    file: str
    path: tuple
    better: str  # LOWER or HIGHER
    rel: float  # allowed regression relative to the baseline ...
    abs: float  # ... or absolute, whichever is larger
    unit: str
    what: str
    first_request: bool = False  # must not have been served from the caches

    def limit(self, baseline: float) -> float:
        slack = max(self.rel * baseline, self.abs)
        return baseline + slack if self.better == LOWER else baseline - slack

    def margin_text(self) -> str:
        parts = [f"{self.rel:.0%}"] + (
            [f"{self.abs:g} {self.unit}"] if self.abs else []
        )
        return " or ".join(parts)


# The serving stage's files (ci/gpu/serving.py, one server):
# ttft.json: benchmarks/bench_video_ttft.py with the clips of ci/gpu/ttft.py, clip ->
#   request -> run.
# stall.json: benchmarks/bench_video_stall.py: stall_max_gap_s and stall_p99_gap_s, the
#   largest and the 99th-percentile gap between two tokens of a running stream while
#   the 420-frame 720p clip is admitted.
# decode.json: benchmarks/bench_decode.py: decode_tok_s.<prompt>_bs<batch>: decode
#   tok/s per stream at batch 1 and 8, after a short text prompt and after the
#   420-frame video prompt (5,859 tokens).
# serving-bench.json: benchmarks/bench_video_serving.py: 16 different 60-frame videos,
#   8 in flight, 64 new tokens; metrics.request_throughput, metrics.median_ttft_ms.
# Not in the CI: bench.json: benchmarks/bench_quicksviewer.py --gpu-suite (the bench
#   stage), kept so that the runs that measured it (H100, 2026-11-27) still gate.
# fmt: off
METRICS = {
    "ttft_60f_s": Metric(
        "ttft", ("60f", "first", "ttft_s"), LOWER, 0.15, 0.05, "s",
        "time to first token, 60 frames 640x360, a new video", first_request=True),
    "ttft_420f_s": Metric(
        "ttft", ("420f_360p", "first", "ttft_s"), LOWER, 0.15, 0.05, "s",
        "time to first token, 420 frames 640x360, a new video", first_request=True),
    "ttft_420f_720p_s": Metric(
        "ttft", ("420f_720p", "first", "ttft_s"), LOWER, 0.15, 0.05, "s",
        "time to first token, 420 frames 1280x720, a new video", first_request=True),
    "follow_up_420f_s": Metric(
        "ttft", ("420f_360p", "follow_up", "ttft_s"), LOWER, 0.25, 0.03, "s",
        "time to first token of a follow-up turn, 420 frames 640x360"),
    "stall_max_gap_s": Metric(
        "stall", ("stall_max_gap_s",), LOWER, 0.25, 0.02, "s",
        "largest gap of a running stream while a 420-frame video is admitted"),
    "stall_p99_gap_s": Metric(
        "stall", ("stall_p99_gap_s",), LOWER, 0.25, 0.005, "s",
        "99th-percentile gap of a running stream while a 420-frame video is admitted"),
    # one entry a metric, alike only in shape: each its stage, path, limits and words
    "decode_tok_s_short_bs1": Metric(
        "decode", ("decode_tok_s", "short_bs1", "per_stream_tok_s"), HIGHER, 0.05, 0.0,
        "tok/s", "decode tokens/s, batch 1, after a short text prompt"),
    "decode_tok_s_short_bs8": Metric(
        "decode", ("decode_tok_s", "short_bs8", "per_stream_tok_s"), HIGHER, 0.05, 0.0,
        "tok/s", "decode tokens/s per stream, batch 8, after a short text prompt"),
    "decode_tok_s_long_bs1": Metric(
        "decode", ("decode_tok_s", "long_bs1", "per_stream_tok_s"), HIGHER, 0.05, 0.0,
        "tok/s", "decode tokens/s, batch 1, after the 420-frame video prompt"),
    "decode_tok_s_long_bs8": Metric(
        "decode", ("decode_tok_s", "long_bs8", "per_stream_tok_s"), HIGHER, 0.05, 0.0,
        "tok/s",
        "decode tokens/s per stream, batch 8, after the 420-frame video prompt"),
    "serving_requests_per_s": Metric(
        "serving-bench", ("metrics", "request_throughput"), HIGHER, 0.10, 0.0, "req/s",
        "8 concurrent different 60-frame videos (16 requests, 64 new tokens each)"),
    "serving_median_ttft_ms": Metric(
        "serving-bench", ("metrics", "median_ttft_ms"), LOWER, 0.15, 50.0, "ms",
        "median time to first token of those 16 requests"),
    "decode_tok_s_batch1": Metric(
        "bench", ("sglang", "decode_tok_s_batch1"), HIGHER, 0.05, 0.0, "tok/s",
        "bench stage: decode tokens/s, batch 1, 512-token prompt"),
    "decode_tok_s_batch8": Metric(
        "bench", ("sglang", "decode_tok_s_batch8"), HIGHER, 0.05, 0.0, "tok/s",
        "bench stage: decode tokens/s per request, batch 8"),
    "concurrent_requests_per_s": Metric(
        "bench", ("sglang", "concurrent_requests_per_s"), HIGHER, 0.10, 0.0, "req/s",
        "bench stage: 8 concurrent 60-frame video requests, 64 new tokens each"),
}
# fmt: on


def first_request_problem(metric: Metric, data: dict) -> Optional[str]:
    """Why a "first request" measurement is not one (served from the caches)."""
    if not metric.first_request:
        return None
    run = lookup(data, metric.path[:-1])
    if not isinstance(run, dict):
        return None
    cached, prompt = run.get("cached_tokens"), run.get("prompt_tokens")
    if isinstance(cached, int) and isinstance(prompt, int) and cached * 2 > prompt:
        return (
            f"not a new video: {cached} of {prompt} prompt tokens came from the cache "
            f"(the warm-up used this clip?)"
        )
    return None


# -------------------------------------------------------------------- the run dir
class GateError(Exception):
    """A usage error (exit status 2)."""


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise GateError(f"{path}: {exc}") from None


def read_run(run: Path) -> tuple[dict, dict]:
    """(file stem -> parsed JSON, stages.json or {}) of a run directory."""
    if not run.is_dir():
        raise GateError(f"{run}: no such run directory")
    files = {}
    for path in sorted(run.glob("*.json")):
        if path.stem in ("stages", "gates", "summary", "imports"):
            continue
        try:
            files[path.stem] = json.loads(path.read_text())
        except ValueError as exc:
            files[path.stem] = MISSING
            print(f"gates: {path.name} is not valid JSON: {exc}", file=sys.stderr)
    stages = load_json(run / "stages.json") if (run / "stages.json").exists() else {}
    return files, stages


def devices(files: dict) -> dict:
    """file -> the GPU name it records."""
    found = {}
    for stem, data in files.items():
        if not isinstance(data, dict):
            continue
        name = data.get("device") or lookup(data, ("host", "device"))
        if isinstance(name, str) and name and name != "cpu":
            found[stem] = name
    return found


def gpu_slug(name: str) -> str:
    """``NVIDIA H200`` -> ``h200``, ``NVIDIA H100 80GB HBM3`` -> ``h100-80gb-hbm3``."""
    words = [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w != "nvidia"]
    return "-".join(words)


def baseline_path(device: str) -> Path:
    return BASELINE_DIR / f"baseline-{gpu_slug(device)}.json"


def load_baseline(path: Path) -> dict:
    data = load_json(path)
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if not isinstance(metrics, dict):
        raise GateError(f"{path}: no 'metrics' object")
    missing = [name for name in METRICS if name not in metrics]
    unknown = [name for name in metrics if name not in METRICS]
    if missing or unknown:
        raise GateError(
            f"{path} does not match ci/gpu/gates.py METRICS: "
            + (
                f"missing {missing} (add them, null to leave them ungated) "
                if missing
                else ""
            )
            + (f"unknown {unknown}" if unknown else "")
        )
    for name, entry in metrics.items():
        value = entry.get("value") if isinstance(entry, dict) else MISSING
        if value is not None and not (
            isinstance(value, (int, float))
            and not isinstance(value, bool)
            and value > 0
        ):
            raise GateError(f"{path}: {name}.value must be a positive number or null")
    return data


# --------------------------------------------------------------------------- check
def _stage_status(stages: dict, name: str) -> Optional[dict]:
    entry = (stages.get("stages") or {}).get(name)
    return entry if isinstance(entry, dict) else None


def check_run(
    run: Path,
    baseline: Optional[Path] = None,
    only: Optional[set] = None,
    metrics: bool = True,
) -> dict:
    """Evaluate every gate of ``run``; returns the report written as gates.json.

    ``only``: the stages to gate (a partial development run); ``metrics=False``:
    the stage and exact checks alone (make gpu-baseline).
    """
    files, stages = read_run(run)
    gates, failures = [], []

    def add(gate, status, what, message="", **extra):
        row = {"gate": gate, "status": status, "what": what, **extra}
        if message:
            row["message"] = message
        gates.append(row)
        if status == "FAIL":
            failures.append(f"{gate}: {message}" if message else gate)

    selected = [s for s in STAGES if only is None or s in only]
    # 1. stages: failed, unfinished, missing or pending
    for name in selected:
        stage = STAGES[name]
        entry = _stage_status(stages, name) or {}
        status = entry.get("status")
        present = [f for f in stage.files if f in files]
        invalid = [f for f in present if files[f] is MISSING]
        lacking = [f for f in stage.required if f not in files]
        gate, what = f"stage {name}", f"stage {name} ran"
        if status == "FAILED":
            add(
                gate,
                "FAIL",
                what,
                f"stage {name} failed (exit {entry.get('exit')}; see {name}.log)",
            )
        elif status == "running":
            add(gate, "FAIL", what, f"stage {name} did not finish (killed?)")
        elif invalid:
            add(gate, "FAIL", what, _json_names(invalid) + " not valid JSON")
        elif not present and stage.pending:
            add(gate, "pending", f"stage {name}", stage.pending)
        elif lacking:
            if status == "absent":
                why = "its script is absent"
            elif present:
                why = f"only {_json_names(present)} there"
            else:
                why = "not run"
            add(gate, "FAIL", what, f"missing: no {_json_names(lacking)} ({why})")
    # 2. exact-result checks of the stages that are there
    for check in CHECKS:
        data = files.get(check.file)
        if FILE_STAGE[check.file] not in selected or not isinstance(data, dict):
            continue
        ok, value, message = check.test(data)
        add(
            check.name,
            "pass" if ok else "FAIL",
            check.what,
            "" if ok else f"{check.file}.json: {message}",
            value=value,
        )
    # 3. which GPU, which baseline
    found = devices(files)
    names = sorted(set(found.values()))
    device = found.get("install") or (names[0] if names else None)
    if len(names) > 1:
        add(
            "device",
            "FAIL",
            "every stage ran on one GPU model",
            "results from different GPUs: "
            + ", ".join(f"{f}.json {n!r}" for f, n in sorted(found.items())),
        )
    # the metrics of the stages gated; those of a stage outside the CI (bench) only
    # where the run has its file
    gated = [
        m
        for m in METRICS
        if FILE_STAGE[METRICS[m].file] in selected
        and (FILE_STAGE[METRICS[m].file] in CI_STAGES or METRICS[m].file in files)
    ]
    gated = gated if metrics else []
    base, base_file = None, baseline
    if base_file is None and device:
        base_file = baseline_path(device)
    if gated:
        what = "a baseline for this GPU model"
        if base_file is None:
            add(
                "baseline",
                "FAIL",
                what,
                "no GPU named in the run's JSON (install.json device): no baseline",
            )
        elif not base_file.exists():
            add(
                "baseline",
                "FAIL",
                what,
                f"no {_rel(base_file)} for {device!r}: record a run, then "
                f"make gpu-baseline RUN=docs/gpu-runs/<date>",
            )
        else:
            try:
                base = load_baseline(base_file)
            except GateError as exc:
                add("baseline", "FAIL", what, str(exc))
            else:
                if device and base.get("gpu") and base["gpu"] != device:
                    add(
                        "baseline",
                        "FAIL",
                        what,
                        f"{_rel(base_file)} is for {base['gpu']!r}, the run ran on "
                        f"{device!r}",
                    )
                    base = None
    # 4. metrics against the baseline
    for name in gated:
        metric = METRICS[name]
        ref = ((base or {}).get("metrics", {}).get(name) or {}).get("value")
        data = files.get(metric.file)
        value = lookup(data, metric.path) if isinstance(data, dict) else MISSING
        row = dict(
            unit=metric.unit,
            baseline=ref,
            margin=metric.margin_text(),
            better=metric.better,
        )
        where = f"{metric.file}.json {'.'.join(metric.path)}"
        if not _number(value):
            why = (
                f"no {metric.file}.json"
                if not isinstance(data, dict)
                else f"no number at {where}"
            )
            if base is None or ref is None:
                add(
                    name,
                    "not gated",
                    metric.what,
                    f"not measured ({why})",
                    value=None,
                    **row,
                )
            else:
                add(name, "FAIL", metric.what, f"missing: {why}", value=None, **row)
            continue
        problem = first_request_problem(metric, data)
        value = round(float(value), 4)
        if base is None or ref is None:
            add(
                name,
                "not gated",
                metric.what,
                problem or ("no baseline" if base is None else "baseline null"),
                value=value,
                **row,
            )
            continue
        limit = metric.limit(ref)
        row["limit"] = round(limit, 4)
        worse = value > limit if metric.better == LOWER else value < limit
        if problem:
            add(name, "FAIL", metric.what, f"{where}: {problem}", value=value, **row)
        elif worse:
            sign, cmp = ("+", ">") if metric.better == LOWER else ("-", "<")
            add(
                name,
                "FAIL",
                metric.what,
                f"regression: {value:g} {metric.unit} {cmp} {limit:.4g} "
                f"{metric.unit} allowed (baseline {ref:g} {sign} "
                f"{metric.margin_text()})",
                value=value,
                **row,
            )
        else:
            add(name, "pass", metric.what, value=value, **row)

    runs = stages.get("runs") or []
    install = files.get("install") if isinstance(files.get("install"), dict) else {}
    return {
        "result": "fail" if failures else "pass",
        "run": str(run),
        "device": device,
        "gpu_count": install.get("gpu_count"),
        "baseline": _rel(base_file) if base_file else None,
        "date": runs[0].get("date") if runs else None,
        "commit": runs[-1].get("commit") if runs else None,
        "runs": runs,
        "stages": stages.get("stages") or {},
        "install": install,
        "files": sorted(
            {p.name for p in run.glob("*.json")} - {"summary.json"} | {"gates.json"}
        ),
        "counts": {
            s: sum(g["status"] == s for g in gates)
            for s in ("pass", "FAIL", "not gated", "pending")
        },
        "gates": gates,
        "failures": failures,
    }


def _json_names(stems) -> str:
    return ", ".join(f"{stem}.json" for stem in stems)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _rel(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


# ------------------------------------------------------------------------ markdown
def _cards(count) -> str:
    words = {1: "one card", 2: "two cards", 4: "four cards", 8: "eight cards"}
    return words.get(count, f"{count} cards") if count else "cards not recorded"


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_markdown(report: dict, raw_dir: Optional[str] = None) -> str:
    """A docs/gpu-runs.md entry: heading, code, command, stages, raw files, gates."""
    date = report.get("date") or _dt.date.today().isoformat()
    raw_dir = raw_dir or f"docs/gpu-runs/{date}/"
    install = report.get("install") or {}
    device = report.get("device") or "GPU not recorded"
    lines = [
        f"## {date}: {device} ({_cards(report.get('gpu_count'))}), GPU CI gates",
        "",
    ]
    dev = any(r.get("overlay_dev") for r in report.get("runs", []))
    code = f"- Code: commit `{report.get('commit') or 'not recorded'}`"
    if install.get("sglang_version"):
        code += f"; sglang `{install['sglang_version']}` from the bundle"
        code += (
            ", the overlay and gpu_carry/series copied over it (`QSV_OVERLAY_DEV=1`)"
            if dev
            else " (`make wheelhouse`)"
        )
    host = [
        f"{install['cpu_count']} cores" if install.get("cpu_count") else None,
        f"torch {install['torch']}" if install.get("torch") else None,
        f"Python {install['python']}" if install.get("python") else None,
    ]
    host = [h for h in host if h]
    lines.append(code + (f". Host: {', '.join(host)}." if host else "."))
    commands = [r.get("command") for r in report.get("runs", []) if r.get("command")]
    if commands:
        lines += [
            "- Command" + ("s, one warm machine:" if len(commands) > 1 else ":"),
            "",
        ]
        lines += ["  ```bash"] + [f"  {c}" for c in commands] + ["  ```", ""]
    stages = report.get("stages") or {}
    if stages:
        parts = []
        for name, entry in stages.items():
            text = f"{name} {entry.get('status')}"
            if entry.get("seconds") is not None and entry.get("status") != "absent":
                text += f" in {entry['seconds']} s"
            parts.append(text)
        lines.append("- Stages: " + ", ".join(parts) + ".")
    files = ", ".join(f"`{f}`" for f in report.get("files", []))
    lines.append(f"- Raw results in `{raw_dir}`: {files}.")
    counts = report.get("counts", {})
    lines.append(
        f"- Gates (ci/gpu/gates.py) against "
        f"`{report.get('baseline') or 'no baseline'}`: "
        f"**{report['result']}** ({counts.get('pass', 0)} passed, "
        f"{counts.get('FAIL', 0)} failed, {counts.get('not gated', 0)} not gated, "
        f"{counts.get('pending', 0)} pending)."
    )
    lines += [
        "",
        "  | gate | what | measured | baseline | allowed | result |",
        "  | --- | --- | --- | --- | --- | --- |",
    ]
    for g in report["gates"]:
        unit = f" {g['unit']}" if g.get("unit") else ""
        allowed = ""
        if g.get("limit") is not None:
            cmp = "<=" if g.get("better") == LOWER else ">="
            allowed = f"{cmp} {g['limit']:.4g}{unit} ({g['margin']})"
        result = g["status"] + (f": {g['message']}" if g.get("message") else "")
        cells = [
            g["gate"],
            g["what"],
            _fmt(g.get("value")) + (unit if g.get("value") is not None else ""),
            _fmt(g.get("baseline")) + (unit if g.get("baseline") is not None else ""),
            allowed,
            result.replace("|", "/"),
        ]
        lines.append("  | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ baseline
def update_baseline(
    run: Path,
    out: Optional[Path] = None,
    commit: Optional[str] = None,
    date: Optional[str] = None,
) -> tuple[Path, list]:
    """Write the baseline of the run's GPU from its metrics; returns (path, changes).

    Metrics the run measured replace the baseline's values; the others keep their
    entry (null for a new baseline). A run whose exact checks fail, or whose "first
    request" was served from the cache, is refused. Nothing is committed.
    """
    files, stages = read_run(run)
    report = check_run(run, metrics=False)
    broken = [
        f
        for g, f in ((g, g.get("message", "")) for g in report["gates"])
        if g["status"] == "FAIL" and g["gate"] in {c.name for c in CHECKS}
    ]
    if broken:
        raise GateError(
            f"{run}: the run's exact checks fail, it cannot be a baseline:\n  "
            + "\n  ".join(broken)
        )
    found = devices(files)
    if len(set(found.values())) != 1:
        raise GateError(
            f"{run}: expected one GPU model in the run, found {found or 'none'}"
        )
    device = next(iter(found.values()))
    out = out or baseline_path(device)
    runs = stages.get("runs") or []
    commit = commit or (runs[-1].get("commit") if runs else None) or "unknown"
    date = date or (runs[0].get("date") if runs else None) or _dir_date(run)
    old = load_json(out) if out.exists() else {}
    old_metrics = old.get("metrics", {}) if isinstance(old, dict) else {}
    metrics, changes = {}, []
    for name, metric in METRICS.items():
        prior = old_metrics.get(name)
        prior_value = prior.get("value") if isinstance(prior, dict) else None
        data = files.get(metric.file)
        value = lookup(data, metric.path) if isinstance(data, dict) else MISSING
        usable = _number(value)
        problem = first_request_problem(metric, data) if usable else None
        if usable and not problem and value > 0:
            value = round(float(value), 4)
            metrics[name] = {
                "value": value,
                "source": f"{_rel(run)}/{metric.file}.json "
                f"{'.'.join(metric.path)}; commit {commit}, {date}",
            }
            if value != prior_value:
                changes.append((name, prior_value, value))
        else:
            metrics[name] = (
                prior
                if isinstance(prior, dict)
                else {"value": None, "source": "not yet measured"}
            )
            if problem:
                print(f"gates: {name}: not taken: {problem}", file=sys.stderr)
    dropped = [name for name in old_metrics if name not in METRICS]
    changes += [(name, old_metrics[name].get("value"), "dropped") for name in dropped]
    baseline = {
        "gpu": device,
        "about": (
            "Baseline of the GPU CI gates (ci/gpu/gates.py) for this GPU model: "
            "value null = not yet gated. Written by make gpu-baseline RUN=<recorded "
            "run>; review the diff and commit it deliberately."
        ),
        "metrics": metrics,
    }
    out.write_text(json.dumps(baseline, indent=1) + "\n")
    return out, changes


def _dir_date(run: Path) -> str:
    match = re.search(r"\d{4}-\d{2}-\d{2}", str(run.resolve()))
    return match.group(0) if match else "date unknown"


# -------------------------------------------------------------------------- record
def record_run(
    run: Path, name: Optional[str] = None, docs: Path = GPU_RUNS_DIR
) -> Path:
    """Copy the run's JSON (not summary.json) to <docs>/<name>/ and put its entry at
    the top of the runs in <docs>/../gpu-runs.md (before the first dated section)."""
    report_path = run / "gates.json"
    if not report_path.exists():
        raise GateError(f"{run}: no gates.json (run the gates stage first)")
    report = load_json(report_path)
    name = name or report.get("date") or _dt.date.today().isoformat()
    dest = docs / name
    if dest.exists() and any(dest.iterdir()):
        raise GateError(f"{dest} exists: choose another --name (e.g. {name}-2)")
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(run.glob("*.json")):
        if path.name != "summary.json":  # every other file again, in one
            shutil.copy2(path, dest / path.name)
    md = docs.parent / "gpu-runs.md"
    block = render_markdown(report, raw_dir=f"docs/gpu-runs/{name}/")
    text = md.read_text() if md.exists() else "# GPU runs\n\n"
    match = re.search(r"^## \d{4}-\d{2}-\d{2}", text, flags=re.M)
    at = match.start() if match else len(text)
    md.write_text(text[:at] + block + "\n" + text[at:])
    return dest


# ---------------------------------------------------------------------------- note
def note(
    out: Path,
    stage: Optional[str] = None,
    status: Optional[str] = None,
    seconds: Optional[int] = None,
    exit_code: Optional[int] = None,
    begin: Optional[list] = None,
) -> None:
    """run.sh's bookkeeping in stages.json, kept across calls with the same $OUT; a
    stage starting drops its old JSON (every file it writes)."""
    unknown = [s for s in (begin or []) + [stage] if s and s not in (*STAGES, "gates")]
    if unknown:
        raise GateError(
            f"unknown stage {', '.join(unknown)}; the stages: {' '.join(STAGES)} gates"
        )
    out.mkdir(parents=True, exist_ok=True)
    path = out / "stages.json"
    data = load_json(path) if path.exists() else {}  # accumulates over run.sh calls
    data.setdefault("runs", [])
    data.setdefault("stages", {})
    now = _dt.datetime.now(_dt.timezone.utc)
    if begin is not None:
        overlay = os.environ.get("QSV_OVERLAY_DEV", "0") == "1"
        command = ("QSV_OVERLAY_DEV=1 " if overlay else "") + " ".join(
            ["bash ci/gpu/run.sh", *begin]
        )
        data["runs"].append(
            {
                "date": now.date().isoformat(),
                "started": now.isoformat(timespec="seconds"),
                "commit": os.environ.get("QSV_COMMIT") or _git_commit(),
                "overlay_dev": overlay,
                "command": command,
            }
        )
    if stage is not None:
        if status == "running" and stage in STAGES:
            for file in STAGES[stage].files:
                stale = out / f"{file}.json"
                if stale.exists():
                    stale.unlink()
        entry = {"status": status, "finished": now.isoformat(timespec="seconds")}
        if seconds is not None:
            entry["seconds"] = seconds
        if exit_code is not None:
            entry["exit"] = exit_code
        data["stages"].pop(stage, None)  # keep the order in which stages last ran
        data["stages"][stage] = entry
    path.write_text(json.dumps(data, indent=1) + "\n")


def _git_commit() -> Optional[str]:
    """The repository's HEAD, where the tree is a git checkout (the device's copy of
    the working tree is not: set QSV_COMMIT there)."""
    import subprocess

    try:
        proc = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short=7", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return (proc.stdout.strip() or None) if proc.returncode == 0 else None


# ---------------------------------------------------------------------------- main
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="ci/gpu/gates.py",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="gate a run (exit 1 when a gate fails)")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--baseline", type=Path, help="default: ci/gpu/baseline-<gpu>.json")
    p.add_argument("--only", help="comma-separated stages (a partial development run)")
    p = sub.add_parser("baseline", help="write ci/gpu/baseline-<gpu>.json from a run")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--out", type=Path)
    p.add_argument("--commit")
    p.add_argument("--date")
    p = sub.add_parser("record", help="copy a run into docs/gpu-runs/ + gpu-runs.md")
    p.add_argument("--run", type=Path, required=True)
    p.add_argument("--name", help="directory name (default: the run's date)")
    p = sub.add_parser("stages", help="print the CI's stages")
    p.add_argument(
        "--part",
        type=int,
        choices=range(1, len(CI_PARTS) + 1),
        help="only those of one part of the CI (run.sh ci --part N)",
    )
    p.add_argument(
        "--gates",
        action="store_true",
        help="and 'gates' where the run ends (all of them, or the last part)",
    )
    p = sub.add_parser("note", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stage")
    p.add_argument("--status")
    p.add_argument("--seconds", type=int)
    p.add_argument("--exit", type=int, dest="exit_code")
    p.add_argument("--begin", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    try:
        if args.command == "stages":
            stages = CI_PARTS[args.part - 1] if args.part else CI_STAGES
            last = args.part in (None, len(CI_PARTS))
            print(" ".join(stages + (("gates",) if args.gates and last else ())))
        elif args.command == "note":
            note(
                args.out,
                args.stage,
                args.status,
                args.seconds,
                args.exit_code,
                args.begin,
            )
        elif args.command == "check":
            only = None
            if args.only:
                only = {s.strip() for s in args.only.split(",") if s.strip()}
                unknown = sorted(only - set(STAGES))
                if unknown:
                    raise GateError(f"unknown stages {unknown}; known: {list(STAGES)}")
            report = check_run(args.run, args.baseline, only)
            (args.run / "gates.json").write_text(json.dumps(report, indent=1) + "\n")
            markdown = render_markdown(report)
            (args.run / "gates.md").write_text(markdown)
            print(markdown)
            for failure in report["failures"]:
                print(f"GATE FAILED: {failure}")
            print(f"gates: {report['result']} ({report['counts']})")
            return 1 if report["failures"] else 0
        elif args.command == "baseline":
            path, changes = update_baseline(args.run, args.out, args.commit, args.date)
            print(f"wrote {_rel(path)}")
            for name, old, new in changes:
                delta = ""
                if isinstance(old, (int, float)) and isinstance(new, (int, float)):
                    delta = f" ({(new - old) / old:+.1%})"
                old, new = ("null" if v is None else _fmt(v) for v in (old, new))
                print(f"  {name}: {old} -> {new}{delta}")
            if not changes:
                print("  no change")
            print(f"not committed: review `git diff {_rel(path)}` and commit it")
        elif args.command == "record":
            dest = record_run(args.run, args.name)
            print(f"recorded {_rel(dest)}/ and its entry in docs/gpu-runs.md")
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
