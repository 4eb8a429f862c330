"""``make wheelhouse`` (tools/gpu_bundle/): the offline GPU bundle.

Default suite (fast, no download): the lock is consistent and agrees with sglang's
own pins; the cached downloads (build/cache/wheelhouse, if any) match their sha256;
every Requires-Dist of the locked wheels is in the bundle or on the GPU host; every
distribution the GPU import list pulls in on this CPU host is too; re-packing and
check_imports.py work on small fakes; a bundle already built in dist/ is checked
structurally (layout, SHA256SUMS, every RECORD, ZIP_STORED, size).

Opt-in, QSV_WHEELHOUSE_BUILD=1: builds the bundle into dist/ (about 400 MB of
downloads and 6 minutes of xz the first time; a re-run with the same inputs reuses
it), checks it, and, where a python3.12 exists, installs it with install.sh and runs
check_imports.py in that bare interpreter: everything it reports missing must be
a package the GPU host has.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import Version

from tests.helpers.project import CACHE_DIR, PROJECT_ROOT, run_tools
from tools.gpu_bundle.bundle import check_bundle, default_bundle, repack
from tools.gpu_bundle.lock import FILES_DIR, load_lock, lock_problems, normalize
from tools.pin import fetch_wheel, load_pin, sha256_file
from tools.wheel import check_record, read_members, write_wheel

LOCK = load_lock()
WHEEL_CACHE = CACHE_DIR / "wheelhouse"
CHECK_IMPORTS = FILES_DIR / "check_imports.py"
BUILD_OPT_IN = os.environ.get("QSV_WHEELHOUSE_BUILD") == "1"
# import name -> distribution, where they differ beyond normalization
MODULE_DIST = {
    "PIL": "pillow",
    "cv2": "opencv-python-headless",
    "yaml": "pyyaml",
    "pynvml": "nvidia-ml-py",
    "attr": "attrs",
    "google": "protobuf",
    "zmq": "pyzmq",
    "sklearn": "scikit-learn",
}
# what a GPU host needs beyond its preinstalled packages (docs/gpu.md, section 2)
DOCUMENTED = (
    "sglang-kernel flashinfer-python xgrammar apache-tvm-ffi transformers tokenizers "
    "pydantic pydantic-core annotated-types typing-inspection fastapi starlette "
    "opentelemetry-api uvicorn openai jiter distro sniffio orjson pybase64 msgspec "
    "pyzmq setproctitle dill partial-json-parser compressed-tensors loguru gguf ipython"
).split()
GPU_ENV = dict(
    default_environment(),
    python_version="3.12",
    python_full_version="3.12.3",
    sys_platform="linux",
    platform_system="Linux",
    platform_machine="x86_64",
    implementation_name="cpython",
    platform_python_implementation="CPython",
    os_name="posix",
)


def locked():
    return {w.name: w for w in LOCK.wheels}


def cached_wheels():
    return {
        w.name: WHEEL_CACHE / w.filename
        for w in LOCK.wheels
        if (WHEEL_CACHE / w.filename).exists()
    }


def metadata(path):
    with zipfile.ZipFile(path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        return zf.read(name).decode()


def requires(path):
    for line in metadata(path).splitlines():
        if line.startswith("Requires-Dist:"):
            yield Requirement(line.split(":", 1)[1].strip())


# ------------------------------------------------------------------------ lock


def test_lock_is_consistent():
    assert lock_problems(LOCK) == []
    assert len({w.filename for w in LOCK.wheels}) == len(LOCK.wheels)
    for w in LOCK.wheels:
        assert w.why, f"{w.name}: say why it is bundled"


def test_lock_covers_the_documented_gpu_host_list():
    missing = [n for n in DOCUMENTED if n not in locked()]
    assert missing == []
    # and bundles nothing the host has, except the two sglang needs older
    on_host = sorted(n for n in locked() if n in LOCK.host_packages)
    assert on_host == sorted(LOCK.override) == ["tokenizers", "transformers"]


def test_lock_agrees_with_sglangs_own_pins():
    pin = load_pin(PROJECT_ROOT / "pin.toml")
    released = fetch_wheel(pin, CACHE_DIR, tag=pin.base_wheel)
    pins = {}
    for req in requires(released):
        if req.marker and "extra" in str(req.marker):
            continue
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if exact:
            pins[normalize(req.name)] = exact[0]
    compared = 0
    for name, w in locked().items():
        if name in pins:
            assert (
                w.version == pins[name]
            ), f"{name}: lock {w.version}, sglang pins {pins[name]}"
            compared += 1
    assert compared >= 6  # transformers, xgrammar, flashinfer, tvm-ffi, kernel, openai


def test_cached_downloads_match_the_lock():
    cached = cached_wheels()
    if not cached:
        pytest.skip(f"nothing downloaded into {WHEEL_CACHE} yet (make wheelhouse)")
    for name, path in cached.items():
        assert (
            sha256_file(path) == locked()[name].sha256
        ), f"{path.name}: sha256 differs"


def test_requires_dist_closure():
    """Every dependency of every locked wheel: bundled, on the GPU host, or waived."""
    cached = cached_wheels()
    if len(cached) != len(LOCK.wheels):
        pytest.skip(
            f"{len(cached)}/{len(LOCK.wheels)} locked wheels cached (make wheelhouse)"
        )
    bundled = {name: Version(w.version) for name, w in locked().items()}
    host = {n: Version(v) for n, v in LOCK.host_versions.items()}
    problems = []
    for name, path in cached.items():
        for req in requires(path):
            if req.marker and not req.marker.evaluate(dict(GPU_ENV, extra="")):
                continue
            dep = normalize(req.name)
            if dep in LOCK.unsatisfied.get(name, []):
                continue
            if dep in bundled:
                if not req.specifier.contains(bundled[dep], prereleases=True):
                    problems.append(f"{name}: {req} but the bundle has {bundled[dep]}")
            elif dep in LOCK.host_packages:
                if dep in host and not req.specifier.contains(
                    host[dep], prereleases=True
                ):
                    problems.append(f"{name}: {req} but the host has {host[dep]}")
            else:
                problems.append(f"{name}: {req} is neither bundled nor on the host")
    assert problems == []


def test_cpu_import_closure(tmp_path):
    """Run the GPU import list's sglang modules here (CPU) and map every imported
    module to its distribution: each must be bundled or on the GPU host."""
    sys.path.insert(0, str(FILES_DIR))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    code = (
        "import importlib, json, sys, importlib.metadata as md\n"
        "failed = {}\n"
        "for m in sys.argv[1].split(','):\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception as e:\n"
        "        failed[m] = repr(e)\n"
        "pd = md.packages_distributions()\n"
        "dists = sorted({d for n in list(sys.modules) for d in pd.get(n.split('.')[0], [])})\n"
        "print(json.dumps({'failed': failed, 'dists': dists}))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, ",".join(check_imports.SGLANG_MODULES)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if "sglang" in result["failed"]:
        pytest.skip(
            f"sglang does not import in this venv: {result['failed']['sglang']}"
        )
    assert result["failed"] == {}
    allowed = set(locked()) | set(LOCK.host_packages) | {"sglang"}
    outside = [d for d in result["dists"] if normalize(d) not in allowed]
    assert outside == [], "imported on CPU, neither bundled nor on the GPU host"


# ---------------------------------------------------------------- components


def _fake_wheel(path: Path, files):
    members = []
    for name, data in files.items():
        info = zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0))
        info.external_attr = 0o100644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        members.append((info, data))
    write_wheel(path, members, "fake-1.0.dist-info")
    return path


def test_repack_slims_stores_and_rewrites_record(tmp_path):
    src = _fake_wheel(
        tmp_path / "fake-1.0-py3-none-any.whl",
        {
            "k/__init__.py": b"x = 1\n",
            "k/flash_ops.abi3.so": b"\0" * 1000,
            "k/sm90/common_ops.abi3.so": b"9" * 100,
            "k/sm100/common_ops.abi3.so": b"1" * 100,
            "fake-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: fake\nVersion: 1.0\n",
            "fake-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nTag: py3-none-any\n",
        },
    )
    out = tmp_path / "out"
    path, dropped = repack(src, out, ("k/flash_ops.*.so",), "k/sm*/", "sm90")
    assert sorted(n for n, _ in dropped) == [
        "k/flash_ops.abi3.so",
        "k/sm100/common_ops.abi3.so",
    ]
    assert check_record(path) == []
    with zipfile.ZipFile(path) as zf:
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        assert "k/sm90/common_ops.abi3.so" in zf.namelist()
        assert "k/flash_ops.abi3.so" not in zf.namelist()
    from tools import ToolError

    with pytest.raises(ToolError, match="sm80"):
        repack(src, out, (), "k/sm*/", "sm80")
    with pytest.raises(ToolError, match="match nothing"):
        repack(src, out, ("k/nothing.so",))


def test_check_record_catches_tampering(tmp_path):
    src = _fake_wheel(
        tmp_path / "fake-1.0-py3-none-any.whl",
        {"k/a.py": b"a\n", "fake-1.0.dist-info/METADATA": b"Name: fake\n"},
    )
    assert check_record(src) == []
    members = read_members(src)
    bad = tmp_path / "bad" / src.name
    bad.parent.mkdir()
    with zipfile.ZipFile(bad, "w") as zf:
        for info, data in members:
            zf.writestr(info, b"changed\n" if info.filename == "k/a.py" else data)
        zf.writestr("k/extra.py", b"")
    problems = check_record(bad)
    assert any("k/a.py" in p and "hash" in p for p in problems)
    assert any("k/extra.py" in p for p in problems)


def test_check_imports_lists_every_missing_module(tmp_path):
    pkgs = tmp_path / "pkgs"
    (pkgs / "pkg_c").mkdir(parents=True)
    (pkgs / "pkg_a.py").write_text("import missing_x\n")
    (pkgs / "pkg_b.py").write_text("import pkg_c\nimport missing_w\n")
    (pkgs / "pkg_c" / "__init__.py").write_text(
        "import missing_y.sub\nfrom missing_z import Base\n"
        "class K(Base):\n    pass\n@missing_y.sub.decorate(3)\ndef f():\n    pass\n"
    )
    (pkgs / "pkg_d.py").write_text("raise RuntimeError('boom')\n")
    (pkgs / "pkg_e.py").write_text("import pkg_d\nimport missing_v\n")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(CHECK_IMPORTS),
            "--modules",
            "pkg_a,pkg_b,pkg_e,json,pkg_b.sub",
            "--no-versions",
            "--no-device",
            "--json",
            str(report),
        ],
        env=dict(os.environ, PYTHONPATH=str(pkgs)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    found = json.loads(report.read_text())
    # pkg_b.sub: pkg_b is a module, not a package; found once pkg_b imports (round 3)
    assert sorted(found["missing"]) == [
        "missing_v",
        "missing_w",
        "missing_x",
        "missing_y",
        "missing_z",
        "pkg_b.sub",
    ]
    assert "pkg_e failed to import" in found["problems"]
    assert "RuntimeError: boom" in proc.stdout
    assert "skipped: pkg_b failed" in proc.stdout  # pkg_b.sub

    ok = subprocess.run(
        [
            sys.executable,
            str(CHECK_IMPORTS),
            "--modules",
            "json,csv",
            "--no-versions",
            "--no-device",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_check_imports_default_list_exists_in_the_tree():
    """Every sglang module the GPU check imports is a real module of the patched tree."""
    sys.path.insert(0, str(FILES_DIR))
    try:
        import check_imports
    finally:
        sys.path.pop(0)
    tree = PROJECT_ROOT / "build" / "sglang" / "python"
    overlay = PROJECT_ROOT / "overlay" / "python"
    if not tree.is_dir():
        pytest.skip("no build/sglang (make apply)")
    for module in check_imports.SGLANG_MODULES:
        rel = Path(*module.split("."))
        found = [base / rel.with_suffix(".py") for base in (tree, overlay)] + [
            base / rel / "__init__.py" for base in (tree, overlay)
        ]
        assert any(p.is_file() for p in found), module


def test_install_sh_is_valid_shell():
    subprocess.run(["sh", "-n", str(FILES_DIR / "install.sh")], check=True)
    text = (FILES_DIR / "install.sh").read_text()
    assert "--no-index" in text and "--no-deps" in text and "--target" in text
    assert "sha256sum" in text and "PYTHONPATH" in text


# --------------------------------------------------------------------- bundle


def test_built_bundle_is_sound():
    bundle = default_bundle(LOCK.default_sm)
    if not bundle.exists():
        pytest.skip(f"{bundle.relative_to(PROJECT_ROOT)} not built (make wheelhouse)")
    assert check_bundle(bundle, LOCK) == []


def find_python312():
    """A working CPython 3.12 (a pyenv shim may exist and still fail)."""
    candidates = [shutil.which("python3.12")]
    pyenv = Path.home() / ".pyenv" / "versions"
    if pyenv.is_dir():
        candidates += [str(p) for p in sorted(pyenv.glob("3.12*/bin/python3.12"))]
    for candidate in filter(None, candidates):
        probe = subprocess.run(
            [candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


@pytest.mark.skipif(
    not BUILD_OPT_IN, reason="set QSV_WHEELHOUSE_BUILD=1 (downloads ~400 MB)"
)
def test_full_build_install_and_import(tmp_path_factory):
    tree = tmp_path_factory.mktemp("whtree") / "sglang"
    run_tools("apply", "--build-dir", tree, "--cache-dir", CACHE_DIR, check=True)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "wheelhouse",
            "build",
            "--build-dir",
            str(tree),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    print(proc.stdout[-6000:])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    bundle = default_bundle(LOCK.default_sm)
    assert check_bundle(bundle, LOCK) == []

    python312 = find_python312()
    if python312 is None:
        pytest.skip("no python3.12 here to install the cp312 wheels with")
    work = tmp_path_factory.mktemp("whinstall")
    subprocess.run(["tar", "-xJf", str(bundle), "-C", str(work)], check=True)
    root = work / "qsv-wheelhouse"
    site = work / "site"
    proc = subprocess.run(
        ["sh", str(root / "install.sh"), str(site)],
        env=dict(os.environ, PYTHON=python312),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"export PYTHONPATH={site}" in proc.stdout
    # A bare 3.12 lacks the host's packages (torch, numpy, ...): whatever the check
    # reports missing must be one of them, and versions/origins must be right.
    report = work / "report.json"
    env = dict(os.environ, PYTHONPATH=str(site))
    subprocess.run(
        [
            python312,
            str(root / "check_imports.py"),
            "--site",
            str(site),
            "--no-device",
            "--json",
            str(report),
        ],
        env=env,
        cwd=work,
        capture_output=True,
        timeout=1200,
    )
    found = json.loads(report.read_text())
    not_host = [
        m
        for m in found["missing"]
        if normalize(MODULE_DIST.get(m.split(".")[0], m.split(".")[0]))
        not in LOCK.host_packages
    ]
    assert not_host == [], "missing on a GPU host too"
    wrong = [p for p in found["problems"] if "want" in p or "is imported from" in p]
    assert wrong == []
