"""ci/cpu.sh records its run in build/ci/ (last-run.json, pytest.xml) for make pr.

The script runs for real in a scratch repository, with a stand-in ``make`` first on
PATH that logs its arguments, writes the JUnit report it is asked for, and fails
the call whose arguments are $FAIL_STAGE. The other release's setup, apply and
verify run beside the default release's tests, so their log lines may interleave
with that one's.
"""

import json
import os
import shutil
import subprocess
import time

from tests.helpers.project import PROJECT_ROOT, git
from tools.pr import ci_results, render_tests

FAKE_MAKE = """#!/usr/bin/env bash
echo "make $*" >> "$MAKE_LOG"
for arg in "$@"; do
    case $arg in
        JUNIT=*)
            cat > "${arg#JUNIT=}" <<'XML'
<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="5" time="12.5"><testcase classname="t" name="a"/><testcase classname="t" name="s"><skipped message="why not"/></testcase></testsuite></testsuites>
XML
            ;;
    esac
done
if [[ "$*" == "${SLOW_STAGE:-}" ]]; then
    echo "slow start: $*" >> "$MAKE_LOG"
    sleep 6
    echo "slow end: $*" >> "$MAKE_LOG"
fi
if [[ "$*" == "${FAIL_STAGE:-}" ]]; then
    # with a slow stage beside it: fail once that one has started (at most 10 s)
    for _ in $(seq 100); do
        [[ -z "${SLOW_STAGE:-}" ]] || grep -q "slow start" "$MAKE_LOG" && break
        sleep 0.1
    done
    exit 3
fi
exit 0
"""


def run_ci(tmp_path, fail_stage="", slow_stage=""):
    repo = tmp_path / "clone"
    (repo / "ci").mkdir(parents=True)
    shutil.copy(PROJECT_ROOT / "ci" / "cpu.sh", repo / "ci" / "cpu.sh")
    # the project's pins: the default release first, then each other one
    shutil.copy(PROJECT_ROOT / "pin.toml", repo / "pin.toml")
    (repo / ".gitignore").write_text("/build/\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(
        repo, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "ci"
    )
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "make").write_text(FAKE_MAKE)
    (bin_dir / "make").chmod(0o755)
    env = dict(
        os.environ,
        PATH=f"{bin_dir}:{os.environ['PATH']}",
        MAKE_LOG=str(tmp_path / "make.log"),
        FAIL_STAGE=fail_stage,
        SLOW_STAGE=slow_stage,
    )
    env.pop("PYTEST_ARGS", None)
    proc = subprocess.run(
        ["bash", "ci/cpu.sh"], cwd=repo, env=env, capture_output=True, text=True
    )
    return repo, proc


def test_a_passing_run_is_recorded(tmp_path):
    repo, proc = run_ci(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    record = json.loads((repo / "build/ci/last-run.json").read_text())
    assert record["commit"] == git(repo, "rev-parse", "HEAD")
    assert record["dirty"] is False and record["result"] == "passed"
    assert [s["name"] for s in record["stages"]] == [
        "setup",
        "apply",
        "verify",
        "check",
        "test",
        # the second pin: its venv, tree, verify and model tests
        "setup-0.5.23",
        "apply-0.5.23",
        "verify-0.5.23",
        "test-0.5.23",
    ]
    assert all(s["status"] == "ok" and s["exit"] == 0 for s in record["stages"])
    log = (tmp_path / "make.log").read_text().splitlines()
    default = f"make test PYTEST_ARGS=-ra JUNIT={repo}/build/ci/pytest.xml"
    prepared = ["make setup PIN=0.5.23", "make apply PIN=0.5.23"]
    prepared.append("make verify PIN=0.5.23")
    assert log[:4] == ["make setup", "make apply", "make verify", "make check"]
    # beside the default release's tests: in order among themselves, in any
    # order with that one; the other release's tests last
    assert sorted(log[4:8]) == sorted([default, *prepared])
    assert [line for line in log[4:8] if line != default] == prepared
    assert log[8:] == [
        f"make test PIN=0.5.23 PYTEST_ARGS=-ra JUNIT={repo}/build/ci/pytest-0.5.23.xml"
    ]
    assert "(run beside the tests)" in proc.stdout
    assert "setup-0.5.23: ok in" in proc.stdout
    assert (repo / "build/ci/pytest-0.5.23.xml").is_file()
    # and make pr reads it
    ci = ci_results(repo / "build" / "ci")
    assert ci["pytest"]["passed"] == 3 and ci["pytest"]["failures"] == 1
    text = "\n".join(render_tests(ci, record["commit"]))
    assert "**passed**" in text and "3 passed, 1 failed, 0 errors, 1 skipped" in text
    assert "`t::s`: why not" in text
    assert "these results are of" not in text  # the commit is the project's HEAD


def test_a_failed_stage_is_recorded(tmp_path):
    repo, proc = run_ci(tmp_path, fail_stage="verify")
    assert proc.returncode == 3
    record = json.loads((repo / "build/ci/last-run.json").read_text())
    assert record["result"] == "failed"
    assert [(s["name"], s["status"], s["exit"]) for s in record["stages"]] == [
        ("setup", "ok", 0),
        ("apply", "ok", 0),
        ("verify", "failed", 3),
    ]
    assert not (repo / "build/ci/pytest.xml").exists()
    text = "\n".join(render_tests(ci_results(repo / "build" / "ci"), None))
    assert "**failed**" in text and "No pytest report was recorded" in text


def test_a_failed_background_stage_is_recorded(tmp_path):
    repo, proc = run_ci(tmp_path, fail_stage="apply PIN=0.5.23")
    assert proc.returncode == 3, proc.stdout + proc.stderr
    record = json.loads((repo / "build/ci/last-run.json").read_text())
    assert record["result"] == "failed"
    assert [(s["name"], s["status"], s["exit"]) for s in record["stages"]] == [
        ("setup", "ok", 0),
        ("apply", "ok", 0),
        ("verify", "ok", 0),
        ("check", "ok", 0),
        ("test", "ok", 0),
        ("setup-0.5.23", "ok", 0),
        ("apply-0.5.23", "failed", 3),
    ]
    log = (tmp_path / "make.log").read_text().splitlines()
    # it stopped there: no verify, no tests of that release
    assert not [line for line in log if line.startswith("make verify PIN")]
    assert not [line for line in log if line.startswith("make test PIN")]
    assert "CI failed in stage 'apply-0.5.23' (exit 3)" in proc.stderr


def test_a_failed_test_stage_stops_the_background_stages(tmp_path):
    # the other release's setup takes 6 s (the stand-in make sleeps); the default
    # release's tests fail at once: CI exits with their status and kills the setup
    junit = tmp_path / "clone" / "build" / "ci" / "pytest.xml"
    repo, proc = run_ci(
        tmp_path,
        fail_stage=f"test PYTEST_ARGS=-ra JUNIT={junit}",
        slow_stage="setup PIN=0.5.23",
    )
    assert proc.returncode == 3, proc.stdout + proc.stderr
    record = json.loads((repo / "build/ci/last-run.json").read_text())
    assert [(s["name"], s["status"]) for s in record["stages"]][-1] == (
        "test",
        "failed",
    )
    time.sleep(8)  # longer than the slow setup would take
    log = (tmp_path / "make.log").read_text()
    assert "slow start: setup PIN=0.5.23" in log  # it had started
    assert "slow end" not in log and "make apply PIN" not in log
