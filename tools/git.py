"""The tools' one git layer: gitpython, with the project's settings.

Every git command of tools/ goes through this module: the ``Repo`` object model
where it serves (``repo.git_dir``, ``repo.tags``, ...), and :func:`run_git` (which
is ``repo.git.execute``) for the commands themselves.  No other module of tools/
imports gitpython or starts git as a subprocess (tests/tree/test_layout.py checks).

Callers write ``from tools import git`` and then ``git.Repo(path)``: the class is
gitpython's, with the pinned configuration and environment below set on its
``repo.git``, so user or system configuration cannot change what is committed or
exported (byte-identical patches on every machine).
"""

import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import git as gitpython
from git import (
    GitCommandError,
    GitCommandNotFound,
    InvalidGitRepositoryError,
    NoSuchPathError,
)

from tools import ToolError

__all__ = [
    "GIT_CONFIG",
    "GitCommandError",
    "GitError",
    "InvalidGitRepositoryError",
    "NoSuchPathError",
    "Repo",
    "TOOL_EMAIL",
    "TOOL_NAME",
    "author_env",
    "blob",
    "commit_files",
    "commit_list",
    "describe",
    "git_out",
    "head_commit",
    "is_ancestor",
    "operation_in_progress",
    "rev",
    "run_git",
    "subject",
    "uncommitted",
]

TOOL_NAME = "qsv-tools"
TOOL_EMAIL = "qsv-tools@localhost"

# Every git command runs with these, so user or system configuration cannot change
# what is committed or exported (byte-identical patches on every machine).
GIT_CONFIG = (
    "core.autocrlf=false",
    "core.safecrlf=false",
    "core.abbrev=12",
    "core.quotePath=false",
    "commit.gpgSign=false",
    "tag.gpgSign=false",
    "diff.noprefix=false",
    "diff.mnemonicPrefix=false",
    "diff.relative=false",
    "diff.renames=false",
    "diff.algorithm=myers",
    "diff.context=3",
    "format.signature=",
    "format.numbered=false",
    "format.coverLetter=false",
    "am.threeWay=false",
    "am.keepcr=true",
    "apply.whitespace=nowarn",
    "gc.auto=0",
)

_ENV = {
    "GIT_COMMITTER_NAME": TOOL_NAME,
    "GIT_COMMITTER_EMAIL": TOOL_EMAIL,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_TERMINAL_PROMPT": "0",
    "LC_ALL": "C",
    "LANG": "C",
}


class GitError(ToolError):
    """A git command failed: the message names the command, the repository and
    git's own words, so the user can rerun it there."""

    @classmethod
    def of(
        cls, exc: GitCommandError, where: Union[str, Path], hint: str = ""
    ) -> "GitError":
        """The GitError for a gitpython ``GitCommandError`` raised in ``where``,
        with ``hint`` (what to do) as its last line."""
        words = exc.command if isinstance(exc.command, list) else [str(exc.command)]
        words = [str(w) for w in words[1:]]  # without "git"
        while len(words) >= 2 and words[0] == "-c":  # the pinned options
            words = words[2:]
        stderr = (exc.stderr or "").strip()
        if stderr.startswith("stderr: '") and stderr.endswith("'"):
            stderr = stderr[len("stderr: '") : -1]
        text = f"git {' '.join(words)} failed in {where}:\n{stderr}"
        return cls(text + (f"\n{hint}" if hint else ""))


_NO_GIT = "git is not installed or not on PATH; install git (2.28 or newer) and rerun"


class Repo(gitpython.Repo):
    """gitpython's ``Repo``; its ``repo.git`` runs with the pinned settings."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.git.update_environment(**_ENV)
        self.git.set_persistent_git_options(c=list(GIT_CONFIG))

    @classmethod
    def init(cls, path, *args, **kwargs) -> "Repo":
        try:
            return super().init(path, *args, **kwargs)
        except GitCommandNotFound:
            raise GitError(_NO_GIT) from None
        except GitCommandError as exc:
            raise GitError.of(
                exc,
                path,
                "Check that the directory is writable and that git is "
                "2.28 or newer (git init --initial-branch).",
            ) from None


def author_env(name: str, email: str, date: str) -> Dict[str, str]:
    """The environment of a commit with this author and both dates ``date``."""
    return {
        "GIT_AUTHOR_NAME": name,
        "GIT_AUTHOR_EMAIL": email,
        "GIT_AUTHOR_DATE": date,
        "GIT_COMMITTER_DATE": date,
    }


def run_git(
    repo: gitpython.Repo,
    *args: str,
    env: Optional[Dict[str, str]] = None,
    stdin: Optional[str] = None,
    check: bool = True,
    strip: bool = True,
    binary: bool = False,
) -> Tuple[int, Union[str, bytes], str]:
    """Run ``git <args>`` in ``repo`` with the pinned configuration.

    Returns (status, stdout, stderr); stdout is bytes with ``binary``. Raises
    GitError on failure when ``check``.
    """
    cmd = ["git"]
    for item in GIT_CONFIG:
        cmd += ["-c", item]
    cmd += list(args)
    full_env = dict(_ENV)
    full_env.update(env or {})
    with tempfile.TemporaryFile() as istream:
        if stdin is not None:
            istream.write(stdin.encode())
            istream.seek(0)
        try:
            status, out, err = repo.git.execute(
                cmd,
                istream=istream if stdin is not None else None,
                with_extended_output=True,
                with_exceptions=False,
                env=full_env,
                strip_newline_in_stdout=False,
                stdout_as_string=not binary,
            )
        except GitCommandNotFound:
            raise GitError(_NO_GIT) from None
    if strip and not binary:
        out = out.rstrip("\n")
    if check and status != 0:
        raise GitError(f"git {' '.join(args)} failed in {repo.working_dir}:\n{err}")
    return status, out, err


def git_out(repo: gitpython.Repo, *args: str, **kw) -> str:
    return run_git(repo, *args, **kw)[1]


def rev(repo: gitpython.Repo, name: str) -> Optional[str]:
    status, out, _ = run_git(
        repo, "rev-parse", "--verify", "-q", name + "^{commit}", check=False
    )
    return out if status == 0 else None


def is_ancestor(repo: gitpython.Repo, a: str, b: str) -> bool:
    return run_git(repo, "merge-base", "--is-ancestor", a, b, check=False)[0] == 0


def commit_files(repo: gitpython.Repo, sha: str) -> List[str]:
    """The paths a commit changes (no rename detection)."""
    changed = git_out(
        repo, "diff-tree", "-r", "--no-commit-id", "--name-only", "--no-renames", sha
    )
    return changed.splitlines()


def commit_list(repo: gitpython.Repo, *range_args: str) -> List[str]:
    out = git_out(repo, "rev-list", "--reverse", *range_args)
    return out.split() if out else []


def subject(repo: gitpython.Repo, sha: str) -> str:
    return git_out(repo, "log", "-1", "--format=%s", sha)


def describe(repo: gitpython.Repo, sha: str) -> str:
    return f"{sha[:12]} {subject(repo, sha)}"


def blob(repo: gitpython.Repo, commit: str, path: str) -> bytes:
    """The bytes of ``path`` at ``commit`` (from git objects, not the work tree)."""
    return run_git(repo, "cat-file", "blob", f"{commit}:{path}", binary=True)[1]


def head_commit(path: Path) -> Optional[str]:
    """The commit checked out in the repository holding ``path``; None when there
    is none (not a git checkout, or no commit yet)."""
    try:
        repo = Repo(path, search_parent_directories=True)
    except (InvalidGitRepositoryError, NoSuchPathError):
        return None
    return rev(repo, "HEAD")


# --------------------------------------------------- uncommitted work in a tree

_OPERATIONS = {
    "rebase-apply": "git am or rebase",
    "rebase-merge": "git rebase",
    "MERGE_HEAD": "git merge",
    "CHERRY_PICK_HEAD": "git cherry-pick",
    "REVERT_HEAD": "git revert",
}


def operation_in_progress(repo: gitpython.Repo) -> Optional[str]:
    """The git operation left unfinished in ``repo`` (an am, rebase, ...), if any."""
    gitdir = Path(repo.git_dir)
    for name, what in _OPERATIONS.items():
        if (gitdir / name).exists():
            return what
    return None


def uncommitted(repo: gitpython.Repo) -> List[str]:
    """``git status --porcelain`` lines of the work not committed in ``repo``
    (untracked files included, ignored ones not); empty when the tree is clean."""
    out = git_out(
        repo,
        "--no-optional-locks",
        "status",
        "--porcelain=v1",
        "--untracked-files=all",
        strip=False,
    )
    return [line for line in out.splitlines() if line.strip()]
