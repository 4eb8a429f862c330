"""``make wheel``: one patched SGLang wheel per CPython tag, from the patched tree.

    python -m tools wheel [--tag cp311 --tag cp312] [--with-cpu-group] [--out-dir dist]

Each wheel is the released, hash-checked SGLang wheel of that tag (pin.toml, cached
under build/cache by tools.pin) with the Python files that the patched tree changes
(``git diff qsv/base..qsv/upstream``) replaced, added or removed.  The compiled
``_core`` modules and every other file come from the released wheel unchanged, which
is why there is one wheel per tag.  The files are read from git objects of the tree
(build/sglang), never from its work tree, so uncommitted edits there cannot leak in.

Version: ``0.5.17+qsv.<n>``, a PEP 440 local label, where ``n`` is the number of
commits in ``qsv/base..qsv/upstream`` (the series patches plus the overlay commit).
``--with-cpu-group`` builds from ``qsv/cpu`` instead and appends ``.cpu.<m>`` (m = the
number of CPU commits): ``0.5.17+qsv.6.cpu.3``.  ``n`` counts commits, it does not
hash them: the exact source is recorded in ``sglang._version.commit_id`` (the tree
commit) and in ``<dist-info>/QSV_BUILD.json`` (base wheel sha256, commits, files).

Rewritten in each wheel: ``sglang/_version.py`` (so ``sglang.__version__`` is the new
version), the dist-info directory name, ``METADATA``'s ``Version:`` line, ``WHEEL``'s
``Generator:`` line and ``RECORD`` (sha256 and size of every file).  ``Requires-Dist``
is kept exactly as released: on a GPU host ``pip install <wheel>`` then pulls the same
dependencies as stock sglang 0.5.17; CPU hosts install it with ``--no-deps`` next to
tools/requirements-cpu.txt (docs/gpu.md).
"""

import base64
import csv
import hashlib
import io
import json
import os
import re
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from tools import PROJECT_ROOT, ToolError

BASE_TAG = "qsv/base"
UPSTREAM_BRANCH = "qsv/upstream"
CPU_BRANCH = "qsv/cpu"
TREE_PREFIX = "python/"  # the tree holds python/sglang/...; the wheel holds sglang/...
PACKAGE_PREFIX = "python/sglang/"
BUILD_INFO = "QSV_BUILD.json"
GENERATOR = "qsv tools.wheel"


# ------------------------------------------------------------------ wheel files


def record_hash(data: bytes) -> str:
    """The ``sha256=...`` field of a RECORD line (urlsafe base64, no padding)."""
    digest = hashlib.sha256(data).digest()
    return "sha256=" + base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def dist_info_dir(names: Iterable[str]) -> str:
    """The one top-level ``*.dist-info`` directory of a wheel's member names."""
    found = {
        n.split("/", 1)[0] for n in names if n.split("/", 1)[0].endswith(".dist-info")
    }
    if len(found) != 1:
        raise ToolError(f"expected one .dist-info directory, found {sorted(found)}")
    return found.pop()


def render_record(entries: List[Tuple[str, bytes]], record_name: str) -> bytes:
    """RECORD for ``entries`` (name, data) in that order, itself listed last."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for name, data in entries:
        if name == record_name or name.endswith("/"):
            continue
        writer.writerow([name, record_hash(data), str(len(data))])
    writer.writerow([record_name, "", ""])
    return out.getvalue().encode()


def check_record(wheel: Path) -> List[str]:
    """Problems with ``wheel``'s RECORD: a file missing from it or from the archive,
    a wrong hash or size.  An empty list means the RECORD is exact."""
    problems = []
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if not n.endswith("/")]
        dist_info = dist_info_dir(names)
        record_name = f"{dist_info}/RECORD"
        if record_name not in names:
            return [f"{wheel.name}: no {record_name}"]
        rows = list(csv.reader(io.StringIO(zf.read(record_name).decode())))
        listed = {}
        for row in rows:
            if not row:
                continue
            if len(row) != 3:
                problems.append(f"{wheel.name}: malformed RECORD row {row!r}")
                continue
            if row[0] in listed:
                problems.append(f"{wheel.name}: {row[0]} listed twice in RECORD")
            listed[row[0]] = row
        for name in names:
            row = listed.pop(name, None)
            if row is None:
                problems.append(f"{wheel.name}: {name} is not in RECORD")
                continue
            if name == record_name:
                continue
            data = zf.read(name)
            if row[1] != record_hash(data):
                problems.append(f"{wheel.name}: {name}: RECORD hash differs")
            if row[2] != str(len(data)):
                problems.append(
                    f"{wheel.name}: {name}: RECORD size {row[2]} != {len(data)}"
                )
        for name in listed:
            problems.append(f"{wheel.name}: RECORD lists {name}, not in the archive")
    return problems


def write_wheel(
    path: Path,
    members: List[Tuple[zipfile.ZipInfo, bytes]],
    dist_info: str,
    compression: Optional[int] = None,
) -> None:
    """Write ``members`` (info, data) to ``path`` with a freshly computed RECORD last.

    ``compression`` overrides every member's compression (ZIP_STORED for bundles);
    otherwise each member keeps its own.  Written to a temp file, then renamed.
    """
    record_name = f"{dist_info}/RECORD"
    members = [(i, d) for i, d in members if i.filename != record_name]
    record = render_record([(i.filename, d) for i, d in members], record_name)
    last = members[-1][0] if members else None
    record_info = zipfile.ZipInfo(
        record_name, last.date_time if last else (1980, 1, 1, 0, 0, 0)
    )
    record_info.external_attr = 0o100644 << 16
    record_info.compress_type = last.compress_type if last else zipfile.ZIP_DEFLATED
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".whl.part")
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w") as out:
            for info, data in members + [(record_info, record)]:
                new = zipfile.ZipInfo(info.filename, info.date_time)
                new.external_attr = info.external_attr
                new.create_system = 3  # unix: keep the mode bits pip applies
                new.compress_type = (
                    compression if compression is not None else info.compress_type
                )
                if info.filename.endswith("/"):
                    new.compress_type = zipfile.ZIP_STORED
                out.writestr(new, data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_members(wheel: Path) -> List[Tuple[zipfile.ZipInfo, bytes]]:
    with zipfile.ZipFile(wheel) as zf:
        return [(info, zf.read(info)) for info in zf.infolist()]


# ------------------------------------------------------------------- the tree


def _rev(repo, build: Path, name: str) -> str:
    from tools.git import rev

    found = rev(repo, name)
    if found is None:
        raise ToolError(
            f"{build} has no {name}: build the patched tree first (make apply)"
        )
    return found


@dataclass
class Change:
    status: str  # A, M or D
    path: str  # in the wheel: sglang/...
    data: bytes = b""  # at the head (A, M)
    mode: int = 0o644
    base_data: Optional[bytes] = None  # at qsv/base (M, D)


@dataclass
class TreeChanges:
    base: str
    head: str
    head_ref: str
    upstream_commits: int
    cpu_commits: int
    date: Tuple[int, int, int, int, int, int]
    changes: List[Change] = field(default_factory=list)
    ignored: List[str] = field(default_factory=list)  # outside python/sglang/


def tree_changes(build: Path, with_cpu_group: bool = False) -> TreeChanges:
    """What the series + overlay (+ the CPU group) change, read from git objects."""
    from tools import git  # gitpython: imported here, the wheel-file helpers need none

    if not (build / ".git").exists():
        raise ToolError(f"{build} is not a patched tree: run `make apply` first")
    repo = git.Repo(build)
    base = _rev(repo, build, BASE_TAG)
    upstream = _rev(repo, build, UPSTREAM_BRANCH)
    head_ref = CPU_BRANCH if with_cpu_group else UPSTREAM_BRANCH
    head = _rev(repo, build, head_ref)
    for older, newer in ((base, upstream), (upstream, head)):
        if not git.is_ancestor(repo, older, newer):
            raise ToolError(f"{build}: {older[:12]} is not an ancestor of {newer[:12]}")
    count = lambda a, b: int(git.git_out(repo, "rev-list", "--count", f"{a}..{b}"))
    stamp = int(git.git_out(repo, "log", "-1", "--format=%ct", head))
    result = TreeChanges(
        base=base,
        head=head,
        head_ref=head_ref,
        upstream_commits=count(base, upstream),
        cpu_commits=count(upstream, head) if with_cpu_group else 0,
        date=tuple(time.gmtime(max(stamp, 315532800))[:6]),
    )
    raw = git.git_out(
        repo, "diff", "--no-renames", "--name-status", "-z", base, head, strip=False
    )
    fields = [f for f in raw.split("\0") if f]
    for status, path in zip(fields[0::2], fields[1::2]):
        if not path.startswith(PACKAGE_PREFIX):
            result.ignored.append(path)
            continue
        change = Change(status=status[0], path=path[len(TREE_PREFIX) :])
        if change.status not in "AMD":
            raise ToolError(f"{build}: unexpected change {status} {path}")
        if change.status != "D":
            listing = git.git_out(repo, "ls-tree", head, "--", path).split()
            if listing[0] not in ("100644", "100755"):
                raise ToolError(
                    f"{path}: mode {listing[0]} (symlink?) cannot go in a wheel"
                )
            change.mode = 0o755 if listing[0] == "100755" else 0o644
            change.data = git.blob(repo, head, path)
        if change.status != "A":
            change.base_data = git.blob(repo, base, path)
        result.changes.append(change)
    return result


def check_fresh(paths, allow_stale: bool = False) -> None:
    """Refuse a tree that ``make apply`` would rebuild (inputs changed since)."""
    try:
        from tools.tree import State, input_hash
    except Exception as exc:  # tools.tree needs gitpython; degrade to a warning
        print(f"wheel: warning: cannot check the tree is up to date ({exc})")
        return
    state = State.load(paths.build)
    if state is None or not state.base_key:
        problem = f"{paths.build} has no apply state"
    elif state.inputs != input_hash(state.base_key, paths):
        problem = (
            f"{paths.build} is stale: patches/ or overlay/ changed since it was built"
        )
    else:
        return
    if allow_stale:
        print(f"wheel: warning: {problem} (--allow-stale)")
        return
    raise ToolError(f"{problem}; run `make apply` (or pass --allow-stale)")


# ------------------------------------------------------------------- building


def local_label(changes: TreeChanges) -> str:
    label = f"qsv.{changes.upstream_commits}"
    if changes.head_ref == CPU_BRANCH:
        label += f".cpu.{changes.cpu_commits}"
    return label


def _version_py(version: str, commit: str) -> bytes:
    release, _, local = version.partition("+")
    parts = [int(p) for p in release.split(".")] + ([local] if local else [])
    return (
        "# file generated by vcs-versioning, then rewritten by qsv tools.wheel\n"
        "# (the patched Quicksviewer build of SGLang; see QSV_BUILD.json)\n"
        "from __future__ import annotations\n\n"
        "__all__ = [\n"
        '    "__version__",\n    "__version_tuple__",\n    "version",\n'
        '    "version_tuple",\n    "__commit_id__",\n    "commit_id",\n]\n\n'
        "version: str\n__version__: str\n"
        "__version_tuple__: tuple[int | str, ...]\n"
        "version_tuple: tuple[int | str, ...]\n"
        "commit_id: str | None\n__commit_id__: str | None\n\n"
        f"__version__ = version = {version!r}\n"
        f"__version_tuple__ = version_tuple = {tuple(parts)!r}\n\n"
        f"__commit_id__ = commit_id = {('g' + commit[:12])!r}\n"
    ).encode()


def patch_wheel(
    released: Path,
    released_sha256: str,
    changes: TreeChanges,
    out_dir: Path,
    local: Optional[str] = None,
) -> Path:
    """Write the patched wheel for ``released`` into ``out_dir``; return its path."""
    members = read_members(released)
    old_dist = dist_info_dir(i.filename for i, _ in members)
    name, old_version = old_dist[: -len(".dist-info")].split("-", 1)
    if "+" in old_version:
        raise ToolError(f"{released.name} already has a local version ({old_version})")
    version = f"{old_version}+{local or local_label(changes)}"
    new_dist = f"{name}-{version}.dist-info"
    by_name = {info.filename: idx for idx, (info, _) in enumerate(members)}

    # 1. the series' Python files
    added = []
    for change in changes.changes:
        idx = by_name.get(change.path)
        if change.status == "A":
            if idx is not None:
                raise ToolError(
                    f"{change.path} is new in the series but already in {released.name}"
                )
            info = zipfile.ZipInfo(change.path, changes.date)
            info.external_attr = (0o100000 | change.mode) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            added.append((info, change.data))
            continue
        if idx is None:
            raise ToolError(
                f"the series changes {change.path}, absent from {released.name}"
            )
        if members[idx][1] != change.base_data:
            # the tree's base is another wheel (cp311) or an SGLANG_SRC checkout: the
            # series was made against a file that differs from this wheel's
            raise ToolError(
                f"{change.path} in {released.name} differs from the tree's {BASE_TAG}; "
                "the series does not apply to this wheel as is"
            )
        if change.status == "D":
            members[idx] = None
            continue
        info, _ = members[idx]
        new = zipfile.ZipInfo(info.filename, changes.date)
        new.external_attr = (0o100000 | change.mode) << 16
        new.compress_type = info.compress_type
        members[idx] = (new, change.data)
    members = [m for m in members if m is not None]
    # new files go after the released package files, before the dist-info
    first_dist = next(
        (
            i
            for i, (info, _) in enumerate(members)
            if info.filename.startswith(old_dist + "/")
        ),
        len(members),
    )
    members[first_dist:first_dist] = sorted(added, key=lambda m: m[0].filename)

    # 2. version, dist-info, metadata
    out = []
    for info, data in members:
        fname = info.filename
        if fname == "sglang/_version.py":
            data = _version_py(version, changes.head)
        if fname == old_dist or fname.startswith(old_dist + "/"):
            rest = fname[len(old_dist) :]
            if rest == "/METADATA":
                data, n = re.subn(
                    rb"^Version: .*$",
                    f"Version: {version}".encode(),
                    data,
                    count=1,
                    flags=re.M,
                )
                if n != 1:
                    raise ToolError(f"{released.name}: METADATA has no Version line")
            elif rest == "/WHEEL":
                data = re.sub(
                    rb"^Generator: (.*)$",
                    lambda m: f"Generator: {GENERATOR} (from ".encode()
                    + m.group(1)
                    + b")",
                    data,
                    count=1,
                    flags=re.M,
                )
            new = zipfile.ZipInfo(new_dist + rest, info.date_time)
            new.external_attr = info.external_attr
            new.compress_type = info.compress_type
            info = new
        out.append((info, data))
    if "sglang/_version.py" not in by_name:
        raise ToolError(f"{released.name} has no sglang/_version.py")

    build_info = {
        "version": version,
        "released_wheel": released.name,
        "released_sha256": released_sha256,
        "tree_base": changes.base,
        "tree_head": changes.head,
        "tree_ref": changes.head_ref,
        "upstream_commits": changes.upstream_commits,
        "cpu_commits": changes.cpu_commits,
        "files": {c.path: c.status for c in changes.changes},
        "requires_dist": "as released (install with --no-deps on CPU hosts)",
    }
    info = zipfile.ZipInfo(f"{new_dist}/{BUILD_INFO}", changes.date)
    info.external_attr = 0o100644 << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    record_at = next(
        i for i, (inf, _) in enumerate(out) if inf.filename == f"{new_dist}/RECORD"
    )
    out.insert(record_at, (info, (json.dumps(build_info, indent=2) + "\n").encode()))

    parts = released.name.split("-")  # name-version-python-abi-platform.whl
    target = Path(out_dir) / "-".join([parts[0], version] + parts[2:])
    write_wheel(target, out, new_dist)
    problems = check_record(target)
    if problems:
        raise ToolError("the new wheel's RECORD is wrong:\n" + "\n".join(problems))
    return target


def build_wheels(
    paths,
    tags: Optional[List[str]] = None,
    out_dir: Path = PROJECT_ROOT / "dist",
    with_cpu_group: bool = False,
    local: Optional[str] = None,
    allow_stale: bool = False,
) -> List[Path]:
    from tools.pin import fetch_wheel, load_pin

    pin = load_pin(paths.pin, getattr(paths, "release", None))
    tags = tags or sorted(pin.wheels)
    unknown = [t for t in tags if t not in pin.wheels]
    if unknown:
        raise ToolError(f"unknown tag(s) {unknown}; pin.toml has {sorted(pin.wheels)}")
    check_fresh(paths, allow_stale)
    changes = tree_changes(paths.build, with_cpu_group)
    for path in changes.ignored:
        print(f"wheel: not in the wheel (outside {PACKAGE_PREFIX}): {path}")
    built = []
    for tag in tags:
        released = fetch_wheel(pin, paths.cache, tag=tag)
        target = patch_wheel(released, pin.wheels[tag].sha256, changes, out_dir, local)
        print(
            f"wheel: {target} ({target.stat().st_size / 2**20:.1f} MiB, "
            f"{len(changes.changes)} file(s) from {changes.head_ref} "
            f"{changes.head[:12]}; RECORD ok)",
            flush=True,
        )
        built.append(target)
    return built
