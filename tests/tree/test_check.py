"""make check: the pre-submit gate on the tree as it is.

Each case builds a workspace tree (a probe overlay file, or a series patch), then
runs ``python -m tools check`` on it: clean passes; a black violation, a missing
comma, a misspelling, uncommitted work and a stale tree each fail with the reason.
"""

import pytest

from tests.helpers.project import git
from tests.helpers.tree import (
    CLEAN_MODULE,
    MODEL_CONFIG,
    commit_in_tree,
    plant_missing_comma,
)

PROBE = "python/sglang/srt/models/qsv_probe.py"


@pytest.fixture
def probe_ws(workspace):
    """A workspace whose overlay holds one clean module, applied."""
    path = workspace.overlay / PROBE
    path.parent.mkdir(parents=True)
    path.write_text(CLEAN_MODULE)
    workspace.commit_inputs("probe")
    workspace.tools("apply", check=True)
    return workspace


def write_probe(ws, text):
    (ws.overlay / PROBE).write_text(text)
    ws.commit_inputs("probe edited")
    ws.tools("apply", check=True)


def test_check_passes_on_a_clean_tree(probe_ws):
    proc = probe_ws.tools("check", check=True)
    out = proc.stdout
    assert "is up to date and clean" in out
    assert "black ok" in out and "isort ok" in out
    assert "codespell ok" in out and "guard ok" in out
    assert "compileall ok" in out and "check (tools/): compileall ok" in out
    assert "all checks passed" in out
    # it changed nothing in the tree
    assert git(probe_ws.build, "status", "--porcelain", "--untracked-files=all") == ""


def test_check_fails_on_a_black_violation(probe_ws):
    write_probe(
        probe_ws, CLEAN_MODULE.replace('NAMES = ["A", "B"]', "NAMES = [ 'A','B' ]")
    )
    proc = probe_ws.tools("check", check=2)
    assert "black would change" in proc.stderr and "qsv_probe.py" in proc.stderr
    assert "isort would change" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_fails_on_a_missing_comma(probe_ws):
    tree = probe_ws.build
    (tree / MODEL_CONFIG).write_text(
        plant_missing_comma((tree / MODEL_CONFIG).read_text())
    )
    commit_in_tree(tree, "[Model] Oops")
    probe_ws.tools("export", check=True)
    probe_ws.commit_inputs("exported")
    probe_ws.tools("apply", check=True)
    proc = probe_ws.tools("check", check=2)
    assert f"{MODEL_CONFIG}:" in proc.stderr
    assert "CLIPModelCohere2VisionForConditionalGeneration" in proc.stderr
    assert "missing comma" in proc.stderr


def test_check_fails_on_a_misspelling(probe_ws):
    write_probe(probe_ws, CLEAN_MODULE + "\n# teh list above is exported\n")
    proc = probe_ws.tools("check", check=2)
    assert "codespell found misspellings" in proc.stderr
    assert "teh ==> the" in proc.stderr and "qsv_probe.py" in proc.stderr
    # upstream's ignore list holds: "ans" (python/pyproject.toml) passes
    write_probe(probe_ws, CLEAN_MODULE + "\n# ans = answers\n")
    probe_ws.tools("check", check=True)


SERVER_ARGS = "python/sglang/srt/server_args.py"


def test_check_leaves_upstreams_own_misspellings_to_upstream(probe_ws):
    """A patch to a file whose released text codespell flags ("MIS" in 0.5.17's
    server_args.py) passes, naming upstream's line; a misspelling the patch adds
    to that file fails."""
    tree = probe_ws.build
    path = tree / SERVER_ARGS
    released = path.read_text()
    assert "MIS" in released
    path.write_text(released + "\n# the probe's own line\n")
    commit_in_tree(tree, "[Probe] A line in server_args.py")
    probe_ws.tools("export", check=True)
    probe_ws.commit_inputs("exported")
    probe_ws.tools("apply", check=True)
    proc = probe_ws.tools("check", check=True)
    assert f"upstream's own line, left as it is: {SERVER_ARGS}:" in proc.stdout
    assert "MIS ==> MISS" in proc.stdout and "codespell ok" in proc.stdout

    path.write_text(path.read_text() + "# teh probe\n")
    commit_in_tree(tree, "[Probe] A misspelling in server_args.py")
    probe_ws.tools("export", check=True)
    probe_ws.commit_inputs("exported again")
    probe_ws.tools("apply", check=True)
    proc = probe_ws.tools("check", check=2)
    assert "codespell found misspellings" in proc.stderr
    assert f"{SERVER_ARGS}:" in proc.stderr and "teh ==> the" in proc.stderr
    assert "MIS ==> MISS" not in proc.stderr  # upstream's lines stay out of it


def test_check_fails_on_uncommitted_work_and_a_stale_tree(probe_ws):
    (probe_ws.build / "scratch.txt").write_text("uncommitted\n")
    proc = probe_ws.tools("check", check=2)
    assert "is not clean" in proc.stderr and "scratch.txt" in proc.stderr
    (probe_ws.build / "scratch.txt").unlink()
    (probe_ws.overlay / PROBE).write_text(CLEAN_MODULE + "Y = 2\n")  # no make apply
    proc = probe_ws.tools("check", check=2)
    assert "is stale" in proc.stderr and "run make apply" in proc.stderr
