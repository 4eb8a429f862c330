"""make apply never discards user work in the tree without --force."""

from tests.helpers.project import git
from tests.helpers.tree import MODEL_CONFIG, commit_in_tree


def touch_inputs(ws):
    """Change an input so that apply wants to rebuild."""
    probe = ws.overlay / "python/sglang/srt/models/qsv_probe.py"
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_text(f"X = {len(probe.read_text()) if probe.exists() else 0}\n")


def test_uncommitted_changes_are_refused_and_kept(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    head = git(tree, "rev-parse", "HEAD")
    (tree / MODEL_CONFIG).write_text("# my edit\n")
    (tree / "python/sglang/my_notes.py").write_text("# mine\n")
    touch_inputs(workspace)

    proc = workspace.tools("apply", check=2)
    assert MODEL_CONFIG in proc.stderr
    assert "python/sglang/my_notes.py" in proc.stderr
    assert "make export" in proc.stderr and "--force" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (tree / MODEL_CONFIG).read_text() == "# my edit\n"
    assert (tree / "python/sglang/my_notes.py").read_text() == "# mine\n"
    assert git(tree, "rev-parse", "HEAD") == head

    # also with unchanged inputs: the tool does not vouch for a tree it did not make
    git(workspace.root, "checkout", "-q", "--", ".")
    git(workspace.root, "clean", "-qfd")
    workspace.tools("apply", check=2)
    assert (tree / "python/sglang/my_notes.py").exists()


def test_foreign_commit_is_refused_and_kept(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    (tree / "python/sglang/my_notes.py").write_text("# mine\n")
    mine = commit_in_tree(tree, "My experiment")
    touch_inputs(workspace)
    proc = workspace.tools("apply", check=2)
    assert f"{mine[:12]} My experiment" in proc.stderr
    assert "make export" in proc.stderr
    assert git(tree, "rev-parse", "HEAD") == mine


def test_commit_on_another_branch_counts_as_foreign(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    git(tree, "checkout", "-q", "-b", "experiment")
    (tree / "python/sglang/my_notes.py").write_text("# mine\n")
    commit_in_tree(tree, "Side branch work")
    git(tree, "checkout", "-q", "qsv/cpu")
    touch_inputs(workspace)
    proc = workspace.tools("apply", check=2)
    assert "Side branch work (on experiment)" in proc.stderr


def test_force_lists_then_discards(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    (tree / "python/sglang/my_notes.py").write_text("# mine\n")
    commit_in_tree(tree, "Throwaway commit")
    (tree / MODEL_CONFIG).write_text("# dirty\n")
    touch_inputs(workspace)

    proc = workspace.tools("apply", "--force", check=True)
    assert "--force: discarding" in proc.stdout
    assert "Throwaway commit" in proc.stdout
    assert MODEL_CONFIG in proc.stdout
    assert git(tree, "status", "--porcelain") == ""
    assert not (tree / "python/sglang/my_notes.py").exists()
    assert "Throwaway commit" not in git(tree, "log", "--all", "--format=%s")
    # and the result is an ordinary up-to-date tree again
    assert "up to date" in workspace.tools("apply", check=True).stdout


def test_directory_not_made_by_the_tool_is_refused(workspace, tmp_path):
    other = tmp_path / "not-a-tree"
    other.mkdir()
    (other / "precious.txt").write_text("keep me\n")
    proc = workspace.tools("apply", "--build-dir", other, check=2)
    assert "was not made by this tool" in proc.stderr
    assert (other / "precious.txt").read_text() == "keep me\n"


def test_detached_head_on_the_tools_commits_is_not_user_work(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    tip = git(tree, "rev-parse", "HEAD")
    git(tree, "checkout", "-q", "--detach", "qsv/base")
    workspace.tools("apply", check=True)
    assert git(tree, "symbolic-ref", "--short", "HEAD") == "qsv/cpu"
    assert git(tree, "rev-parse", "HEAD") == tip
