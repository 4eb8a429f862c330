"""Shared fixtures: project paths, the tools CLI, and a pristine tree built once.

Keep this file small and generic; topic-specific fixtures live in their own files.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# session fixtures of the Quicksviewer model tests (one checkpoint set, one Engine
# per dtype, shared by every test module)
pytest_plugins = ["tests.quicksviewer_fixtures"]

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = PROJECT_ROOT / "build" / "cache"


def _linked_tree() -> Path:
    """The patched tree this interpreter imports sglang from: the one make apply
    linked into its venv (build/sglang for .venv, build/sglang-<release> for
    .venv-<release>); build/sglang when the venv links none."""
    import site

    for directory in site.getsitepackages():
        pth = Path(directory) / "qsv-sglang.pth"
        if pth.is_file():
            return Path(pth.read_text().strip()).parent
    return PROJECT_ROOT / "build" / "sglang"


def _tree_version(tree: Path) -> str:
    """The SGLang version of a tree laid out from a wheel (its _version.py)."""
    import re

    version = tree / "python" / "sglang" / "_version.py"
    if not version.is_file():
        return ""
    found = re.search(
        r"""^__version__ = version = ['"]([^'"]+)""", version.read_text(), re.M
    )
    return found.group(1) if found else ""


# the tree and the SGLang release the model tests run against (make test PIN=...)
BUILD_TREE = _linked_tree()
SGLANG_VERSION = _tree_version(BUILD_TREE)

if str(PROJECT_ROOT) not in sys.path:  # tests import tools.*
    sys.path.insert(0, str(PROJECT_ROOT))


def run_tools(*args, check=None, env=None, timeout=300):
    """Run ``python -m tools <args>`` from the project root; return CompletedProcess.

    ``check=True`` asserts exit status 0, ``check=2`` asserts a ToolError exit.
    """
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "tools", *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
    )
    if check is True:
        assert proc.returncode == 0, f"tools {args} failed:\n{proc.stdout}{proc.stderr}"
    elif check is not None:
        assert proc.returncode == check, (
            f"tools {args} exited {proc.returncode}, expected {check}:\n"
            f"{proc.stdout}{proc.stderr}"
        )
    return proc


def git(cwd, *args):
    """``git <args>`` in ``cwd``; returns stdout without the trailing newline."""
    proc = subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, check=True
    )
    return proc.stdout.rstrip("\n")


class Workspace:
    """A temp copy of the tool inputs (a git repository) plus a temp build dir."""

    def __init__(self, root: Path):
        self.root = root
        self.pin = root / "pin.toml"
        self.patches = root / "patches"
        self.overlay = root / "overlay"
        self.build = root / "build" / "sglang"
        self.cache = CACHE_DIR

    def args(self, command, *extra):
        return [
            command,
            "--pin",
            self.pin,
            "--patches-dir",
            self.patches,
            "--overlay-dir",
            self.overlay,
            "--build-dir",
            self.build,
            "--cache-dir",
            self.cache,
            *extra,
        ]

    def tools(self, command, *extra, **kw):
        return run_tools(*self.args(command, *extra), **kw)

    def commit_inputs(self, message="inputs"):
        git(self.root, "add", "-A")
        git(self.root, "commit", "-q", "--allow-empty", "-m", message)


@pytest.fixture(scope="session")
def pristine_tree(tmp_path_factory):
    """A tree built from scratch once per session: pinned base, no patches, no overlay.

    Tests copy it (``workspace``) and rebuild on top of its base, which is fast.
    """
    root = tmp_path_factory.mktemp("pristine")
    (root / "patches").mkdir()
    (root / "overlay").mkdir()
    build = root / "sglang"
    proc = run_tools(
        "apply",
        "--pin",
        PROJECT_ROOT / "pin.toml",
        "--patches-dir",
        root / "patches",
        "--overlay-dir",
        root / "overlay",
        "--build-dir",
        build,
        "--cache-dir",
        CACHE_DIR,
        check=True,
    )
    return build, proc


@pytest.fixture
def workspace(tmp_path, pristine_tree):
    """Copies of pin.toml and patches/cpu/ (empty series and overlay/), and a copy of
    the pristine tree as the build dir; the inputs are committed (``git diff``)."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    shutil.copy(PROJECT_ROOT / "pin.toml", ws.pin)
    # the project's CPU group; an empty series and overlay (tests add their own)
    shutil.copytree(PROJECT_ROOT / "patches" / "cpu", ws.patches / "cpu")
    (ws.patches / "series").write_text("")
    ws.overlay.mkdir()
    ws.build.parent.mkdir()
    shutil.copytree(pristine_tree[0], ws.build, symlinks=True)
    (ws.root / ".gitignore").write_text("/build/\n")
    git(ws.root, "init", "-q")
    git(ws.root, "config", "user.name", "test")
    git(ws.root, "config", "user.email", "test@localhost")
    ws.commit_inputs()
    return ws
