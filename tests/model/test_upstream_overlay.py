"""The upstream-style model test of the overlay, run inside the patched tree.

overlay/test/registered/vlm/test_quicksviewer.py is the test that goes upstream with
the model (it starts its own Engine and writes its own videos). Here it runs from
the tree under test (build/sglang, or build/sglang-<release> with make test
PIN=...), as upstream's CI runs it from its checkout, on the converted fp32 tiny
checkpoint, in a subprocess of its own (its own process group, killed on timeout).
"""

from __future__ import annotations

import os
import re
import sys

from tests.helpers.project import BUILD_TREE, PROJECT_ROOT, run_in_own_group

UPSTREAM_TEST = "test/registered/vlm/test_quicksviewer.py"
TIMEOUT_S = 420


def test_upstream_quicksviewer_test_passes(checkpoints):
    test_file = BUILD_TREE / UPSTREAM_TEST
    overlay = PROJECT_ROOT / "overlay" / UPSTREAM_TEST
    # the tree runs the overlay's current test (make apply copies it)
    assert test_file.read_bytes() == overlay.read_bytes(), "run make apply"
    expected = len(re.findall(r"^    def test_\w+\(", overlay.read_text(), re.M))
    assert expected >= 3

    env = dict(os.environ)
    env["QUICKSVIEWER_MODEL_PATH"] = str(checkpoints.converted("fp32"))
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # keep build/sglang clean
    code, output = run_in_own_group(
        # no cache provider: no .pytest_cache in build/sglang
        [sys.executable, "-m", "pytest", UPSTREAM_TEST, "-v", "-p", "no:cacheprovider"],
        TIMEOUT_S,
        cwd=BUILD_TREE,
        env=env,
    )
    if code is None:
        raise AssertionError(f"upstream test hung ({TIMEOUT_S}s):\n{output[-8000:]}")
    assert code == 0, output[-8000:]
    summary = output.strip().splitlines()[-1]
    assert re.search(rf"\b{expected} passed\b", summary), output[-8000:]
    assert not re.search(
        r"failed|error|skipped|xfail|xpass|deselected", summary
    ), output[-8000:]
    assert output.count(" PASSED") == expected, output[-8000:]
