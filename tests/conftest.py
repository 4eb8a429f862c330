"""Shared fixtures: a pristine tree built once and the tree tests' workspace, plus the
model tests' session fixtures (tests/helpers/model_fixtures.py).

Keep this file small and generic: fixtures only. What tests import (paths, the tools'
command line, ``git``, ``Workspace``) is in tests/helpers/project.py; pyproject.toml
puts the project root on ``sys.path`` (``pythonpath``), for ``tests.helpers.*``,
``tools.*`` and ``qsv_reference``.
"""

import shutil

import pytest

# the helpers' asserts (run_tools, assert_same_frames, ...) report like a test's
pytest.register_assert_rewrite("tests.helpers")

from tests.helpers.project import (  # noqa: E402 (after the assert rewrite)
    PROJECT_ROOT,
    Workspace,
    build_pristine,
)

# fixtures of the Quicksviewer model tests (one checkpoint set for the session,
# engines per test module)
pytest_plugins = ["tests.helpers.model_fixtures"]


@pytest.fixture(scope="session")
def pristine_tree(tmp_path_factory):
    """A tree built from scratch once per session: pinned base, no patches, no overlay.

    Tests copy it (``workspace``) and rebuild on top of its base, which is fast.
    """
    root = tmp_path_factory.mktemp("pristine")
    return build_pristine(root)


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
    ws.start(pristine_tree[0])
    return ws
