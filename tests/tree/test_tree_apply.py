"""make apply: building the tree, idempotence, rebuilds, broken patches."""

import json
import shutil
import time
from pathlib import Path

from tests.helpers.project import BUILD_TREE, PROJECT_ROOT, git, run_tools
from tests.helpers.tree import MODEL_CONFIG, add_arch, commit_in_tree, subjects


def cpu_series():
    lines = (PROJECT_ROOT / "patches" / "cpu" / "series").read_text().split()
    return [line for line in lines if line]


def test_apply_from_scratch_lays_out_the_pinned_wheel(pristine_tree):
    tree, proc = pristine_tree
    assert "laid out from sglang-0.5.17-cp311" in proc.stdout
    files = git(tree, "ls-tree", "-r", "--name-only", "qsv/base").splitlines()
    assert all(f.startswith("python/sglang/") for f in files), "only python/sglang/"
    assert MODEL_CONFIG in files
    assert len([f for f in files if f.endswith(".so")]) == 3  # the _core modules
    assert not (tree / "python" / "sglang-0.5.17.dist-info").exists()
    assert not (tree / "tools").exists()
    # empty inputs: all three refs on the base, HEAD on qsv/cpu
    base = git(tree, "rev-parse", "qsv/base")
    assert git(tree, "rev-parse", "qsv/upstream") == base
    assert git(tree, "rev-parse", "HEAD") == base
    assert git(tree, "symbolic-ref", "--short", "HEAD") == "qsv/cpu"
    state = json.loads((tree / ".git" / "qsv-state.json").read_text())
    assert state["tip"] == base and state["inputs"]
    assert git(tree, "status", "--porcelain") == ""


def test_apply_is_deterministic_and_builds_the_documented_layout(
    workspace, tmp_path, pristine_tree
):
    (workspace.overlay / "python/sglang/srt/models").mkdir(parents=True)
    (workspace.overlay / "python/sglang/srt/models/qsv_probe.py").write_text("X = 1\n")
    workspace.tools("apply", check=True)
    tree = workspace.build
    assert subjects(tree, "qsv/base..qsv/upstream") == [
        "Add the Quicksviewer model files"
    ]
    body = git(tree, "log", "-1", "--format=%B", "qsv/upstream")
    assert "Qsv-Overlay: overlay/" in body
    n_cpu = len(cpu_series())
    assert n_cpu == 3
    cpu = subjects(tree, "qsv/upstream..qsv/cpu")
    assert len(cpu) == n_cpu and all(s.startswith("[CPU]") for s in cpu)
    assert (tree / "python/sglang/srt/models/qsv_probe.py").read_text() == "X = 1\n"
    # committer identity and dates are fixed, so another build gives the same shas
    other = tmp_path / "other"
    shutil.copytree(pristine_tree[0], other, symlinks=True)
    workspace.tools("apply", "--build-dir", other, check=True)
    for ref in ("qsv/base", "qsv/upstream", "qsv/cpu"):
        assert git(other, "rev-parse", ref) == git(tree, "rev-parse", ref)
    # and the base built from scratch by `make apply` is the same commit
    if (BUILD_TREE / ".git").is_dir():
        assert git(BUILD_TREE, "rev-parse", "qsv/base") == git(
            tree, "rev-parse", "qsv/base"
        )


def test_reapply_leaves_an_up_to_date_tree_untouched(workspace):
    workspace.tools("apply", check=True)
    tree = workspace.build
    sha = git(tree, "rev-parse", "HEAD")
    index_mtime = (tree / ".git" / "index").stat().st_mtime_ns
    file_mtime = (tree / MODEL_CONFIG).stat().st_mtime_ns
    start = time.monotonic()
    proc = workspace.tools("apply", check=True)
    elapsed = time.monotonic() - start
    assert "up to date" in proc.stdout
    assert git(tree, "rev-parse", "HEAD") == sha
    assert (tree / ".git" / "index").stat().st_mtime_ns == index_mtime
    assert (tree / MODEL_CONFIG).stat().st_mtime_ns == file_mtime
    assert elapsed < 10, f"no-op apply took {elapsed:.1f}s"


def test_changed_inputs_rebuild_the_tree(workspace):
    probe = workspace.overlay / "python/sglang/srt/models/qsv_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("X = 1\n")
    workspace.tools("apply", check=True)
    first = git(workspace.build, "rev-parse", "HEAD")
    probe.write_text("X = 2\n")
    proc = workspace.tools("apply", check=True)
    assert "rebuilding" in proc.stdout
    assert git(workspace.build, "rev-parse", "HEAD") != first
    assert (workspace.build / probe.relative_to(workspace.overlay)).read_text() == (
        "X = 2\n"
    )
    # the old build's commits are the tool's own: no refusal, no leftovers
    assert git(workspace.build, "status", "--porcelain") == ""


def test_overlay_may_not_replace_a_pinned_file(workspace):
    target = workspace.overlay / MODEL_CONFIG
    target.parent.mkdir(parents=True)
    target.write_text("# replaced\n")
    proc = workspace.tools("apply", check=2)
    assert "overlay/" + MODEL_CONFIG in proc.stderr
    assert "Traceback" not in proc.stderr


def test_missing_patch_file_is_refused_before_anything_changes(workspace):
    sha = git(workspace.build, "rev-parse", "HEAD")
    (workspace.patches / "series").write_text("0001-does-not-exist.patch\n")
    proc = workspace.tools("apply", check=2)
    assert "0001-does-not-exist.patch does not exist" in proc.stderr
    assert git(workspace.build, "rev-parse", "HEAD") == sha


def test_broken_patch_is_named_and_tree_stays_at_last_good_commit(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    add_arch(tree, "QsvProbeForConditionalGeneration")
    commit_in_tree(tree, "Register the probe architecture")
    workspace.tools("export", check=True)
    good = sorted(workspace.patches.glob("0001-*.patch"))
    assert len(good) == 1
    broken = workspace.patches / "0002-Broken-context.patch"
    text = good[0].read_text()
    text = text.replace("Register the probe architecture", "Broken context")
    text = text.replace(" multimodal_model_archs = [", " multimodal_model_archs = [  #")
    text = text.replace('+    "QsvProbeFor', '+    "QsvOtherFor')
    broken.write_text(text)
    (workspace.patches / "series").write_text(f"{good[0].name}\n{broken.name}\n")

    proc = workspace.tools("apply", check=2)
    assert f"series patch {broken}" in proc.stderr
    assert MODEL_CONFIG in proc.stderr  # git am's hunk/file report
    assert "Traceback" not in proc.stderr
    assert subjects(tree, "-1") == ["Register the probe architecture"]
    assert "last good commit" in proc.stderr
    assert git(tree, "status", "--porcelain") == ""
    assert not (tree / ".git" / "rebase-apply").exists()

    # fixing the series is enough: the partial build is the tool's own work
    (workspace.patches / "series").write_text(f"{good[0].name}\n")
    workspace.tools("apply", check=True)
    assert subjects(tree, "qsv/base..qsv/upstream") == [
        "Register the probe architecture"
    ]


def test_link_venv_points_the_environment_at_the_tree(workspace, tmp_path):
    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    workspace.tools("apply", "--link-venv", tmp_path / "venv", check=True)
    pth = site / "qsv-sglang.pth"
    assert pth.read_text().strip() == str((workspace.build / "python").resolve())
    # an installed sglang would shadow the tree: refused
    (site / "sglang").mkdir()
    proc = workspace.tools("apply", "--link-venv", tmp_path / "venv", check=2)
    assert "shadow" in proc.stderr


def test_project_venv_imports_the_patched_tree():
    """After make apply (make test runs it first), .venv imports build/sglang."""
    pth = next((PROJECT_ROOT / ".venv").glob("lib/python3*/site-packages"))
    line = (pth / "qsv-sglang.pth").read_text().strip()
    assert Path(line) == (PROJECT_ROOT / "build" / "sglang" / "python").resolve()


def test_cli_errors_have_no_traceback(tmp_path):
    proc = run_tools("apply", "--pin", tmp_path / "missing.toml", check=2)
    assert proc.stderr.startswith("error: pin file not found")
    assert "Traceback" not in proc.stderr
