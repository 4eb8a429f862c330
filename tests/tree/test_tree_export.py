"""make export: the tree written back to patches/ and overlay/, and round trips."""

import shutil

from tests.helpers.project import PROJECT_ROOT, git
from tests.helpers.tree import MODEL_CONFIG, add_arch, commit_in_tree, subjects

PROBE = "python/sglang/srt/models/qsv_probe.py"


def assert_inputs_unchanged(ws):
    git(ws.root, "diff", "--exit-code")
    assert git(ws.root, "status", "--porcelain") == "", "export left new files"


def test_round_trip_of_the_project_inputs_is_clean(workspace):
    """apply then export on copies of the real patches/ and overlay/: no diff."""
    shutil.rmtree(workspace.patches)
    shutil.copytree(PROJECT_ROOT / "patches", workspace.patches)
    shutil.rmtree(workspace.overlay)
    if (PROJECT_ROOT / "overlay").is_dir():
        shutil.copytree(PROJECT_ROOT / "overlay", workspace.overlay)
    else:
        workspace.overlay.mkdir()
    workspace.commit_inputs("project inputs")
    workspace.tools("apply", check=True)
    workspace.tools("export", check=True)
    assert_inputs_unchanged(workspace)


def test_user_commits_become_patches_and_overlay_files(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    n_cpu = len(subjects(tree, "qsv/upstream..qsv/cpu"))
    # one commit that changes a pinned file AND adds a new file
    add_arch(tree, "QsvProbeForConditionalGeneration")
    (tree / PROBE).write_text('"""probe"""\n')
    commit_in_tree(tree, "[Quicksviewer] Register the probe model")
    # a second commit that only edits the new file
    (tree / PROBE).write_text('"""probe, v2"""\n')
    commit_in_tree(tree, "Probe v2")

    workspace.tools("export", check=True)
    series = (workspace.patches / "series").read_text().split()
    assert len(series) == 1 and series[0].startswith("0001-Quicksviewer-Register")
    patch = (workspace.patches / series[0]).read_text()
    assert "From: Alice <alice@example.com>" in patch
    assert "Subject: [PATCH] [Quicksviewer] Register the probe model" in patch
    assert MODEL_CONFIG in patch and PROBE not in patch
    assert (workspace.overlay / PROBE).read_text() == '"""probe, v2"""\n'
    assert len((workspace.patches / "cpu" / "series").read_text().split()) == n_cpu

    # the exported commits count as saved: apply rebuilds without --force
    workspace.commit_inputs("exported")
    workspace.tools("apply", check=True)
    assert subjects(tree, "qsv/base..qsv/upstream") == [
        "[Quicksviewer] Register the probe model",
        "Add the Quicksviewer model files",
    ]
    assert (tree / PROBE).read_text() == '"""probe, v2"""\n'
    assert '"QsvProbeForConditionalGeneration"' in (tree / MODEL_CONFIG).read_text()
    # and the new inputs round-trip byte for byte
    workspace.tools("export", check=True)
    assert_inputs_unchanged(workspace)


def test_deleting_an_overlay_file_in_the_tree_removes_it(workspace):
    (workspace.overlay / PROBE).parent.mkdir(parents=True)
    (workspace.overlay / PROBE).write_text("X = 1\n")
    workspace.tools("apply", check=True)
    git(workspace.build, "rm", "-q", PROBE)
    commit_in_tree(workspace.build, "Drop the probe")
    workspace.tools("export", check=True)
    assert not (workspace.overlay / PROBE).exists()
    assert not (workspace.overlay / "python").exists()  # empty dirs pruned


def test_export_to_cpu_appends_to_the_cpu_group(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    before = (workspace.patches / "cpu" / "series").read_text().split()
    add_arch(tree, "QsvCpuOnlyProbe")
    commit_in_tree(tree, "[CPU] probe")
    workspace.tools("export", "--to-cpu", check=True)
    after = (workspace.patches / "cpu" / "series").read_text().split()
    assert after[:-1] == before and after[-1].endswith("-CPU-probe.patch")
    assert (workspace.patches / "series").read_text() == ""


def test_export_refuses_uncommitted_work(workspace):
    workspace.tools("apply", check=True)
    (workspace.build / MODEL_CONFIG).write_text("# dirty\n")
    proc = workspace.tools("export", check=2)
    assert MODEL_CONFIG in proc.stderr and "commit it first" in proc.stderr
    assert_inputs_unchanged(workspace)


def test_export_refuses_to_overwrite_overlay_edits_not_in_the_tree(workspace):
    """An overlay/ file edited (or added) after make apply is never overwritten."""
    (workspace.overlay / PROBE).parent.mkdir(parents=True)
    (workspace.overlay / PROBE).write_text("X = 1\n")
    workspace.commit_inputs("probe")
    workspace.tools("apply", check=True)
    (workspace.overlay / PROBE).write_text("X = 2  # edited in overlay/\n")
    added = workspace.overlay / "python/sglang/srt/models/qsv_new.py"
    added.write_text("Y = 1\n")
    proc = workspace.tools("export", check=2)
    assert "not in the tree" in proc.stderr
    assert f"overlay/{PROBE}" in proc.stderr and "qsv_new.py" in proc.stderr
    assert (workspace.overlay / PROBE).read_text() == "X = 2  # edited in overlay/\n"
    assert added.read_text() == "Y = 1\n"
    # once applied, the same edits export cleanly
    workspace.tools("apply", check=True)
    workspace.tools("export", check=True)
    assert (workspace.overlay / PROBE).read_text() == "X = 2  # edited in overlay/\n"
