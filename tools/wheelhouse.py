"""``make wheelhouse``: the offline bundle for a GPU host whose torch is preinstalled.

    python -m tools.wheelhouse [build] [--sm sm90] [--out dist/...tar.xz]
    python -m tools.wheelhouse check [BUNDLE]     # structure, hashes, RECORDs, size
    python -m tools.wheelhouse lock               # re-resolve tools/wheelhouse.lock

The bundle is ONE solid tar.xz (at most 64 MiB: the GPU call carries the working tree
plus this file, 64 MiB in all) holding::

    qsv-wheelhouse/
      wheels/*.whl        the patched sglang cp312 wheel (tools.wheel, qsv/upstream)
                          + every wheel of tools/wheelhouse.lock, re-packed ZIP_STORED
                          (xz then compresses all of them together, far better than
                          deflate per file), RECORD rewritten; sglang-kernel keeps
                          one SM directory and drops FA3/FlashMLA/InfLLM ops, xgrammar
                          drops its static library
      SHA256SUMS          of wheels/*.whl (install.sh checks it first)
      MANIFEST.json       per wheel: version, original file and sha256, dropped files
      install.sh          pip install --no-index --no-deps --target DIR wheels/*.whl
      check_imports.py    imports the GPU path; lists every missing module in one run
      README.txt

Downloads are cached, hash-checked, under build/cache/wheelhouse/; a rebuild reuses
them and needs no network.
"""

import argparse
import fnmatch
import hashlib
import io
import json
import lzma
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tools import PROJECT_ROOT, ToolError
from tools.pin import sha256_file
from tools.wheel import check_record, dist_info_dir, read_members, write_wheel

LOCK_PATH = PROJECT_ROOT / "tools" / "wheelhouse.lock"
FILES_DIR = PROJECT_ROOT / "tools" / "gpu_bundle"
TOP = "qsv-wheelhouse"
MiB = 1 << 20
# fixed metadata for a reproducible tar: same inputs, same bytes
TAR_MTIME = 1764201600  # 2025-11-27 00:00:00 UTC


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def default_bundle(sm: str) -> Path:
    return PROJECT_ROOT / "dist" / f"qsv-wheelhouse-cp312-{sm}.tar.xz"


# ------------------------------------------------------------------------ lock


@dataclass(frozen=True)
class LockedWheel:
    name: str
    version: str
    why: str
    filename: str
    sha256: str
    drop: Tuple[str, ...] = ()
    sm_dirs: Optional[str] = None


@dataclass
class Lock:
    path: Path
    python_version: str
    implementation: str
    abis: List[str]
    manylinux_max: int
    max_mib: float
    default_sm: str
    host_packages: List[str]
    host_versions: Dict[str, str]
    override: List[str]
    unsatisfied: Dict[str, List[str]]
    wheels: List[LockedWheel] = field(default_factory=list)

    def platforms(self) -> List[str]:
        tags = [f"manylinux_2_{n}_x86_64" for n in range(self.manylinux_max, 4, -1)]
        return tags + [
            "manylinux2014_x86_64",
            "manylinux2010_x86_64",
            "manylinux1_x86_64",
        ]

    def pip_download_cmd(self, dest: Path, requirements: List[str]) -> List[str]:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", self.python_version]
        cmd += ["--implementation", self.implementation]
        for abi in self.abis:
            cmd += ["--abi", abi]
        for platform in self.platforms():
            cmd += ["--platform", platform]
        cmd += ["--progress-bar", "off", "--disable-pip-version-check"]
        return cmd + ["-d", str(dest), *requirements]


def load_lock(path: Path = LOCK_PATH) -> Lock:
    try:
        data = tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ToolError(f"lock file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{path}: not valid TOML: {exc}") from None
    try:
        bundle, host = data["bundle"], data["host"]
        lock = Lock(
            path=Path(path),
            python_version=bundle["python_version"],
            implementation=bundle["implementation"],
            abis=list(bundle["abis"]),
            manylinux_max=int(bundle["manylinux_max"]),
            max_mib=float(bundle["max_mib"]),
            default_sm=bundle["default_sm"],
            host_packages=[normalize(p) for p in host["packages"]],
            host_versions={
                normalize(k): v for k, v in host.get("versions", {}).items()
            },
            override=[normalize(p) for p in host.get("override", [])],
            unsatisfied={
                normalize(k): [normalize(x) for x in v]
                for k, v in host.get("unsatisfied", {}).items()
            },
        )
        for entry in data.get("wheel", []):
            lock.wheels.append(
                LockedWheel(
                    name=normalize(entry["name"]),
                    version=entry["version"],
                    why=entry.get("why", ""),
                    filename=entry.get("filename", ""),
                    sha256=entry.get("sha256", "").lower(),
                    drop=tuple(entry.get("drop", ())),
                    sm_dirs=entry.get("sm_dirs"),
                )
            )
    except KeyError as exc:
        raise ToolError(f"{path}: missing key {exc}") from None
    names = [w.name for w in lock.wheels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ToolError(f"{path}: listed twice: {dupes}")
    return lock


def lock_problems(lock: Lock) -> List[str]:
    """Consistency of the lock itself (no download): every entry pinned, file names
    that match name and version, no host package bundled unless overridden."""
    problems = []
    for w in lock.wheels:
        if not w.filename or not re.fullmatch(r"[0-9a-f]{64}", w.sha256):
            problems.append(
                f"{w.name}: no filename/sha256 (run: python -m tools.wheelhouse lock)"
            )
            continue
        parts = w.filename[: -len(".whl")].split("-")
        if not w.filename.endswith(".whl") or len(parts) not in (5, 6):
            problems.append(f"{w.name}: {w.filename} is not a wheel file name")
            continue
        if normalize(parts[0]) != w.name or parts[1] != w.version:
            problems.append(
                f"{w.name}=={w.version}: file {w.filename} is another release"
            )
        py, abi, plat = parts[-3:]
        if not _python_ok(py.split("."), abi):
            problems.append(
                f"{w.name}: python tag {py}-{abi} does not fit CPython 3.12"
            )
        if abi not in lock.abis:
            problems.append(f"{w.name}: ABI {abi} is not one of {lock.abis}")
        if plat != "any" and not set(plat.split(".")) & set(lock.platforms()):
            problems.append(f"{w.name}: platform {plat} is not manylinux x86_64")
        if w.name in lock.host_packages and w.name not in lock.override:
            problems.append(f"{w.name}: the GPU host has it already (host.packages)")
    return problems


def _python_ok(tags: List[str], abi: str) -> bool:
    for tag in tags:
        if tag in ("py3", "cp312") or re.fullmatch(r"py3\d*", tag):
            return True
        m = re.fullmatch(r"cp3(\d+)", tag)
        if m and abi == "abi3" and int(m.group(1)) <= 12:
            return True
    return False


def update_lock(lock: Lock, cache_dir: Path) -> List[str]:
    """Resolve every name==version again and rewrite the filename/sha256 lines."""
    dest = cache_dir / "wheelhouse"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".lock-") as tmp:
        reqs = [f"{w.name}=={w.version}" for w in lock.wheels]
        _run_pip(lock.pip_download_cmd(Path(tmp), reqs))
        found = {}
        for f in Path(tmp).glob("*.whl"):
            found[normalize(f.name.split("-")[0])] = f
        text = lock.path.read_text()
        changed = []
        for w in lock.wheels:
            got = found.get(w.name)
            if got is None:
                raise ToolError(f"pip gave no wheel for {w.name}=={w.version}")
            digest = sha256_file(got)
            if (got.name, digest) != (w.filename, w.sha256):
                changed.append(f"{w.name}: {w.filename or '-'} -> {got.name}")
            text = _set_entry(text, w.name, got.name, digest)
            target = dest / got.name
            if not target.exists():
                os.replace(got, target)
        lock.path.write_text(text)
    return changed


def _set_entry(text: str, name: str, filename: str, digest: str) -> str:
    blocks = re.split(r"(?m)^(?=\[\[wheel\]\])", text)
    for i, block in enumerate(blocks):
        m = re.search(r'(?m)^name = "([^"]+)"', block)
        if not block.startswith("[[wheel]]") or not m or normalize(m.group(1)) != name:
            continue
        block = re.sub(r'(?m)^(filename|sha256) = ".*"\n', "", block)
        block = (
            block.rstrip("\n") + f'\nfilename = "{filename}"\nsha256 = "{digest}"\n\n'
        )
        blocks[i] = block
    return "".join(blocks).rstrip("\n") + "\n"


# -------------------------------------------------------------------- download


def _run_pip(cmd: List[str]) -> None:
    print("wheelhouse: " + " ".join(cmd[:3]) + f" ... ({len(cmd)} args)", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"pip download failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def fetch_locked(lock: Lock, cache_dir: Path) -> Dict[str, Path]:
    """Every wheel of the lock, from the cache or downloaded; each sha256-checked."""
    problems = lock_problems(lock)
    if problems:
        raise ToolError(f"{lock.path} is inconsistent:\n  " + "\n  ".join(problems))
    dest = cache_dir / "wheelhouse"
    dest.mkdir(parents=True, exist_ok=True)
    missing = [w for w in lock.wheels if not (dest / w.filename).exists()]
    if missing:
        with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
            _run_pip(
                lock.pip_download_cmd(
                    Path(tmp), [f"{w.name}=={w.version}" for w in missing]
                )
            )
            for w in missing:
                got = Path(tmp) / w.filename
                if not got.exists():
                    names = ", ".join(p.name for p in Path(tmp).iterdir())
                    raise ToolError(
                        f"pip did not give {w.filename} for {w.name}=={w.version} "
                        f"(got: {names}); the index changed? rerun `python -m "
                        "tools.wheelhouse lock` and review the diff"
                    )
                os.replace(got, dest / w.filename)
    paths = {}
    for w in lock.wheels:
        path = dest / w.filename
        actual = sha256_file(path)
        if actual != w.sha256:
            rejected = path.with_name(path.name + ".rejected")
            os.replace(path, rejected)
            raise ToolError(
                f"refusing {w.filename}: sha256 {actual}, the lock says {w.sha256}; "
                f"moved aside to {rejected}"
            )
        paths[w.name] = path
    return paths


# ---------------------------------------------------------------------- repack


@dataclass
class Repacked:
    name: str
    version: str
    path: Path
    source: str
    source_sha256: str
    source_bytes: int
    stored_bytes: int
    dropped: List[Tuple[str, int]] = field(default_factory=list)


def available_sms(wheel: Path, sm_dirs: str) -> List[str]:
    with zipfile.ZipFile(wheel) as zf:
        found = set()
        for n in zf.namelist():
            if fnmatch.fnmatch(n, sm_dirs + "*"):
                found.add("sm" + n[len(sm_dirs.split("sm*")[0]) + 2 :].split("/")[0])
    return sorted(found)


def repack(
    src: Path,
    dst_dir: Path,
    drop: Tuple[str, ...] = (),
    sm_dirs: Optional[str] = None,
    sm: Optional[str] = None,
) -> Tuple[Path, List[Tuple[str, int]]]:
    """``src`` re-packed ZIP_STORED into ``dst_dir`` (same file name), minus the files
    matching ``drop`` and, with ``sm_dirs`` (``sgl_kernel/sm*/``), every SM directory
    but ``sm``.  RECORD is rewritten.  Each drop pattern must match something."""
    members = read_members(src)
    dist = dist_info_dir(i.filename for i, _ in members)
    keep, dropped, used = [], [], set()
    sm_prefix = None
    if sm_dirs:
        if "sm*" not in sm_dirs:
            raise ToolError(f"sm_dirs {sm_dirs!r} must contain 'sm*'")
        sm_prefix = sm_dirs.replace("sm*", sm)
        if not any(i.filename.startswith(sm_prefix) for i, _ in members):
            raise ToolError(
                f"{src.name} has no {sm_prefix}; it has "
                f"{available_sms(src, sm_dirs)}"
            )
    for info, data in members:
        name = info.filename
        hit = [p for p in drop if fnmatch.fnmatch(name, p)]
        in_other_sm = (
            sm_dirs is not None
            and fnmatch.fnmatch(name, sm_dirs + "*")
            and not name.startswith(sm_prefix)
        )
        if hit or in_other_sm:
            used.update(hit)
            if not name.endswith("/"):
                dropped.append((name, len(data)))
            continue
        keep.append((info, data))
    unused = [p for p in drop if p not in used]
    if unused:
        raise ToolError(
            f"{src.name}: drop pattern(s) {unused} match nothing; fix the lock"
        )
    out = dst_dir / src.name
    write_wheel(out, keep, dist, compression=zipfile.ZIP_STORED)
    problems = check_record(out)
    if problems:
        raise ToolError("\n".join(problems))
    return out, dropped


# ---------------------------------------------------------------------- bundle


def _tar_add(
    tar: tarfile.TarFile, arcname: str, data: bytes, mode: int = 0o644
) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    info.mtime = TAR_MTIME
    info.mode = mode
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _readme(sm: str, repacked: List[Repacked], sglang_version: str) -> str:
    lines = [
        "Quicksviewer on SGLang 0.5.17: offline wheelhouse for a GPU host (make wheelhouse)",
        "",
        f"For: CPython 3.12, x86_64 Linux, torch 2.11.0+cu130 preinstalled, sgl_kernel {sm}.",
        f"sglang {sglang_version} (the series + overlay, no CPU group).",
        "",
        "  sh install.sh /tmp/site                  # pip --no-index --no-deps --target",
        "  export PYTHONPATH=/tmp/site",
        f"  python3 check_imports.py --site /tmp/site --expect-sm {sm}",
        "",
        "Engine arguments on that host: see docs/gpu.md (attention_backend='triton',",
        "sampling_backend='pytorch', mm_attention_backend='sdpa', dtype='bfloat16').",
        "",
        "Wheels:",
    ]
    for r in repacked:
        note = (
            f"  (dropped {len(r.dropped)} files, {sum(s for _, s in r.dropped) / MiB:.1f} MiB)"
            if r.dropped
            else ""
        )
        lines.append(f"  {r.name}=={r.version}{note}")
    return "\n".join(lines) + "\n"


def size_table(repacked: List[Repacked]) -> str:
    rows = sorted(repacked, key=lambda r: -r.stored_bytes)
    out = [
        f"  {'wheel':28s} {'version':16s} {'.whl MiB':>9s} {'stored MiB':>11s} {'dropped MiB':>12s}"
    ]
    for r in rows:
        dropped = sum(s for _, s in r.dropped) / MiB
        out.append(
            f"  {r.name:28s} {r.version:16s} {r.source_bytes / MiB:9.2f} "
            f"{r.stored_bytes / MiB:11.2f} {dropped:12.2f}"
        )
    out.append(
        f"  {'total (' + str(len(rows)) + ' wheels)':45s} "
        f"{sum(r.source_bytes for r in rows) / MiB:9.2f} "
        f"{sum(r.stored_bytes for r in rows) / MiB:11.2f}"
    )
    return "\n".join(out)


def _inputs_key(lock: Lock, sglang_wheel: Path, sm: str, xz_preset: int) -> str:
    """What the bundle is made of: a rebuild with the same key gives the same bytes."""
    digest = hashlib.sha256()
    for part in (
        "format 1",
        sm,
        str(xz_preset),
        lock.path.read_bytes(),
        sha256_file(sglang_wheel),
        (FILES_DIR / "install.sh").read_bytes(),
        (FILES_DIR / "check_imports.py").read_bytes(),
        Path(__file__).read_bytes(),
        (Path(__file__).parent / "wheel.py").read_bytes(),
    ):
        data = part if isinstance(part, bytes) else part.encode()
        digest.update(len(data).to_bytes(8, "big") + data)
    return digest.hexdigest()


def build_bundle(
    paths,
    sm: Optional[str] = None,
    out: Optional[Path] = None,
    lock_path: Path = LOCK_PATH,
    sglang_wheel: Optional[Path] = None,
    xz_preset: int = 9,
    max_mib: Optional[float] = None,
    allow_stale: bool = False,
    force: bool = False,
) -> Path:
    start = time.monotonic()
    lock = load_lock(lock_path)
    sm = sm or lock.default_sm
    if not re.fullmatch(r"sm\d+", sm):
        raise ToolError(f"--sm {sm!r}: expected sm90, sm100, ...")
    out = Path(out or default_bundle(sm))
    max_mib = lock.max_mib if max_mib is None else max_mib
    stage = paths.build.parent / "wheelhouse" / sm
    wheels_dir = stage / "wheels"
    if wheels_dir.exists():
        for old in wheels_dir.glob("*.whl"):
            old.unlink()
    wheels_dir.mkdir(parents=True, exist_ok=True)

    # 1. the patched sglang wheel for cp312 (qsv/upstream: series + overlay)
    if sglang_wheel is None:
        from tools.wheel import build_wheels

        sglang_wheel = build_wheels(
            paths, tags=["cp312"], out_dir=stage / "sglang", allow_stale=allow_stale
        )[0]
    sglang_wheel = Path(sglang_wheel)
    if "-cp312-" not in sglang_wheel.name or "+qsv." not in sglang_wheel.name:
        raise ToolError(f"{sglang_wheel.name} is not a patched cp312 sglang wheel")

    # 2. the locked third-party wheels, hash-checked
    sources = fetch_locked(lock, paths.cache)
    key = _inputs_key(lock, sglang_wheel, sm, xz_preset)
    key_file = out.with_name(out.name + ".inputs")
    if (
        not force
        and out.exists()
        and key_file.exists()
        and key_file.read_text().strip() == key
    ):
        size = out.stat().st_size
        print(
            f"wheelhouse: {out} is up to date ({size / MiB:.2f} MiB, same inputs "
            f"{key[:12]}); --force rebuilds it"
        )
        if size > max_mib * MiB:
            raise ToolError(f"{out.name} is {size / MiB:.2f} MiB > {max_mib:g} MiB")
        return out
    if key_file.exists():
        key_file.unlink()

    # 3. every wheel re-packed ZIP_STORED (RECORD rewritten, slimmed per the lock)
    repacked: List[Repacked] = []
    t0 = time.monotonic()
    jobs = [
        (normalize("sglang"), sglang_wheel.name.split("-")[1], sglang_wheel, (), None)
    ]
    jobs += [
        (w.name, w.version, sources[w.name], w.drop, w.sm_dirs) for w in lock.wheels
    ]
    for name, version, src, drop, sm_dirs in jobs:
        path, dropped = repack(src, wheels_dir, drop, sm_dirs, sm if sm_dirs else None)
        repacked.append(
            Repacked(
                name=name,
                version=version,
                path=path,
                source=src.name,
                source_sha256=sha256_file(src),
                source_bytes=src.stat().st_size,
                stored_bytes=path.stat().st_size,
                dropped=dropped,
            )
        )
    print(
        f"wheelhouse: {len(repacked)} wheels re-packed in {time.monotonic() - t0:.1f}s"
    )

    # 4. the bundle
    sums = "".join(f"{sha256_file(r.path)}  {r.path.name}\n" for r in repacked)
    manifest = {
        "format": 1,
        "python": lock.python_version,
        "sm": sm,
        "sglang": repacked[0].version,
        "wheels": [
            {
                "name": r.name,
                "version": r.version,
                "file": r.path.name,
                "sha256": sha256_file(r.path),
                "source_file": r.source,
                "source_sha256": r.source_sha256,
                "dropped": [n for n, _ in r.dropped],
            }
            for r in repacked
        ],
    }
    files = [
        (
            f"{TOP}/README.txt",
            _readme(sm, repacked, repacked[0].version).encode(),
            0o644,
        ),
        (f"{TOP}/install.sh", (FILES_DIR / "install.sh").read_bytes(), 0o755),
        (
            f"{TOP}/check_imports.py",
            (FILES_DIR / "check_imports.py").read_bytes(),
            0o755,
        ),
        (
            f"{TOP}/MANIFEST.json",
            (json.dumps(manifest, indent=2) + "\n").encode(),
            0o644,
        ),
        (f"{TOP}/SHA256SUMS", sums.encode(), 0o644),
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    t0 = time.monotonic()
    with open(tmp, "wb") as raw:
        with lzma.LZMAFile(raw, "w", format=lzma.FORMAT_XZ, preset=xz_preset) as xz:
            with tarfile.open(fileobj=xz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for arcname, data, mode in files:
                    _tar_add(tar, arcname, data, mode)
                for r in sorted(repacked, key=lambda r: r.path.name):
                    _tar_add(tar, f"{TOP}/wheels/{r.path.name}", r.path.read_bytes())
    os.replace(tmp, out)
    size = out.stat().st_size
    print(f"wheelhouse: xz -{xz_preset} in {time.monotonic() - t0:.1f}s")
    print(size_table(repacked))
    print(
        f"wheelhouse: {out} {size / MiB:.2f} MiB (limit {max_mib:g} MiB), "
        f"{len(repacked)} wheels, {time.monotonic() - start:.1f}s in all"
    )
    if size <= max_mib * MiB:
        key_file.write_text(key + "\n")
    if size > max_mib * MiB:
        raise ToolError(
            f"{out.name} is {size / MiB:.2f} MiB, over the {max_mib:g} MiB limit "
            "(see the size table above); drop or slim a wheel in tools/wheelhouse.lock"
        )
    return out


# ----------------------------------------------------------------------- check


def check_bundle(
    bundle: Path, lock: Optional[Lock] = None, max_mib: Optional[float] = None
) -> List[str]:
    """Problems with a built bundle: size, layout, SHA256SUMS, every wheel's RECORD,
    and the wheel set against the lock (each locked wheel once, plus sglang)."""
    lock = lock or load_lock()
    max_mib = lock.max_mib if max_mib is None else max_mib
    problems = []
    size = bundle.stat().st_size
    if size > max_mib * MiB:
        problems.append(f"{bundle.name}: {size / MiB:.2f} MiB > {max_mib:g} MiB")
    with tempfile.TemporaryDirectory(prefix="qsv-wheelhouse-check-") as tmp:
        with tarfile.open(bundle, "r:xz") as tar:
            for member in tar.getmembers():
                if (
                    member.name.startswith("/")
                    or ".." in member.name.split("/")
                    or not member.isfile()
                ):
                    problems.append(f"unsafe or odd member {member.name}")
                    return problems
            tar.extractall(tmp)
        root = Path(tmp) / TOP
        for name in (
            "install.sh",
            "check_imports.py",
            "MANIFEST.json",
            "SHA256SUMS",
            "README.txt",
        ):
            if not (root / name).is_file():
                problems.append(f"{TOP}/{name} is missing")
        if problems:
            return problems
        sums = {}
        for line in (root / "SHA256SUMS").read_text().splitlines():
            digest, fname = line.split(None, 1)
            sums[fname.strip()] = digest
        wheels = sorted((root / "wheels").glob("*.whl"))
        if sorted(sums) != [w.name for w in wheels]:
            problems.append("SHA256SUMS and wheels/ list different files")
        for whl in wheels:
            if sums.get(whl.name) != sha256_file(whl):
                problems.append(f"{whl.name}: sha256 differs from SHA256SUMS")
            with zipfile.ZipFile(whl) as zf:
                if any(i.compress_type != zipfile.ZIP_STORED for i in zf.infolist()):
                    problems.append(f"{whl.name}: not ZIP_STORED")
            problems += check_record(whl)
        by_name = {}
        for whl in wheels:
            by_name.setdefault(normalize(whl.name.split("-")[0]), []).append(whl.name)
        expected = {w.name: w.filename for w in lock.wheels}
        expected["sglang"] = None
        for name, files in by_name.items():
            if len(files) > 1:
                problems.append(f"{name}: {len(files)} wheels {files}")
            if name not in expected:
                problems.append(f"{name}: not in the lock")
            elif expected[name] and files[0] != expected[name]:
                problems.append(f"{name}: {files[0]}, the lock says {expected[name]}")
        for name in expected:
            if name not in by_name:
                problems.append(f"{name}: missing from the bundle")
        manifest = json.loads((root / "MANIFEST.json").read_text())
        for entry in manifest["wheels"]:
            want = {w.name: w for w in lock.wheels}.get(entry["name"])
            if want and entry["source_sha256"] != want.sha256:
                problems.append(
                    f"{entry['name']}: made from a file the lock does not pin"
                )
    return problems


# ------------------------------------------------------------------------- cli


def main(argv=None) -> int:
    from tools.__main__ import _add_path_options, _paths

    parser = argparse.ArgumentParser(
        prog="python -m tools.wheelhouse",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command", nargs="?", default="build", choices=["build", "check", "lock"]
    )
    parser.add_argument(
        "bundle", nargs="?", type=Path, default=None, help="check: the tar.xz"
    )
    _add_path_options(parser)
    parser.add_argument("--lock", type=Path, default=LOCK_PATH)
    parser.add_argument(
        "--sm",
        default=None,
        help="sgl_kernel SM directory: sm90 (H100/H200, default) or sm100 (any other GPU)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: dist/qsv-wheelhouse-cp312-<sm>.tar.xz",
    )
    parser.add_argument(
        "--sglang-wheel",
        type=Path,
        default=None,
        help="use this patched cp312 wheel instead of building one",
    )
    parser.add_argument("--xz-preset", type=int, default=9)
    parser.add_argument(
        "--max-mib",
        type=float,
        default=None,
        help="size limit (default: the lock's, 64)",
    )
    parser.add_argument("--allow-stale", action="store_true", help="see tools.wheel")
    parser.add_argument(
        "--force", action="store_true", help="rebuild even if the inputs did not change"
    )
    args = parser.parse_args(argv)
    try:
        if args.command == "lock":
            changed = update_lock(load_lock(args.lock), args.cache_dir)
            print(
                "\n".join(changed) if changed else "wheelhouse: the lock is up to date"
            )
        elif args.command == "check":
            lock = load_lock(args.lock)
            bundle = args.bundle or default_bundle(args.sm or lock.default_sm)
            problems = check_bundle(bundle, lock, args.max_mib)
            if problems:
                raise ToolError(f"{bundle}:\n  " + "\n  ".join(problems))
            print(f"wheelhouse: {bundle} ok ({bundle.stat().st_size / MiB:.2f} MiB)")
        else:
            build_bundle(
                _paths(args),
                sm=args.sm,
                out=args.out,
                lock_path=args.lock,
                sglang_wheel=args.sglang_wheel,
                xz_preset=args.xz_preset,
                max_mib=args.max_mib,
                allow_stale=args.allow_stale,
                force=args.force,
            )
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
