"""docs/QUICKSVIEWER_SGLANG_ADAPT_CN.md against the code it describes.

Every ``make`` target the guide names exists; every path it names exists in the
project or in the patched tree (except the seed's own files, which it quotes); its
patch table is the series; and the facts behind "what differs from the seed's plan"
hold in the pinned SGLang (the base of build/sglang).
"""

import re
import subprocess

import pytest

from tests.helpers.project import PROJECT_ROOT
from tools.tree import read_series

GUIDE = PROJECT_ROOT / "docs" / "QUICKSVIEWER_SGLANG_ADAPT_CN.md"
BUILD_TREE = PROJECT_ROOT / "build" / "sglang"
# the seed repository's files and upstream paths outside the wheel, which the guide
# names as the seed's plan, not as ours
SEED_PATHS = {"docs/todo.md", "test/srt/models/test_generation_models.py"}
# what is not a file of the project or the tree: upstream's own file (not in the
# wheel), the tree's branches, what the tools make (ignored) and placeholders
NOT_FILES = {"python/pyproject.toml", "qsv/cpu", "qsv/base", "qsv/upstream"}
MADE = ("build/", "out/", "gpu_carry/", "dist/")
PROJECT_DIRS = (
    "tools/",
    "tests/",
    "docs/",
    "benchmarks/",
    "ci/",
    "patches/",
    "overlay/",
    "examples/",
    "qsv_reference/",
)


def tree_file(ref: str, path: str) -> str:
    proc = subprocess.run(
        ["git", "show", f"{ref}:{path}"],
        cwd=BUILD_TREE,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, f"{path} not at {ref}: {proc.stderr}"
    return proc.stdout


def in_tree(ref: str, path: str) -> bool:
    path = path.rstrip("/")
    proc = subprocess.run(
        ["git", "cat-file", "-e", f"{ref}:{path}"], cwd=BUILD_TREE, capture_output=True
    )
    return proc.returncode == 0


@pytest.fixture(scope="module")
def guide() -> str:
    return GUIDE.read_text()


@pytest.fixture(scope="module")
def tree():
    if not (BUILD_TREE / ".git").is_dir():
        pytest.fail("build/sglang is missing: run make apply")
    return BUILD_TREE


def test_every_make_target_exists(guide):
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    named = set(re.findall(r"\bmake ([a-z][a-z-]*)", guide))
    assert {"setup", "apply", "test", "demo", "export", "verify", "convert"} <= named
    assert {"wheelhouse", "check", "pr"} <= named
    assert named <= targets, named - targets


def test_every_path_exists(guide, tree):
    paths = {
        token
        for token in re.findall(r"`([^`\s<]+)`", guide)
        if "/" in token and not token.startswith(("-", "/", "$", "http", "file:"))
    }
    assert len(paths) > 20
    missing = []
    for path in sorted(paths - SEED_PATHS):
        rel = path.rstrip("/")
        if path.startswith(PROJECT_DIRS) and (PROJECT_ROOT / rel).exists():
            continue
        if path.startswith(MADE) or path in NOT_FILES:
            continue
        if in_tree("qsv/upstream", rel):
            continue
        if rel.startswith(("srt/", "sglang/")) or rel.endswith(".py"):
            prefix = "python/sglang/" if rel.startswith("srt/") else "python/"
            if in_tree("qsv/upstream", prefix + rel):
                continue
            if any(in_tree("qsv/upstream", p) for p in _under(tree, rel)):
                continue
        missing.append(path)
    assert not missing, missing


def _under(tree, rel: str):
    """Tree paths that end with ``rel`` (e.g. bench_one_batch.py)."""
    out = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", "qsv/upstream"],
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [p for p in out.splitlines() if p.endswith("/" + rel)]


def test_every_overlay_file_is_named(guide):
    from tools.tree import overlay_files

    for rel in overlay_files(PROJECT_ROOT / "overlay"):
        path = rel.as_posix()
        short = path.removeprefix("python/sglang/")
        assert f"`{path}`" in guide or f"`{short}`" in guide, path


def test_the_patch_table_is_the_series(guide):
    series = read_series(PROJECT_ROOT / "patches")
    rows = re.findall(r"^\| (\d{4}) \|", guide, re.M)
    assert rows == [p.name[:4] for p in series]


def test_what_differs_from_the_seed_holds_in_the_pinned_sglang(guide, tree):
    base = "qsv/base"
    # no sglang.run_serving; launch_server is the entry point
    assert not in_tree(base, "python/sglang/run_serving.py")
    assert not in_tree(base, "python/sglang/run_serving")
    assert in_tree(base, "python/sglang/launch_server.py")
    # bench_one_batch has no image or video input
    for path in (
        "python/sglang/bench_one_batch.py",
        "python/sglang/benchmark/one_batch.py",
    ):
        text = tree_file(base, path).lower()
        assert "input-images" not in text and "input_images" not in text
        assert "video" not in text and "image" not in text, path
    # hf_transformers_utils.py is a shim; the registry is in hf_transformers/common.py,
    # which patch 0002 changes
    shim = tree_file(base, "python/sglang/srt/utils/hf_transformers_utils.py")
    assert "from sglang.srt.utils.hf_transformers import *" in shim
    assert "_CONFIG_REGISTRY" not in shim
    common = "python/sglang/srt/utils/hf_transformers/common.py"
    assert "_CONFIG_REGISTRY" in tree_file(base, common)
    (patch,) = [
        p for p in read_series(PROJECT_ROOT / "patches") if p.name[:4] == "0002"
    ]
    assert f"+++ b/{common}" in patch.read_text()
    # the mixins the guide names ship with 0.5.17
    vlm_utils = tree_file(base, "python/sglang/test/vlm_utils.py")
    assert "class VideoOpenAITestMixin" in vlm_utils
    assert "class ImageOpenAITestMixin" in vlm_utils
    assert in_tree(base, "python/sglang/test/ci/ci_register.py")
    # the upstream-style test registers the way the guide says
    test = tree_file("qsv/upstream", "test/registered/vlm/test_quicksviewer.py")
    assert "register_cuda_ci(" in test
    # the converter writes what the guide says, and keeps the original config
    convert = (PROJECT_ROOT / "tools/checkpoints/convert.py").read_text()
    for fact in ('"quicksviewer"', "QuicksviewerForCausalLM", "config.original.json"):
        assert fact in convert, fact
    for fact in ("quicksviewer_qwen", "LlavaQwenForCausalLM", "config.original.json"):
        assert fact in guide, fact
