"""What the tests share besides fixtures: the project's paths, the tree and SGLang
release under test, the tools' command line (``run_tools``), ``git`` and the
``Workspace`` of the tree tests. conftest.py builds its fixtures from these; tests
import them from here (never from conftest or another test module).
"""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
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


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s children and its process group (``start_new_session``)."""
    try:
        import psutil

        children = psutil.Process(proc.pid).children(recursive=True)
    except Exception:
        children = []
    for child in children:
        try:
            child.kill()
        except Exception:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def run_in_own_group(cmd, timeout, **popen_kw) -> tuple[int | None, str]:
    """(exit status, stdout and stderr together) of ``cmd`` run in a process group of
    its own; the status is None where it ran past ``timeout`` s. The group is killed
    at the end whatever the outcome (an Engine child a failure left behind)."""
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        **popen_kw,
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        kill_group(proc)
        output, _ = proc.communicate()
        code = None
    finally:
        kill_group(proc)
    return code, output


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

    def start(self, pristine: Path):
        """With the inputs in place: the build dir a copy of the ``pristine`` tree, the
        inputs a git repository (build/ ignored) with them committed."""
        self.build.parent.mkdir()
        shutil.copytree(pristine, self.build, symlinks=True)
        (self.root / ".gitignore").write_text("/build/\n")
        git(self.root, "init", "-q")
        git(self.root, "config", "user.name", "test")
        git(self.root, "config", "user.email", "test@localhost")
        self.commit_inputs()


def build_pristine(root: Path, *extra):
    """(build dir, tools' process) of a tree with the pinned base and nothing on it
    (empty patches/ and overlay/ under ``root``); ``extra``: more ``apply`` options
    (``--release``, ...)."""
    (root / "patches").mkdir()
    (root / "overlay").mkdir()
    build = root / "sglang"
    proc = run_tools(
        "apply",
        "--pin",
        PROJECT_ROOT / "pin.toml",
        *extra,
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
