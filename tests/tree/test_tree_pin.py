"""The pin: wheels with a wrong sha256 and SGLANG_SRC checkouts of the wrong
version are refused before any tree is touched."""

import shutil

import pytest

from tests.helpers.project import CACHE_DIR, git, run_tools

WHEEL = "sglang-0.5.17-cp311-cp311-manylinux_2_34_x86_64.whl"


def test_wrong_bytes_in_the_cache_are_refused_and_set_aside(workspace, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / WHEEL).write_bytes(b"not the wheel")
    build = tmp_path / "fresh"
    proc = workspace.tools("apply", "--cache-dir", cache, "--build-dir", build, check=2)
    assert "sha256 mismatch" in proc.stderr
    assert "575e38f5683624ded3b4bb267f637a098e5ed37d13a1d1ff5ea09bd781a04d16" in (
        proc.stderr
    )
    assert "Traceback" not in proc.stderr
    assert not build.exists(), "nothing may be built from a refused wheel"
    assert not (cache / WHEEL).exists()
    assert (cache / (WHEEL + ".rejected")).read_bytes() == b"not the wheel"


def test_the_real_wheel_is_refused_when_the_pin_says_otherwise(workspace, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    shutil.copy(CACHE_DIR / WHEEL, cache / WHEEL)
    text = workspace.pin.read_text().replace("575e38f5", "00000000", 1)
    workspace.pin.write_text(text)
    proc = workspace.tools("apply", "--cache-dir", cache, check=2)
    assert "sha256 mismatch" in proc.stderr
    assert "got      575e38f5" in proc.stderr


def test_wheel_dir_copies_are_hash_checked(workspace, tmp_path):
    cache, local = tmp_path / "cache", tmp_path / "local"
    cache.mkdir()
    local.mkdir()
    (local / WHEEL).write_bytes(b"tampered")

    def fetch(check):
        return run_tools(
            "fetch",
            "--pin",
            workspace.pin,
            "--cache-dir",
            cache,
            env={"QSV_WHEEL_DIR": str(local)},
            check=check,
        )

    proc = fetch(check=2)
    assert "sha256 mismatch" in proc.stderr and not (cache / WHEEL).exists()
    assert (local / WHEEL).read_bytes() == b"tampered", "a user's file is not moved"
    shutil.copy(CACHE_DIR / WHEEL, local / WHEEL)
    proc = fetch(check=True)
    assert (cache / WHEEL).exists()


def make_checkout(path, tag, version_py):
    path.mkdir()
    pkg = path / "python" / "sglang"
    pkg.mkdir(parents=True)
    (pkg / "version.py").write_text(version_py)
    (pkg / "__init__.py").write_text("")
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    git(path, "tag", tag)
    return path


@pytest.fixture
def empty_inputs(workspace):
    shutil.rmtree(workspace.patches)
    workspace.patches.mkdir()
    return workspace


def test_checkout_without_the_pinned_tag_is_refused(empty_inputs, tmp_path):
    src = make_checkout(tmp_path / "src", "v0.5.16", '__version__ = "0.5.16"\n')
    build = tmp_path / "fresh"
    proc = empty_inputs.tools(
        "apply", "--build-dir", build, env={"SGLANG_SRC": str(src)}, check=2
    )
    assert "has no tag v0.5.17" in proc.stderr and "v0.5.16" in proc.stderr
    assert not build.exists()


def test_checkout_whose_version_py_disagrees_is_refused(empty_inputs, tmp_path):
    src = make_checkout(tmp_path / "src", "v0.5.17", '__version__ = "0.5.16"\n')
    proc = empty_inputs.tools(
        "apply", "--build-dir", tmp_path / "fresh", "--sglang-src", src, check=2
    )
    assert "0.5.16" in proc.stderr and "pins 0.5.17" in proc.stderr


def test_checkout_at_the_pinned_tag_becomes_the_base(empty_inputs, tmp_path):
    version_py = "from sglang._version import __version__\n"  # upstream style
    src = make_checkout(tmp_path / "src", "v0.5.17", version_py)
    git(src, "checkout", "-q", "-b", "later")
    (src / "later.txt").write_text("after the tag\n")
    git(src, "add", "-A")
    git(src, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "later")
    build = tmp_path / "fresh"
    empty_inputs.tools("apply", "--build-dir", build, "--sglang-src", src, check=True)
    assert git(build, "rev-parse", "qsv/base") == git(src, "rev-parse", "v0.5.17")
    assert not (build / "later.txt").exists()
    # and it is idempotent like the wheel base
    proc = empty_inputs.tools(
        "apply", "--build-dir", build, "--sglang-src", src, check=True
    )
    assert "up to date" in proc.stdout
