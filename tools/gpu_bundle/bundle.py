"""``make wheelhouse``: build and check the offline bundle for a GPU host whose
torch is preinstalled (docs/gpu.md, section 2).

    python -m tools wheelhouse [build] [--sm sm90] [--out dist/...tar.xz]
    python -m tools wheelhouse check [BUNDLE]     # structure, hashes, RECORDs, size
    python -m tools wheelhouse lock               # rewrite requirements.txt's hashes

The bundle is ONE solid tar.xz (at most 64 MiB: the GPU call carries the working tree
plus this file, 64 MiB in all) holding::

    qsv-wheelhouse/
      wheels/*.whl        the patched sglang cp312 wheel (tools/wheel.py, qsv/upstream)
                          + every wheel of requirements.txt, re-packed ZIP_STORED
                          (xz then compresses all of them together, far better than
                          deflate per file), RECORD rewritten; sglang-kernel keeps
                          one SM directory and drops FA3/FlashMLA/InfLLM ops, xgrammar
                          drops its static library (bundle.toml's [slim.*])
      SHA256SUMS          of wheels/*.whl (install.sh checks it first)
      MANIFEST.json       per wheel: version, original file and sha256, dropped files
      install.sh          pip install --no-index --no-deps --target DIR wheels/*.whl
      check_imports.py    imports the GPU path; lists every missing module in one run
      README.txt

The re-packed wheels are not the files that requirements.txt hashes, so the GPU host
checks SHA256SUMS (of the re-packed files) rather than the lock; MANIFEST.json ties
each re-packed wheel to the locked file it was made from. Downloads are cached,
hash-checked, under build/cache/wheelhouse/; a rebuild reuses them and needs no
network.
"""

import fnmatch
import hashlib
import io
import json
import lzma
import os
import re
import tarfile
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from tools import PROJECT_ROOT, ToolError
from tools.gpu_bundle.lock import (
    FILES_DIR,
    LOCK_PATH,
    Lock,
    fetch_locked,
    load_lock,
    normalize,
)
from tools.pin import sha256_file
from tools.wheel import check_record, dist_info_dir, read_members, write_wheel

TOP = "qsv-wheelhouse"
MiB = 1 << 20
# fixed metadata for a reproducible tar: same inputs, same bytes
TAR_MTIME = 1764201600  # 2025-11-27 00:00:00 UTC


def default_bundle(sm: str) -> Path:
    return PROJECT_ROOT / "dist" / f"qsv-wheelhouse-cp312-{sm}.tar.xz"


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
            f"{src.name}: drop pattern(s) {unused} match nothing; fix bundle.toml"
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
    sources = sorted(FILES_DIR.glob("*.py")) + [PROJECT_ROOT / "tools" / "wheel.py"]
    for part in (
        "format 1",
        sm,
        str(xz_preset),
        lock.path.read_bytes(),
        lock.settings_path.read_bytes(),
        sha256_file(sglang_wheel),
        (FILES_DIR / "install.sh").read_bytes(),
        *(path.read_bytes() for path in sources),
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
            "(see the size table above); drop or slim a wheel in tools/gpu_bundle/"
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
