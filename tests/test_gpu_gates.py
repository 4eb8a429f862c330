"""The GPU CI gates (ci/gpu/gates.py) on the JSON of recorded GPU runs.

The runs are built from copies of docs/gpu-runs/ (the H200 run of 2026-12-01, the
H100 runs of 2026-11-27), changed by each test where it needs a failure. The limits
the tests expect are computed here from the margins the docs state (docs/gpu.md:
time to first token 15% or 0.05 s, follow-up turn 25% or 0.03 s, decode 5%), not
by the code under test. The last test runs ci/gpu/run.sh itself, with stand-in
stage scripts and a stand-in bundle, in a copy of ci/gpu/.
"""

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from conftest import PROJECT_ROOT

GATES_PY = PROJECT_ROOT / "ci" / "gpu" / "gates.py"
H200 = PROJECT_ROOT / "docs" / "gpu-runs" / "2026-12-01"
H100 = PROJECT_ROOT / "docs" / "gpu-runs" / "2026-11-27"
H200_BASELINE = PROJECT_ROOT / "ci" / "gpu" / "baseline-h200.json"


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gates = _load("qsv_gpu_gates", GATES_PY)


def read(path):
    return json.loads(Path(path).read_text())


def write(path, data):
    Path(path).write_text(json.dumps(data, indent=1))


def edit(run, stem, change):
    data = read(run / f"{stem}.json")
    change(data)
    write(run / f"{stem}.json", data)


def recorded_h200_run(run: Path) -> Path:
    """A complete H200 run from the recorded JSON.

    parity, checkpoint and visual_path: 2026-12-01 as recorded. server.json: the
    H100 clean-bundle run (the 2026-12-01 session did not run the server stage; the
    file names no GPU). ttft.json: the benchmark's own output of 2026-12-01, per
    clip from the run whose warm-up used another clip (the baseline's sources).
    install.json: what ci/gpu/install.py writes, with 2026-12-01's imports.json.
    """
    run.mkdir(parents=True)
    for stem in ("parity", "checkpoint", "visual_path"):
        shutil.copy(H200 / f"{stem}.json", run)
    shutil.copy(H100 / "clean-bundle" / "server.json", run)
    imports = read(H200 / "imports.json")
    write(
        run / "install.json",
        {
            "device": "NVIDIA H200",
            "gpu_count": 1,
            "sglang_version": "0.5.17+qsv.7",
            "sglang_from_site": True,
            "imports": {"problems": imports["problems"], "missing": imports["missing"]},
            "torch": "2.11.0+cu130",
            "python": "3.12.3",
            "cpu_count": 16,
        },
    )
    ttft60 = read(H200 / "ttft60.json")
    frame_cache = read(H200 / "ttft_frame_cache.json")
    ttft = read(H200 / "ttft.json")
    write(
        run / "ttft.json",
        {
            "warm": ttft60["warm"],
            "60f": ttft60["60f"],
            "420f_360p": frame_cache["420f_360p"],
            "420f_720p": ttft["420f_720p"],
        },
    )
    return run


@pytest.fixture
def run(tmp_path):
    return recorded_h200_run(tmp_path / "run")


def check(run, *extra):
    """The CLI, as run.sh's gates stage calls it: (exit status, gates.json, stdout)."""
    proc = subprocess.run(
        [sys.executable, str(GATES_PY), "check", "--run", str(run), *map(str, extra)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.returncode, read(run / "gates.json"), proc.stdout


def by_gate(report):
    return {g["gate"]: g for g in report["gates"]}


def failed(report):
    return {g["gate"] for g in report["gates"] if g["status"] == "FAIL"}


# ------------------------------------------------------------------ a passing run
def test_the_recorded_h200_run_passes_against_the_committed_baseline(run):
    rc, report, out = check(run)
    assert rc == 0, out
    assert report["result"] == "pass" and report["failures"] == []
    assert report["device"] == "NVIDIA H200"
    assert report["baseline"] == "ci/gpu/baseline-h200.json"
    gate = by_gate(report)
    for name in (
        "install_imports",
        "install_sglang",
        "checkpoint",
        "parity_ids",
        "parity_tokens",
        "parity_logprobs",
        "parity_top1",
        "parity_repeat",
        "server",
        "visual_path",
    ):
        assert gate[name]["status"] == "pass", gate[name]
    assert gate["parity_logprobs"]["value"] == pytest.approx(0.1877, abs=1e-4)
    # the four gated figures, exactly the recorded values
    assert gate["ttft_60f_s"]["value"] == 0.4555
    assert gate["ttft_420f_s"]["value"] == 1.7395
    assert gate["ttft_420f_720p_s"]["value"] == 1.9263
    assert gate["follow_up_420f_s"]["value"] == 0.0587
    for name in ("ttft_60f_s", "ttft_420f_s", "ttft_420f_720p_s", "follow_up_420f_s"):
        assert gate[name]["status"] == "pass"
    # not yet measured on an H200: null in the baseline, absent here -> not gated
    for name in ("stall_max_gap_s", "stall_p99_gap_s", "decode_tok_s_batch1"):
        assert gate[name]["status"] == "not gated"
    assert gate["stage soak"]["status"] == "pending"
    # the markdown block: a docs/gpu-runs.md entry
    md = (run / "gates.md").read_text()
    assert md.startswith("## ") and "NVIDIA H200 (one card), GPU CI gates" in md
    assert "against `ci/gpu/baseline-h200.json`: **pass**" in md
    assert "| ttft_420f_s |" in md and "| 1.74 s |" in md
    assert "<= 2 s (15% or 0.05 s)" in md


# ---------------------------------------------------------------------- parity
@pytest.mark.parametrize(
    "change, gate, words",
    [
        (
            lambda d: d.update(ids_equal=False, first_id_mismatch=17),
            "parity_ids",
            ["prompt ids differ", "position 17 of 896"],
        ),
        # the file's flag says equal, the tokens say otherwise: the lists decide
        (
            lambda d: d["tokens_sglang"].__setitem__(5, 1234),
            "parity_tokens",
            ["greedy tokens differ", "first difference at token 5"],
        ),
        (
            lambda d: d.update(tokens_equal=False),
            "parity_tokens",
            ["tokens_equal=False"],
        ),
        (
            lambda d: d.update(first_token_top20_max_abs_logprob_diff=0.2),
            "parity_logprobs",
            ["0.2000 > 0.19"],
        ),
        (
            lambda d: d.update(first_token_top1_sglang=11),
            "parity_top1",
            ["top-1 11", "reference's 85195"],
        ),
    ],
    ids=["ids", "tokens", "tokens-flag", "logprobs", "top1"],
)
def test_a_parity_failure_fails_the_run_with_a_clear_message(run, change, gate, words):
    edit(run, "parity", change)
    rc, report, out = check(run)
    assert rc == 1
    assert failed(report) == {gate}
    (failure,) = report["failures"]
    assert failure.startswith(f"{gate}: parity.json: ")
    for word in words:
        assert word in failure
    assert f"GATE FAILED: {failure}" in out


def test_the_logprob_tolerance_is_inclusive(run):
    edit(run, "parity", lambda d: d.update(first_token_top20_max_abs_logprob_diff=0.19))
    rc, report, _ = check(run)
    assert rc == 0 and by_gate(report)["parity_logprobs"]["status"] == "pass"


# ----------------------------------------------------------------- regressions
def set_ttft(run, clip, request, value):
    edit(run, "ttft", lambda d: d[clip][request].update(ttft_s=value))


def test_a_ttft_regression_just_over_the_margin_fails_just_under_passes(run):
    baseline = read(H200_BASELINE)["metrics"]["ttft_420f_s"]["value"]
    limit = baseline * 1.15  # the stated margin: 15% (more than 0.05 s here)
    assert limit - baseline > 0.05
    set_ttft(run, "420f_360p", "first", round(limit + 0.001, 4))
    rc, report, _ = check(run)
    assert rc == 1 and failed(report) == {"ttft_420f_s"}
    (failure,) = report["failures"]
    assert "regression" in failure and f"baseline {baseline:g} + 15%" in failure
    assert by_gate(report)["ttft_420f_s"]["limit"] == pytest.approx(limit, abs=1e-4)

    set_ttft(run, "420f_360p", "first", round(limit - 0.001, 4))
    rc, report, _ = check(run)
    assert rc == 0 and by_gate(report)["ttft_420f_s"]["status"] == "pass"


def test_a_small_figure_gets_the_absolute_margin(run):
    baseline = read(H200_BASELINE)["metrics"]["follow_up_420f_s"]["value"]
    limit = baseline + 0.03  # 25% of 0.0587 s is less than the stated 0.03 s
    assert baseline * 0.25 < 0.03
    set_ttft(run, "420f_360p", "follow_up", round(limit + 0.0005, 4))
    rc, report, _ = check(run)
    assert rc == 1 and failed(report) == {"follow_up_420f_s"}
    set_ttft(run, "420f_360p", "follow_up", round(limit - 0.0005, 4))
    rc, _, _ = check(run)
    assert rc == 0


def test_higher_is_better_for_decode_speed(run, tmp_path):
    """bench.json of the H100 run as if measured here; a baseline with decode values."""
    bench = read(H100 / "bench.json")
    bench["host"]["device"] = "NVIDIA H200"
    write(run / "bench.json", bench)
    measured = bench["sglang"]["decode_tok_s_batch1"]  # 164.85
    baseline = read(H200_BASELINE)
    path = tmp_path / "baseline.json"
    for value, expected in ((175.0, 1), (173.0, 0)):  # limits 166.25 and 164.35
        assert (measured < value * 0.95) == bool(expected)
        baseline["metrics"]["decode_tok_s_batch1"]["value"] = value
        write(path, baseline)
        rc, report, _ = check(run, "--baseline", path)
        assert rc == expected
        gate = by_gate(report)["decode_tok_s_batch1"]
        assert gate["value"] == round(measured, 4)
        assert gate["status"] == ("FAIL" if expected else "pass")
        if expected:
            assert f"< {value * 0.95:.4g} tok/s allowed" in report["failures"][0]
    # the other bench figures stay ungated (null), but are shown
    assert by_gate(report)["concurrent_requests_per_s"]["status"] == "not gated"
    assert by_gate(report)["concurrent_requests_per_s"]["value"] == pytest.approx(
        1.5627, abs=1e-4
    )


# -------------------------------------------------------------- missing stages
def test_a_missing_benchmark_stage_fails_its_gated_metrics(run):
    (run / "ttft.json").unlink()
    rc, report, _ = check(run)
    assert rc == 1
    assert failed(report) == {
        "ttft_60f_s",
        "ttft_420f_s",
        "ttft_420f_720p_s",
        "follow_up_420f_s",
    }
    assert all("missing: no ttft.json" in f for f in report["failures"])


def test_a_missing_or_failed_exact_stage_fails(run):
    (run / "parity.json").unlink()
    rc, report, _ = check(run)
    assert rc == 1 and failed(report) == {"stage parity"}
    assert report["failures"] == ["stage parity: missing: no parity.json (not run)"]

    # run.sh's record says it failed: the log is named
    gates.note(run, stage="parity", status="FAILED", seconds=95, exit_code=1)
    rc, report, _ = check(run)
    assert rc == 1
    assert report["failures"] == [
        "stage parity: stage parity failed (exit 1; see parity.log)"
    ]


def test_a_stage_killed_mid_run_fails_even_when_not_required(run):
    gates.note(run, stage="bench", status="running")
    rc, report, _ = check(run)
    assert rc == 1 and failed(report) == {"stage bench"}
    assert "did not finish" in report["failures"][0]


def test_a_first_request_served_from_the_cache_is_not_a_measurement(run):
    """ttft.json of 2026-12-01 as recorded: the warm-up used the 60-frame clip."""
    shutil.copy(H200 / "ttft.json", run / "ttft.json")
    rc, report, _ = check(run)
    assert rc == 1
    assert "ttft_60f_s" in failed(report)
    message = by_gate(report)["ttft_60f_s"]["message"]
    assert "895 of 896 prompt tokens came from the cache" in message


def test_only_gates_the_stages_asked_for(run):
    (run / "ttft.json").unlink()
    (run / "server.json").unlink()
    rc, report, _ = check(run, "--only", "parity")
    assert rc == 0
    assert {g["gate"] for g in report["gates"]} == {
        "parity_ids",
        "parity_tokens",
        "parity_logprobs",
        "parity_top1",
        "parity_repeat",
    }


# ------------------------------------------------------------------- baselines
def test_a_baseline_must_list_every_metric(run, tmp_path):
    baseline = read(H200_BASELINE)
    del baseline["metrics"]["stall_p99_gap_s"]
    write(tmp_path / "b.json", baseline)
    rc, report, _ = check(run, "--baseline", tmp_path / "b.json")
    assert rc == 1 and "baseline" in failed(report)
    assert "missing ['stall_p99_gap_s']" in by_gate(report)["baseline"]["message"]


def test_another_gpu_model_needs_its_own_baseline(run):
    for stem in ("install", "parity", "visual_path"):
        edit(run, stem, lambda d: d.update(device="NVIDIA B200"))
    rc, report, _ = check(run)
    assert rc == 1 and failed(report) == {"baseline"}
    assert "no ci/gpu/baseline-b200.json for 'NVIDIA B200'" in report["failures"][0]
    assert by_gate(report)["ttft_420f_s"]["status"] == "not gated"


def test_results_of_two_gpu_models_fail(run):
    shutil.copy(H100 / "bench.json", run / "bench.json")
    rc, report, _ = check(run)
    assert rc == 1 and "device" in failed(report)
    assert "bench.json 'NVIDIA H100 80GB HBM3'" in by_gate(report)["device"]["message"]


def test_gpu_slugs():
    assert gates.gpu_slug("NVIDIA H200") == "h200"
    assert gates.gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gates.gpu_slug("NVIDIA A100-SXM4-80GB") == "a100-sxm4-80gb"


def baseline_cli(*args):
    return subprocess.run(
        [sys.executable, str(GATES_PY), "baseline", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_gpu_baseline_from_the_recorded_h100_run(tmp_path):
    out = tmp_path / "baseline-h100.json"
    proc = baseline_cli("--run", H100, "--out", out, "--commit", "f696642")
    assert proc.returncode == 0, proc.stderr
    bench = read(H100 / "bench.json")["sglang"]
    written = read(out)
    assert written["gpu"] == "NVIDIA H100 80GB HBM3"
    metrics = written["metrics"]
    assert set(metrics) == set(read(H200_BASELINE)["metrics"])
    assert metrics["decode_tok_s_batch1"]["value"] == round(
        bench["decode_tok_s_batch1"], 4
    )
    assert metrics["concurrent_requests_per_s"]["value"] == round(
        bench["concurrent_requests_per_s"], 4
    )
    assert "commit f696642, 2026-11-27" in metrics["decode_tok_s_batch1"]["source"]
    assert metrics["ttft_420f_s"]["value"] is None  # that run had no ttft stage
    assert "decode_tok_s_batch1: null -> 164.8" in proc.stdout
    assert "not committed" in proc.stdout
    # the baseline gates the run it came from
    rc, report, _ = check(H100_copy(tmp_path), "--baseline", out)
    assert by_gate(report)["decode_tok_s_batch1"]["status"] == "pass"


def H100_copy(tmp_path):
    run = tmp_path / "h100-run"
    shutil.copytree(H100, run, ignore=shutil.ignore_patterns("clean-bundle", "triton*"))
    return run


def test_make_gpu_baseline_updates_measured_values_and_keeps_the_rest(run, tmp_path):
    out = tmp_path / "baseline-h200.json"
    shutil.copy(H200_BASELINE, out)
    set_ttft(run, "420f_360p", "first", 1.8)
    gates.note(run, begin=["ci"])
    proc = baseline_cli("--run", run, "--out", out)
    assert proc.returncode == 0, proc.stderr
    old, new = read(H200_BASELINE)["metrics"], read(out)["metrics"]
    assert new["ttft_420f_s"]["value"] == 1.8
    assert "ttft.json 420f_360p.first.ttft_s" in new["ttft_420f_s"]["source"]
    assert "ttft_420f_s: 1.74 -> 1.8 (+3.5%)" in proc.stdout
    for name in ("ttft_60f_s", "ttft_420f_720p_s", "follow_up_420f_s"):
        assert new[name]["value"] == old[name]["value"]  # the same figures
    for name in ("stall_max_gap_s", "decode_tok_s_batch1"):
        assert new[name] == old[name]  # not in the run: kept as they were (null)
    changed = [line for line in proc.stdout.splitlines() if " -> " in line]
    assert len(changed) == 1


def test_make_gpu_baseline_refuses_a_broken_run_and_a_cached_first_request(
    run, tmp_path
):
    out = tmp_path / "b.json"
    edit(run, "parity", lambda d: d.update(ids_equal=False))
    proc = baseline_cli("--run", run, "--out", out)
    assert proc.returncode == 2 and not out.exists()
    assert "exact checks fail" in proc.stderr and "prompt ids differ" in proc.stderr

    proc = baseline_cli("--run", H200, "--out", out)  # its ttft.json 60f is cached
    assert proc.returncode == 0
    assert read(out)["metrics"]["ttft_60f_s"]["value"] is None
    assert "ttft_60f_s: not taken: not a new video" in proc.stderr


# ---------------------------------------------------------------------- record
def test_record_copies_the_run_and_adds_its_entry_to_gpu_runs_md(run, tmp_path):
    gates.note(run, begin=["ci"])
    for stage in ("install", "make_checkpoint", "parity", "server"):
        gates.note(run, stage=stage, status="ok", seconds=30, exit_code=0)
    gates.note(run, stage="soak", status="absent", seconds=0, exit_code=0)
    rc, report, _ = check(run)
    assert rc == 0
    docs = tmp_path / "docs"
    (docs / "gpu-runs").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "docs" / "gpu-runs.md", docs / "gpu-runs.md")
    before = (docs / "gpu-runs.md").read_text()
    (run / "summary.json").write_text("{}")  # run.sh's aggregate: not recorded
    dest = gates.record_run(run, name="2027-01-02", docs=docs / "gpu-runs")
    assert sorted(p.name for p in dest.iterdir()) == sorted(
        p.name for p in run.glob("*.json") if p.name != "summary.json"
    )
    assert "gates.json" in {p.name for p in dest.iterdir()}
    text = (docs / "gpu-runs.md").read_text()
    entry = text.index("## " + report["date"] + ": NVIDIA H200 (one card), GPU CI")
    older = text.index("## 2026-12-01: NVIDIA H200 (one card), the visual path")
    assert text.index("## How a run is made") < entry < older
    assert "- Raw results in `docs/gpu-runs/2027-01-02/`" in text
    assert "bash ci/gpu/run.sh ci" in text
    assert "- Stages: install ok in 30 s, make_checkpoint ok in 30 s" in text
    assert (run / "gates.md").read_text().split("- Raw")[0] in text  # the same block
    assert len(text) > len(before)
    with pytest.raises(gates.GateError, match="exists"):
        gates.record_run(run, name="2027-01-02", docs=docs / "gpu-runs")


# ------------------------------------------------------- one schema for all files
def test_the_metric_paths_are_the_benchmarks_output_keys():
    """Each METRICS path exists in the recorded output of the script that writes it
    (ttft: benchmarks/bench_video_ttft.py; bench: bench_quicksviewer.py), and
    ci/gpu/ttft.py names its clips as the paths do."""
    sys.path.insert(0, str(PROJECT_ROOT / "ci" / "gpu"))
    try:
        ttft_stage = _load("qsv_ttft_stage", PROJECT_ROOT / "ci" / "gpu" / "ttft.py")
    finally:
        sys.path.remove(str(PROJECT_ROOT / "ci" / "gpu"))
    recorded = {
        "ttft": {
            **read(H200 / "ttft.json"),
            **read(H200 / "ttft_frame_cache.json"),
        },
        "bench": read(H100 / "bench.json"),
    }
    for name, metric in gates.METRICS.items():
        if metric.file in recorded:
            value = gates.lookup(recorded[metric.file], metric.path)
            assert isinstance(value, float), name
        if metric.file == "ttft":
            assert metric.path[0] in ttft_stage.CLIPS, name
    assert {gates.FILE_STAGE[m.file] for m in gates.METRICS.values()} <= set(
        gates.CI_STAGES
    )


def test_ci_stages_have_a_script_or_are_not_yet_gated():
    """A CI stage without a script is pending, or every baseline leaves its metrics
    null: the gates can pass on the current code, and no gate waits on nothing."""
    baselines = [read(p) for p in (PROJECT_ROOT / "ci" / "gpu").glob("baseline-*.json")]
    assert baselines
    for stage in gates.CI_STAGES:
        script = {"bench": "benchmarks/bench_quicksviewer.py"}.get(
            stage, f"ci/gpu/{stage}.py"
        )
        if (PROJECT_ROOT / script).exists():
            continue
        if gates.STAGES[stage].pending:
            continue
        file = gates.STAGES[stage].file
        for baseline in baselines:
            for name, metric in gates.METRICS.items():
                if metric.file == file:
                    assert baseline["metrics"][name]["value"] is None, (stage, name)
        assert not gates.STAGES[stage].required, stage


def test_the_committed_baselines_load():
    for path in (PROJECT_ROOT / "ci" / "gpu").glob("baseline-*.json"):
        data = gates.load_baseline(path)
        assert path.name == f"baseline-{gates.gpu_slug(data['gpu'])}.json"
        for entry in data["metrics"].values():
            assert entry["source"]


# ---------------------------------------------------------------- ci/gpu/run.sh
def fake_stage(path: Path, body: str):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "import json, os, shutil, sys\nfrom pathlib import Path\n"
        "OUT = Path(os.environ['OUT'])\n" + textwrap.dedent(body)
    )


def test_run_sh_ci_runs_every_stage_then_the_gates(tmp_path):
    """run.sh ci in a copy of ci/gpu/ with stand-ins for the stage scripts and the
    bundle: stages run in order, absent scripts are reported, a stale JSON of a
    stage that runs again is dropped, and the gates decide the exit status."""
    recorded = recorded_h200_run(tmp_path / "recorded")
    repo = tmp_path / "repo"
    (repo / "ci" / "gpu").mkdir(parents=True)
    for name in ("run.sh", "setup.sh", "gates.py", "baseline-h200.json"):
        shutil.copy(PROJECT_ROOT / "ci" / "gpu" / name, repo / "ci" / "gpu")
    # the bundle: install.sh + check_imports.py that only say what they did
    wheelhouse = tmp_path / "qsv-wheelhouse"
    wheelhouse.mkdir()
    (wheelhouse / "install.sh").write_text('mkdir -p "$1"; echo installed >&2\n')
    (wheelhouse / "check_imports.py").write_text(
        "import json, sys\n"
        "json.dump({'problems': [], 'missing': {}, 'round1': []},"
        " open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n"
    )
    (repo / "dist").mkdir()
    with tarfile.open(repo / "dist" / "qsv-wheelhouse-cp312-sm90.tar.xz", "w:xz") as t:
        t.add(wheelhouse, arcname="qsv-wheelhouse")
    gpu = repo / "ci" / "gpu"
    fake_stage(
        gpu / "install.py",
        f"""
        data = json.loads(Path({str(recorded / 'install.json')!r}).read_text())
        data['imports'] = json.loads((OUT / 'imports.json').read_text())
        (OUT / 'install.json').write_text(json.dumps(data))
        """,
    )
    for stage, stem in (("make_checkpoint", "checkpoint"), ("parity", "parity"),
                        ("server", "server"), ("ttft", "ttft")):  # fmt: skip
        fake_stage(
            gpu / f"{stage}.py",
            f"shutil.copy({str(recorded / f'{stem}.json')!r}, OUT)\n",
        )
    out = tmp_path / "out"
    out.mkdir()
    (out / "server.json").write_text('{"ok": false}')  # stale, from an earlier run
    # run.sh and setup.sh call python3: this interpreter
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python3").symlink_to(sys.executable)
    env = dict(
        os.environ,
        OUT=str(out),
        QSV_SITE=str(tmp_path / "site"),
        QSV_COMMIT="abc1234",
        PATH=f"{bindir}:{os.environ['PATH']}",
    )
    env.pop("QSV_OVERLAY_DEV", None)
    proc = subprocess.run(
        ["bash", "ci/gpu/run.sh", "ci"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    stages = read(out / "stages.json")
    assert list(stages["stages"]) == list(gates.CI_STAGES)
    status = {name: entry["status"] for name, entry in stages["stages"].items()}
    assert status == {
        "install": "ok",
        "make_checkpoint": "ok",
        "parity": "ok",
        "server": "ok",
        "soak": "absent",
        "bench": "absent",
        "ttft": "ok",
        "stall": "absent",
    }
    (begin,) = stages["runs"]
    assert begin["commit"] == "abc1234"
    assert begin["command"] == "bash ci/gpu/run.sh " + " ".join(gates.CI_STAGES) + (
        " gates"
    )
    assert read(out / "server.json") == read(recorded / "server.json")
    bundle = repo / "dist" / "qsv-wheelhouse-cp312-sm90.tar.xz"
    marker = (tmp_path / "site" / ".qsv-installed").read_text().strip()
    assert marker == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert "installed" in (out / "setup.log").read_text()
    report = read(out / "gates.json")
    assert report["result"] == "pass" and report["commit"] == "abc1234"
    assert "soak: absent in 0 s (no ci/gpu/soak.py)" in proc.stdout
    assert "**pass**" in proc.stdout  # the gates' markdown is printed
    assert set(read(out / "summary.json")) >= {"parity", "ttft", "gates", "stages"}

    # a stage that fails: counted in the exit status, and the gates fail too
    fake_stage(gpu / "parity.py", "sys.exit(3)\n")
    proc = subprocess.run(
        ["bash", "ci/gpu/run.sh", "parity", "gates"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    stages = read(out / "stages.json")
    assert stages["stages"]["parity"] == {
        **stages["stages"]["parity"],
        "status": "FAILED",
        "exit": 3,
    }
    assert not (out / "parity.json").exists()  # the old one was dropped
    report = read(out / "gates.json")
    assert report["failures"] == [
        "stage parity: stage parity failed (exit 3; see parity.log)"
    ]
    assert len(stages["runs"]) == 2
    # the bundle was installed once: the second run found the marker of the same bundle
    assert "installed" not in (out / "setup.log").read_text()
