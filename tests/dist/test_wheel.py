"""``make wheel`` (tools/wheel.py): the patched SGLang wheel.

Builds a private patched tree from the project's patches/ and overlay/ (about 6 s),
then the cp311 wheel from it, and checks the wheel byte by byte against the tree and
the released wheel, its RECORD, and that it installs with --no-deps into a fresh
directory and imports there (sglang.__version__ == 0.5.17+qsv.N) with the project's
venv supplying torch and friends.
"""

import base64
import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers.project import CACHE_DIR, PROJECT_ROOT, git, run_tools
from tools.pin import fetch_wheel, load_pin
from tools.wheel import check_record

PIN = load_pin(PROJECT_ROOT / "pin.toml")
TAG = "cp311"


def wheel_tool(*args, check=True):
    proc = subprocess.run(
        [sys.executable, "-m", "tools", "wheel", *map(str, args)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """The patched tree from the project's current inputs, in a temp dir."""
    build = tmp_path_factory.mktemp("wheeltree") / "sglang"
    run_tools("apply", "--build-dir", build, "--cache-dir", CACHE_DIR, check=True)
    return build


@pytest.fixture(scope="module")
def released():
    return fetch_wheel(PIN, CACHE_DIR, tag=TAG)


@pytest.fixture(scope="module")
def built(tree, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    proc = wheel_tool("--tag", TAG, "--build-dir", tree, "--out-dir", out)
    wheels = sorted(out.glob("*.whl"))
    assert len(wheels) == 1, proc.stdout
    return wheels[0]


def n_commits(tree, rng):
    return int(git(tree, "rev-list", "--count", rng))


def expected_version(tree):
    return f"{PIN.version}+qsv.{n_commits(tree, 'qsv/base..qsv/upstream')}"


def changed_files(tree, head="qsv/upstream"):
    out = git(tree, "diff", "--no-renames", "--name-status", "qsv/base", head)
    rows = [line.split("\t") for line in out.splitlines()]
    return {p[len("python/") :]: s for s, p in rows if p.startswith("python/sglang/")}


def blob(tree, rev, path):
    return subprocess.run(
        ["git", "-C", str(tree), "cat-file", "blob", f"{rev}:{path}"],
        capture_output=True,
        check=True,
    ).stdout


def test_name_version_and_dist_info(tree, built):
    version = expected_version(tree)
    assert built.name == f"sglang-{version}-cp311-cp311-manylinux_2_34_x86_64.whl"
    with zipfile.ZipFile(built) as zf:
        names = zf.namelist()
        tops = {n.split("/")[0] for n in names}
        assert f"sglang-{version}.dist-info" in tops
        assert "sglang-0.5.17.dist-info" not in tops
        meta = zf.read(f"sglang-{version}.dist-info/METADATA").decode()
        assert f"\nVersion: {version}\n" in meta
        wheel = zf.read(f"sglang-{version}.dist-info/WHEEL").decode()
        assert "Tag: cp311-cp311-manylinux_2_34_x86_64" in wheel
        assert "Generator: qsv tools.wheel" in wheel
        info = json.loads(zf.read(f"sglang-{version}.dist-info/QSV_BUILD.json"))
        assert info["tree_head"] == git(tree, "rev-parse", "qsv/upstream")
        assert info["released_sha256"] == PIN.wheels[TAG].sha256
        version_py = zf.read("sglang/_version.py").decode()
        assert f"__version__ = version = {version!r}" in version_py


def test_requires_dist_kept_as_released(built, released):
    def requires(path):
        with zipfile.ZipFile(path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            return [
                line
                for line in zf.read(meta).decode().splitlines()
                if line.startswith(
                    ("Requires-Dist:", "Provides-Extra:", "Requires-Python:")
                )
            ]

    assert requires(built) == requires(released)
    assert any("transformers==5.12.1" in r for r in requires(built))


def test_record_is_exact(built):
    assert check_record(built) == []
    # and independently of tools.wheel: every file listed once with its hash and size
    with zipfile.ZipFile(built) as zf:
        files = [n for n in zf.namelist() if not n.endswith("/")]
        record = next(n for n in files if n.endswith(".dist-info/RECORD"))
        rows = {r[0]: r for r in csv.reader(io.StringIO(zf.read(record).decode())) if r}
        assert sorted(rows) == sorted(files)
        for name in files:
            if name == record:
                assert rows[name][1:] == ["", ""]
                continue
            data = zf.read(name)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest())
            assert rows[name][1] == "sha256=" + digest.rstrip(b"=").decode(), name
            assert rows[name][2] == str(len(data)), name


def test_contents_are_tree_plus_released(tree, built, released):
    changes = changed_files(tree)
    assert "sglang/srt/models/quicksviewer.py" in changes
    assert "sglang/srt/configs/quicksviewer.py" in changes
    cpu_only = set(changed_files(tree, "qsv/cpu")) - set(changes)
    assert cpu_only, "the CPU group changes no file?"
    with zipfile.ZipFile(built) as new, zipfile.ZipFile(released) as old:
        new_names = {n for n in new.namelist() if n.startswith("sglang/")}
        old_names = {n for n in old.namelist() if n.startswith("sglang/")}
        added = {p for p, s in changes.items() if s == "A"}
        deleted = {p for p, s in changes.items() if s == "D"}
        assert new_names == (old_names | added) - deleted
        for name in sorted(new_names):
            if name.endswith("/"):
                continue
            data = new.read(name)
            if name in changes:
                assert data == blob(tree, "qsv/upstream", "python/" + name), name
            elif name == "sglang/_version.py":
                continue
            else:
                assert data == old.read(name), f"{name} differs from the released wheel"
        # the compiled modules are the released ones; the CPU group is not in it
        assert any(n.endswith(".so") for n in new_names)
        for path in cpu_only:
            assert new.read(path) == old.read(path), path


def test_installs_no_deps_and_imports(tree, built, tmp_path):
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            "--no-compile",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(built),
        ],
        check=True,
        timeout=300,
    )
    version = expected_version(tree)
    code = (
        "import json, importlib.metadata as md, sglang\n"
        "import sglang.srt.configs.quicksviewer as c, sglang.srt.models.quicksviewer as m\n"
        "print(json.dumps([sglang.__file__, sglang.__version__, md.version('sglang'),"
        " c.__file__, m.__file__]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # not the project root: nothing else called sglang on the path
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    init, got, dist_version, config, model = json.loads(
        proc.stdout.strip().splitlines()[-1]
    )
    for path in (init, config, model):
        assert Path(path).resolve().is_relative_to(target.resolve()), path
    assert got == dist_version == version


def test_reproducible(tree, built, tmp_path):
    wheel_tool("--tag", TAG, "--build-dir", tree, "--out-dir", tmp_path)
    again = tmp_path / built.name
    assert again.read_bytes() == built.read_bytes()


def test_with_cpu_group(tree, tmp_path):
    wheel_tool(
        "--tag", TAG, "--with-cpu-group", "--build-dir", tree, "--out-dir", tmp_path
    )
    (wheel,) = tmp_path.glob("*.whl")
    cpu = n_commits(tree, "qsv/upstream..qsv/cpu")
    assert f"+qsv.{n_commits(tree, 'qsv/base..qsv/upstream')}.cpu.{cpu}-" in wheel.name
    assert check_record(wheel) == []
    with zipfile.ZipFile(wheel) as zf:
        for path in changed_files(tree, "qsv/cpu"):
            assert zf.read(path) == blob(tree, "qsv/cpu", "python/" + path), path


def test_refuses_a_stale_tree(tree, tmp_path):
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "extra.txt").write_text("not in the tree\n")
    proc = wheel_tool(
        "--tag",
        TAG,
        "--build-dir",
        tree,
        "--overlay-dir",
        overlay,
        "--out-dir",
        tmp_path / "out",
        check=False,
    )
    assert proc.returncode == 2
    assert "stale" in proc.stderr and "make apply" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_refuses_a_missing_tree(tmp_path):
    proc = wheel_tool(
        "--tag",
        TAG,
        "--build-dir",
        tmp_path / "nope",
        "--allow-stale",
        "--out-dir",
        tmp_path / "out",
        check=False,
    )
    assert proc.returncode == 2
    assert "make apply" in proc.stderr
