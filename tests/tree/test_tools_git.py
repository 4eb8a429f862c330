"""tools/git.py, the tools' one git layer: the pinned settings, failures as
ToolErrors that name the command and the repository, stdin and binary output, and
the uncommitted-work check that apply, export and check share."""

from __future__ import annotations

import pytest

from tools import ToolError, git


@pytest.fixture
def repo(tmp_path):
    repo = git.Repo.init(tmp_path / "r", initial_branch="main")
    (tmp_path / "r" / "a.txt").write_bytes(b"one\r\ntwo\n")
    git.run_git(repo, "add", "a.txt")
    git.run_git(
        repo,
        "commit",
        "-q",
        "-m",
        "first",
        env=git.author_env("A U Thor", "a@example.com", "2026-01-01T00:00:00+00:00"),
    )
    return repo


def test_repo_git_runs_with_the_pinned_settings(repo):
    assert isinstance(repo, git.Repo)
    assert repo.git.config("--get", "core.abbrev") == "12"  # from -c, not a file
    assert git.git_out(repo, "log", "-1", "--format=%cn %an") == "qsv-tools A U Thor"


def test_failures_are_tool_errors_naming_command_and_repository(repo):
    with pytest.raises(ToolError) as raised:
        git.run_git(repo, "rev-parse", "--verify", "no-such-ref")
    assert isinstance(raised.value, git.GitError)
    assert "git rev-parse --verify no-such-ref failed in" in str(raised.value)
    assert repo.working_dir in str(raised.value)
    assert git.rev(repo, "no-such-ref") is None

    with pytest.raises(git.GitCommandError) as raised:
        repo.git.rev_parse("--verify", "no-such-ref")
    error = git.GitError.of(raised.value, repo.working_dir, "Build it first.")
    text = str(error)
    assert text.startswith("git rev-parse --verify no-such-ref failed in ")
    assert "core.abbrev" not in text and text.endswith("\nBuild it first.")


def test_stdin_and_bytes(repo):
    sha = git.git_out(repo, "hash-object", "--stdin", stdin="hello\n")
    assert sha == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert git.blob(repo, "HEAD", "a.txt") == b"one\r\ntwo\n"  # byte for byte


def test_uncommitted_work(repo, tmp_path):
    assert git.uncommitted(repo) == [] and git.operation_in_progress(repo) is None
    (tmp_path / "r" / "a.txt").write_text("changed\n")
    (tmp_path / "r" / "new.txt").write_text("new\n")
    assert git.uncommitted(repo) == [" M a.txt", "?? new.txt"]
    assert git.head_commit(tmp_path / "r") == git.rev(repo, "HEAD")
    assert git.head_commit(tmp_path / "not-there") is None
