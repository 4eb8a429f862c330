"""Build the patched SGLang tree (``make apply``) and write it back (``make export``).

The tree is a git repository (default ``build/sglang``) with this history::

    qsv/base       pristine pinned SGLang (python/sglang/... from the wheel, or the
                   v0.5.17 commit of an SGLANG_SRC checkout)
      one commit per patches/series entry (git am)
      one overlay commit: every file under overlay/ (trailer "Qsv-Overlay: overlay/")
    qsv/upstream   <- the upstream PR is exactly qsv/base..qsv/upstream
      one commit per patches/cpu/series entry (git am): CPU enablement, not upstream
    qsv/cpu        <- HEAD, the tree the tests and the CPU runtime use

A state file (``.git/qsv-state.json``) records a hash of every input and the shas the
build produced, which makes ``apply`` idempotent and lets it recognise user work.  See
docs/design.md for the rules.
"""

import dataclasses
import hashlib
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tools import PROJECT_ROOT, ToolError, git
from tools.git import (
    TOOL_EMAIL,
    TOOL_NAME,
    commit_files,
    commit_list,
    describe,
    git_out,
    is_ancestor,
    rev,
    run_git,
    subject,
)
from tools.pin import Pin, fetch_wheel, load_pin

TREE_FORMAT = 1
BASE_TAG = "qsv/base"
UPSTREAM_BRANCH = "qsv/upstream"
CPU_BRANCH = "qsv/cpu"
STATE_NAME = "qsv-state.json"
OVERLAY_TRAILER = "Qsv-Overlay: overlay/"
PTH_NAME = "qsv-sglang.pth"
MAX_REMEMBERED_TIPS = 50
IGNORED_IN_TREE = ("__pycache__/", "*.pyc")


@dataclass
class Paths:
    """Every location the tools read or write; all overridable from the CLI."""

    pin: Path = PROJECT_ROOT / "pin.toml"
    patches: Path = PROJECT_ROOT / "patches"
    overlay: Path = PROJECT_ROOT / "overlay"
    build: Path = PROJECT_ROOT / "build" / "sglang"
    cache: Path = PROJECT_ROOT / "build" / "cache"
    # the pinned release (pin.toml); None: its default release
    release: Optional[str] = None

    @property
    def cpu_patches(self) -> Path:
        return self.patches / "cpu"

    @property
    def variants(self) -> Optional[Path]:
        """``patches/<release>/``: the release's variants (None: default release)."""
        return self.patches / self.release if self.release else None


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------ inputs


def read_series(directory: Path) -> List[Path]:
    """The patch files named by ``directory/series``, in order (none if absent)."""
    series = directory / "series"
    if not series.exists():
        return []
    patches = []
    for lineno, line in enumerate(series.read_text().splitlines(), 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        path = directory / name
        if not path.is_file():
            raise ToolError(f"{series}:{lineno}: patch file {name} does not exist")
        patches.append(path)
    return patches


def overlay_files(overlay: Path) -> List[Path]:
    """Files under ``overlay`` (relative paths, sorted), minus bytecode caches."""
    if not overlay.is_dir():
        return []
    found = []
    for path in sorted(overlay.rglob("*")):
        rel = path.relative_to(overlay)
        if "__pycache__" in rel.parts or path.suffix == ".pyc":
            continue
        if path.is_symlink():
            raise ToolError(f"{path}: symlinks are not supported in the overlay")
        if path.is_file():
            found.append(rel)
    return found


def _is_executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def input_hash(base_key: str, paths: Paths) -> str:
    digest = hashlib.sha256()

    def add(label: str, data: bytes) -> None:
        digest.update(f"{label}\0{len(data)}\0".encode())
        digest.update(data)

    add("format", str(TREE_FORMAT).encode())
    add("base", base_key.encode())
    for group in (paths.patches, paths.cpu_patches):
        series = group / "series"
        add("series", series.read_bytes() if series.exists() else b"")
    release = release_inputs(paths)
    if release.manifest_file is not None and release.manifest_file.is_file():
        add("variants", release.manifest_file.read_bytes())
    for entry in release.series + release.cpu:
        if entry.path is None:
            add("skip:" + entry.key, b"")
        else:
            # (the default release's labels are those of a one-release tree)
            label = "variant:" + entry.key if entry.variant else "patch:" + entry.name
            add(label, entry.path.read_bytes())
    for rel in overlay_files(paths.overlay):
        full = paths.overlay / rel
        add(f"overlay:{rel.as_posix()}:{int(_is_executable(full))}", full.read_bytes())
    return digest.hexdigest()


# ------------------------------------------------------- per-release variants

VARIANTS_FILE = "variants.toml"
VARIANTS_HEADER = """\
# The patches of patches/series and patches/cpu/series that differ on SGLang {release}
# (docs/design.md, "Two releases"). Every other entry applies to {release} as it is.
#
# [variant."<entry>"]: patches/{release}/<entry> replaces patches/<entry> on {release}
#   (<entry>: a series file name, or cpu/<name> for the CPU group);
# [skip."<entry>"]: the entry is not applied on {release} (upstream has it already).
# ported_from: the sha256 of patches/<entry> when it was ported; when that patch
#   changes, make verify PIN={release} fails until the port is redone (make port).
# why: what differs on {release}, for the reviewer of that release's pull request.
"""


@dataclass(frozen=True)
class Entry:
    """One series entry as a release applies it."""

    group: str  # "series" or "cpu"
    name: str  # the file name in the series file
    default: Path  # patches/<name> (patches/cpu/<name>)
    path: Optional[Path]  # the file this release applies; None: skipped
    variant: bool = False  # path is the release's own patches/<release>/... file

    @property
    def key(self) -> str:
        """``<name>`` or ``cpu/<name>``: the entry's key in variants.toml."""
        return self.name if self.group == "series" else f"cpu/{self.name}"


@dataclass
class ReleaseInputs:
    """The series and CPU group of one release, with its variants resolved."""

    series: List[Entry]
    cpu: List[Entry]
    manifest_file: Optional[Path] = None  # patches/<release>/variants.toml
    # key -> {"kind": "variant" | "skip", "ported_from": sha256, "why": text}
    manifest: Dict[str, Dict[str, str]] = field(default_factory=dict)

    def entry(self, key: str) -> Entry:
        for entry in self.series + self.cpu:
            if key in (entry.key, entry.name):
                return entry
        raise ToolError(
            f"no series entry {key!r}; the entries are patches/series and "
            "patches/cpu/series (a CPU patch as cpu/<name>)"
        )

    def stale(self) -> List[str]:
        """Variants and skips whose default patch changed since they were ported."""
        found = []
        for entry in self.series + self.cpu:
            record = self.manifest.get(entry.key)
            if record is not None and record["ported_from"] != sha256_path(
                entry.default
            ):
                found.append(entry.key)
        return found

    def problems(self) -> List[str]:
        """What make verify refuses in the manifest: stale ports, missing reasons."""
        out = []
        for key in self.stale():
            out.append(
                f"patches/{key} changed since its {self.manifest[key]['kind']} for "
                f"this release was ported (ported_from in {self.manifest_file}); "
                f"port the change: make port PIN=<release> PATCH={key}"
            )
        for key, record in self.manifest.items():
            if not record.get("why", "").strip():
                out.append(f"{self.manifest_file}: [{record['kind']}.\"{key}\"] has no why")
        return out


def sha256_path(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def read_manifest(path: Path) -> Dict[str, Dict[str, str]]:
    """``variants.toml``: entry key -> kind, ported_from, why."""
    import tomllib

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{path}: not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"variant", "skip"})
    if unknown:
        raise ToolError(f"{path}: unknown table(s) {unknown}; use variant and skip")
    manifest: Dict[str, Dict[str, str]] = {}
    for kind in ("variant", "skip"):
        for key, record in data.get(kind, {}).items():
            if key in manifest:
                raise ToolError(f"{path}: {key} is both a variant and a skip")
            if not isinstance(record, dict) or not isinstance(
                record.get("ported_from"), str
            ):
                raise ToolError(f'{path}: [{kind}."{key}"] needs ported_from = "..."')
            manifest[key] = {
                "kind": kind,
                "ported_from": record["ported_from"],
                "why": str(record.get("why", "")),
            }
    return manifest


def write_manifest(
    path: Path, release: str, manifest: Dict[str, Dict[str, str]], order: List[str]
) -> None:
    """Write ``variants.toml`` (its entries in series order); remove it when empty."""
    if not manifest:
        path.unlink(missing_ok=True)
        return
    lines = [VARIANTS_HEADER.format(release=release)]
    for key in sorted(manifest, key=lambda k: order.index(k) if k in order else 1e9):
        record = manifest[key]
        lines.append(f"\n[{record['kind']}.{json.dumps(key)}]\n")
        lines.append(f"ported_from = {json.dumps(record['ported_from'])}\n")
        lines.append(f"why = {json.dumps(record.get('why', ''))}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines))


def release_inputs(paths: "Paths") -> ReleaseInputs:
    """The series and CPU group that ``paths.release`` applies.

    The default release applies patches/ as it is. Another release applies the same
    entries, in the same order, except that an entry with a file in
    ``patches/<release>/`` (``patches/<release>/cpu/`` for the CPU group) uses that
    file, its variant, and an entry listed under ``[skip]`` of
    ``patches/<release>/variants.toml`` is not applied. Every variant file must be
    listed in that manifest and name an entry; anything else is refused here,
    before a tree is touched.
    """
    groups = {"series": paths.patches, "cpu": paths.cpu_patches}
    variants = paths.variants
    manifest_file = variants / VARIANTS_FILE if variants is not None else None
    manifest = read_manifest(manifest_file) if manifest_file is not None else {}
    resolved: Dict[str, List[Entry]] = {}
    keys = set()
    for group, directory in groups.items():
        entries = []
        for default in read_series(directory):
            key = default.name if group == "series" else f"cpu/{default.name}"
            keys.add(key)
            record = manifest.get(key)
            if record is None:
                entries.append(Entry(group, default.name, default, default))
            elif record["kind"] == "skip":
                entries.append(Entry(group, default.name, default, None))
            else:
                own = variants / key
                if not own.is_file():
                    raise ToolError(
                        f"{manifest_file}: variant {key} has no file {own}"
                    )
                entries.append(Entry(group, default.name, default, own, True))
        resolved[group] = entries
    if variants is not None and variants.is_dir():
        files = sorted(
            p.relative_to(variants).as_posix()
            for p in variants.rglob("*.patch")
        )
        for key in files:
            if key not in keys:
                raise ToolError(
                    f"{variants / key} is no entry of patches/series or "
                    "patches/cpu/series (a variant has its entry's file name)"
                )
            if manifest.get(key, {}).get("kind") != "variant":
                raise ToolError(
                    f"{variants / key} is not listed as a variant in {manifest_file}"
                )
    for key in manifest:
        if key not in keys:
            raise ToolError(f"{manifest_file}: {key} is no entry of the series")
    return ReleaseInputs(
        series=resolved["series"],
        cpu=resolved["cpu"],
        manifest_file=manifest_file,
        manifest=manifest,
    )


# ------------------------------------------------------------------------- state


@dataclass
class State:
    inputs: Optional[str] = None
    base_key: Optional[str] = None
    base: Optional[str] = None
    upstream: Optional[str] = None
    tip: Optional[str] = None
    known: List[str] = field(default_factory=list)  # earlier tips and exported heads
    format: int = TREE_FORMAT
    # the entry being ported (make port): the tree stops before it, state.tip
    porting: Optional[str] = None

    @staticmethod
    def path(build: Path) -> Path:
        return build / ".git" / STATE_NAME

    @classmethod
    def load(cls, build: Path) -> Optional["State"]:
        path = cls.path(build)
        if not path.exists():
            return None
        try:
            data = json.loads(path.read_text())
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise ToolError(f"{path}: unreadable state file ({exc})") from None

    def save(self, build: Path) -> None:
        self.known = list(dict.fromkeys(k for k in self.known if k))[
            -MAX_REMEMBERED_TIPS:
        ]
        tmp = self.path(build).with_suffix(".tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=2) + "\n")
        os.replace(tmp, self.path(build))

    def remember(self, *shas: Optional[str]) -> None:
        self.known.extend(s for s in shas if s)


# -------------------------------------------------------------------------- base


@dataclass
class BaseSource:
    """Where the pristine tree comes from: the pinned wheel or an SGLANG_SRC checkout."""

    key: str
    description: str
    wheel: Optional[Path] = None
    src: Optional[Path] = None
    src_commit: Optional[str] = None


def resolve_base(pin: Pin, paths: Paths, src: Optional[Path]) -> BaseSource:
    if src:
        return _resolve_src(pin, Path(src))
    wheel = fetch_wheel(pin, paths.cache)
    return BaseSource(
        key=f"wheel:{pin.base.sha256}",
        description=f"{pin.base.filename} (sha256 {pin.base.sha256[:12]}...)",
        wheel=wheel,
    )


_VERSION_RE = re.compile(r"""^__version__\s*=\s*["']([^"']+)["']""", re.M)


def _resolve_src(pin: Pin, src: Path) -> BaseSource:
    try:
        repo = git.Repo(src)
    except (git.NoSuchPathError, git.InvalidGitRepositoryError):
        raise ToolError(f"SGLANG_SRC={src} is not a git checkout") from None
    tag = pin.upstream_tag
    commit = rev(repo, f"refs/tags/{tag}")
    if commit is None:
        tags = sorted(t.name for t in repo.tags)
        shown = ", ".join(tags[-10:]) if tags else "no tags at all"
        raise ToolError(
            f"SGLANG_SRC={src} has no tag {tag} (pin.toml pins SGLang {pin.version}); "
            f"it has: {shown}.\nFetch the tag (git -C {src} fetch --tags) or use the "
            "pinned wheel (unset SGLANG_SRC)."
        )
    status, text, _ = run_git(
        repo, "show", f"{commit}:python/sglang/version.py", check=False
    )
    if status != 0:
        raise ToolError(
            f"SGLANG_SRC={src}: tag {tag} has no python/sglang/version.py; "
            "is this an SGLang checkout?"
        )
    # Upstream derives the version from the tag (setuptools_scm writes _version.py
    # at build time); older trees and some forks spell it out in version.py.
    found = _VERSION_RE.search(text)
    if found and found.group(1) != pin.version:
        raise ToolError(
            f"SGLANG_SRC={src}: tag {tag} is SGLang {found.group(1)} according to "
            f"python/sglang/version.py, but pin.toml pins {pin.version}; refusing."
        )
    return BaseSource(
        key=f"src:{commit}",
        description=f"{src} at {tag} ({commit[:12]})",
        src=src,
        src_commit=commit,
    )


def _wheel_date(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        newest = max(info.date_time for info in zf.infolist())
    return "%04d-%02d-%02dT%02d:%02d:%02d+0000" % newest


def _extract_package(wheel: Path, dest: Path) -> int:
    """Lay the wheel's top-level ``sglang/`` out as ``dest/python/sglang``."""
    count = 0
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            name = info.filename
            if not name.startswith("sglang/") or name.endswith("/"):
                continue
            parts = Path(name).parts
            if any(part in ("..", "") for part in parts) or Path(name).is_absolute():
                raise ToolError(f"{wheel.name}: unsafe path in archive: {name}")
            target = dest / "python" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(0o755 if mode & 0o111 else 0o644)
            count += 1
    return count


def _init_repo(build: Path) -> git.Repo:
    build.mkdir(parents=True, exist_ok=True)
    repo = git.Repo.init(build, initial_branch=CPU_BRANCH)
    exclude = build / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    exclude.write_text("\n".join(IGNORED_IN_TREE) + "\n")
    return repo


def create_base(build: Path, base: BaseSource, pin: Pin, pack: bool = True) -> git.Repo:
    """Make a new repository at ``build`` holding only the pristine base commit."""
    repo = _init_repo(build)
    if base.src is not None:
        run_git(
            repo,
            "fetch",
            "-q",
            "--no-tags",
            str(base.src.resolve()),
            f"refs/tags/{pin.upstream_tag}:refs/tags/{pin.upstream_tag}",
        )
        run_git(repo, "reset", "-q", "--hard", base.src_commit)
    else:
        start = time.monotonic()
        count = _extract_package(base.wheel, build)
        run_git(repo, "add", "-A", "python")
        date = _wheel_date(base.wheel)
        message = (
            f"SGLang {pin.version}: python/sglang from {base.wheel.name}\n\n"
            f"Pristine pinned upstream (tag {pin.upstream_tag}), laid out as upstream's\n"
            f"python/sglang/ from the wheel's top-level sglang/ package.\n\n"
            f"Wheel-Sha256: {pin.base.sha256}\n"
        )
        run_git(
            repo,
            "commit",
            "-q",
            "--no-verify",
            "-m",
            message,
            env=git.author_env(TOOL_NAME, TOOL_EMAIL, date),
        )
        log(
            f"apply: base laid out from {base.wheel.name}: {count} files "
            f"in {time.monotonic() - start:.1f}s"
        )
    run_git(repo, "tag", "-f", BASE_TAG, "HEAD")
    if pack:  # one pack instead of ~4000 loose objects: faster copies and clones
        run_git(repo, "repack", "-a", "-d", "-q")
    return repo


# ------------------------------------------------------------------- inspection


@dataclass
class Findings:
    """User work found in a tree: what a rebuild would discard."""

    operation: Optional[str] = None
    dirty: List[str] = field(default_factory=list)
    foreign: List[str] = field(default_factory=list)  # "sha subject (refs)"
    foreign_refs: List[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.operation or self.dirty or self.foreign)

    def lines(self) -> List[str]:
        out = []
        if self.operation:
            out.append(f"  a {self.operation} is in progress")
        if self.dirty:
            out.append(f"  {len(self.dirty)} uncommitted change(s):")
            out += [f"    {line}" for line in self.dirty[:50]]
            if len(self.dirty) > 50:
                out.append(f"    ... and {len(self.dirty) - 50} more")
        if self.foreign:
            out.append(f"  {len(self.foreign)} commit(s) not made by the tools:")
            out += [f"    {line}" for line in self.foreign[:50]]
            if len(self.foreign) > 50:
                out.append(f"    ... and {len(self.foreign) - 50} more")
        return out


def inspect_tree(repo: git.Repo, state: State) -> Findings:
    found = Findings()
    found.operation = git.operation_in_progress(repo)
    found.dirty = git.uncommitted(repo)
    saved = [s for s in [state.tip, *state.known] if s and rev(repo, s)]
    refs_out = git_out(repo, "for-each-ref", "--format=%(refname)")
    refs = refs_out.split() if refs_out else []
    heads = [r for r in refs] + (["HEAD"] if rev(repo, "HEAD") else [])
    if heads:
        not_args = [f"^{s}" for s in saved]
        out = git_out(repo, "rev-list", *heads, *not_args)
        for sha in out.split() if out else []:
            holders = [r.split("/", 2)[-1] for r in refs if is_ancestor(repo, sha, r)]
            where = f" (on {', '.join(holders)})" if holders else " (detached HEAD)"
            found.foreign.append(describe(repo, sha) + where)
            found.foreign_refs.extend(h for h in refs if is_ancestor(repo, sha, h))
    found.foreign_refs = sorted(set(found.foreign_refs))
    return found


# ------------------------------------------------------------------------ apply


APPLIED_DIR = "qsv-applied"


def _store_applied(repo: git.Repo, sha: str, patch: Path) -> None:
    """Keep the exact bytes of the patch that produced commit ``sha``.

    ``export`` writes these bytes back for commits that are unchanged, so patches
    written by hand (or by another git version) round-trip byte for byte.
    """
    directory = Path(repo.git_dir) / APPLIED_DIR
    directory.mkdir(exist_ok=True)
    (directory / f"{sha}.patch").write_bytes(patch.read_bytes())
    (directory / f"{sha}.name").write_text(patch.name)


def _applied_patch(repo: git.Repo, sha: str) -> Optional[Tuple[str, bytes]]:
    directory = Path(repo.git_dir) / APPLIED_DIR
    data, name = directory / f"{sha}.patch", directory / f"{sha}.name"
    if data.is_file() and name.is_file():
        return name.read_text().strip(), data.read_bytes()
    return None


def _am(repo: git.Repo, patch: Path, group: str, hint: str = "") -> None:
    before = rev(repo, "HEAD")
    status, out, err = run_git(
        repo,
        "am",
        "-q",
        "--keep-non-patch",
        "--keep-cr",
        "--committer-date-is-author-date",
        str(patch.resolve()),
        check=False,
    )
    if status == 0:
        head = rev(repo, "HEAD")
        if rev(repo, "HEAD^") == before:  # one commit per file (not an mbox of many)
            _store_applied(repo, head, patch)
        return
    run_git(repo, "am", "--abort", check=False)
    if rev(repo, "HEAD") != before:
        run_git(repo, "reset", "-q", "--hard", before)
    detail = [
        line
        for line in (out + "\n" + err).splitlines()
        if line.startswith(("error:", "Patch failed", "fatal:", "warning:"))
        or "does not apply" in line
        or "patch failed" in line
    ]
    raise ToolError(
        f"{group} patch {patch} does not apply:\n"
        + "\n".join(f"  {line}" for line in (detail or (out + err).splitlines()))
        + f"\nThe tree is left at the last good commit: {describe(repo, before)}.\n"
        + (
            hint
            or "Fix or regenerate the patch (make export writes patches from the "
            "tree), then run make apply again."
        )
    )


def _overlay_commit(repo: git.Repo, paths: Paths, date: str) -> bool:
    files = overlay_files(paths.overlay)
    if not files:
        return False
    build = Path(repo.working_dir)
    base_tree = set(
        git_out(repo, "ls-tree", "-r", "--name-only", BASE_TAG).splitlines()
    )
    clashes = [rel.as_posix() for rel in files if rel.as_posix() in base_tree]
    if clashes:
        raise ToolError(
            "overlay files would replace files of the pinned tree (change those "
            "through patches in patches/ instead):\n"
            + "\n".join(f"  overlay/{c}" for c in clashes)
        )
    for rel in files:
        src = paths.overlay / rel
        dst = build / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        dst.chmod(0o755 if _is_executable(src) else 0o644)
    run_git(repo, "add", "-A", "--", *[rel.as_posix() for rel in files])
    message = (
        "Add the Quicksviewer model files\n\n"
        "New files of the Quicksviewer integration (from the project's overlay/).\n\n"
        f"{OVERLAY_TRAILER}\n"
    )
    run_git(
        repo,
        "commit",
        "-q",
        "--no-verify",
        "--allow-empty",
        "-m",
        message,
        env=git.author_env(TOOL_NAME, TOOL_EMAIL, date),
    )
    return True


def _link_venv(venv: Path, build: Path) -> None:
    site = sorted(venv.glob("lib/python3*/site-packages"))
    if not site:
        raise ToolError(f"{venv} has no lib/python3*/site-packages; run make setup")
    site_dir = site[0]
    if (site_dir / "sglang").exists():
        raise ToolError(
            f"{site_dir}/sglang is an installed SGLang that would shadow the patched "
            f"tree; remove it with {venv}/bin/pip uninstall sglang"
        )
    pth = site_dir / PTH_NAME
    line = str((build / "python").resolve()) + "\n"
    if not pth.exists() or pth.read_text() != line:
        pth.write_text(line)
        log(f"apply: {pth} -> {line.strip()}")


def _discard(repo: git.Repo, found: Findings, keep_tags: List[str]) -> None:
    if found.operation:
        for cmd in (
            ("am", "--abort"),
            ("rebase", "--abort"),
            ("merge", "--abort"),
            ("cherry-pick", "--abort"),
            ("revert", "--abort"),
        ):
            run_git(repo, *cmd, check=False)
    for ref in found.foreign_refs:
        short = ref.split("/", 2)[-1]
        if ref.startswith("refs/tags/") and short in keep_tags:
            continue
        if ref == f"refs/heads/{CPU_BRANCH}":
            continue
        run_git(repo, "update-ref", "-d", ref)


def apply(
    paths: Paths,
    force: bool = False,
    src: Optional[Path] = None,
    link_venv: Optional[Path] = None,
    pack: bool = True,
    port: Optional[str] = None,
) -> State:
    """Make ``paths.build`` the patched tree; see the module docstring.

    ``port`` (an entry key: a series file name, or cpu/<name>) builds the tree up to
    that entry and leaves it there for porting it to this release: its current
    file (the release's variant, else the default patch) is applied with
    ``git am --reject``; ``make export`` then records the result (docs/design.md,
    "Porting a patch").
    """
    start = time.monotonic()
    pin = load_pin(paths.pin, paths.release)
    if pin.is_default and paths.variants is not None:
        paths = dataclasses.replace(paths, release=None)
    base = resolve_base(pin, paths, src)
    # a missing patch file or an inconsistent variants.toml is refused before
    # anything changes
    release = release_inputs(paths)
    port_entry = release.entry(port) if port else None
    if not pin.is_default or port_entry is not None:
        for key in release.stale():
            log(
                f"apply: WARNING: patches/{key} changed since its "
                f"{release.manifest[key]['kind']} for SGLang {pin.version} was "
                f"ported; make verify PIN={pin.version} fails until it is ported "
                f"again (make port PIN={pin.version} PATCH={key})"
            )
    inputs = input_hash(base.key, paths)
    build = paths.build

    repo: Optional[git.Repo] = None
    state = State()
    if build.exists() and any(build.iterdir()):
        old = State.load(build) if (build / ".git").is_dir() else None
        if old is None:
            if not force:
                raise ToolError(
                    f"{build} exists but was not made by this tool (no "
                    f".git/{STATE_NAME}); move it away, or rerun with --force to "
                    "delete it."
                )
            log(f"apply: --force: deleting {build} (not made by this tool)")
            shutil.rmtree(build)
        else:
            state = old
            repo = git.Repo(build)
            found = inspect_tree(repo, state)
            if found and not force:
                raise ToolError(
                    f"{build} holds work that a rebuild would discard:\n"
                    + "\n".join(found.lines())
                    + "\nNothing was changed. Commit your changes there and run "
                    "`make export` to save them into patches/ and overlay/, or rerun "
                    "with --force (make apply FORCE=1) to discard them."
                )
            if found:
                log("apply: --force: discarding\n" + "\n".join(found.lines()))
                _discard(repo, found, [BASE_TAG, pin.upstream_tag])
            head = rev(repo, "HEAD")
            if (
                not found
                and port_entry is None
                and state.porting is None
                and state.inputs == inputs
                and state.format == TREE_FORMAT
                and head == state.tip
                and rev(repo, CPU_BRANCH) == state.tip
                and rev(repo, UPSTREAM_BRANCH) == state.upstream
                and run_git(repo, "symbolic-ref", "-q", "HEAD", check=False)[1]
                == f"refs/heads/{CPU_BRANCH}"
            ):
                log(f"apply: {build} is up to date ({describe(repo, head)})")
                if link_venv:
                    _link_venv(link_venv, build)
                return state
            if state.base_key != base.key or rev(repo, BASE_TAG) != state.base:
                log(f"apply: base changed; rebuilding {build} from scratch")
                shutil.rmtree(build)
                repo = None
                state = State(known=state.known)

    if repo is None:
        log(f"apply: creating {build} from {base.description}")
        repo = create_base(build, base, pin, pack=pack)
        state.base_key = base.key
        state.base = rev(repo, BASE_TAG)
    else:
        log(f"apply: rebuilding {build} on {BASE_TAG} ({state.base[:12]})")
        state.remember(state.tip, rev(repo, "HEAD"))
        run_git(repo, "checkout", "-q", "-f", "-B", CPU_BRANCH, BASE_TAG)
        run_git(repo, "clean", "-q", "-f", "-d", "-x")
        run_git(repo, "branch", "-q", "-D", UPSTREAM_BRANCH, check=False)

    # The tree now sits on the base; record that before anything can fail, so a
    # failed run leaves a state that the next run recognises as its own.
    state.inputs = None
    state.upstream = None
    state.porting = None
    state.tip = state.base
    state.save(build)

    applied = {"series": 0, "cpu": 0}
    try:
        for entry in release.series:
            if entry is port_entry:
                return _start_port(repo, state, entry, pin, build)
            applied["series"] += _apply_entry(repo, entry, pin)
        overlay_date = git_out(repo, "log", "-1", "--format=%aI", "HEAD")
        if _overlay_commit(repo, paths, overlay_date):
            log(f"apply: overlay: {len(overlay_files(paths.overlay))} file(s)")
        state.upstream = rev(repo, "HEAD")
        run_git(repo, "branch", "-f", UPSTREAM_BRANCH, state.upstream)
        for entry in release.cpu:
            if entry is port_entry:
                return _start_port(repo, state, entry, pin, build)
            applied["cpu"] += _apply_entry(repo, entry, pin)
    finally:
        if state.porting is None:
            state.tip = rev(repo, "HEAD")
        state.save(build)

    state.inputs = inputs
    state.format = TREE_FORMAT
    state.save(build)
    variants = sum(e.variant for e in release.series + release.cpu)
    skipped = sum(e.path is None for e in release.series + release.cpu)
    log(
        f"apply: {build} ready in {time.monotonic() - start:.1f}s: SGLang "
        f"{pin.version}, {applied['series']} series patch(es), {applied['cpu']} CPU "
        f"patch(es)"
        + (
            f" ({variants} variant(s) and {skipped} skip(s) of patches/{pin.version}/)"
            if not pin.is_default
            else ""
        )
        + f"; {UPSTREAM_BRANCH}={state.upstream[:12]} {CPU_BRANCH}={state.tip[:12]}"
    )
    if link_venv:
        _link_venv(link_venv, build)
    return state


def _apply_entry(repo: git.Repo, entry: Entry, pin: Pin) -> int:
    """Apply one series entry as this release has it; 1 if a commit was made."""
    group = "series" if entry.group == "series" else "CPU"
    if entry.path is None:
        log(f"apply: SGLang {pin.version} skips {entry.key} (see its variants.toml)")
        return 0
    hint = ""
    if not pin.is_default:
        what = "its variant" if entry.variant else "it"
        hint = (
            f"To port {what} to SGLang {pin.version}: make port PIN={pin.version} "
            f"PATCH={entry.key} (docs/design.md, \"Porting a patch\")."
        )
    _am(repo, entry.path, group, hint=hint)
    return 1


def _start_port(
    repo: git.Repo, state: State, entry: Entry, pin: Pin, build: Path
) -> State:
    """Leave the tree before ``entry`` with its current file applied for porting."""
    state.tip = rev(repo, "HEAD")
    state.porting = entry.key
    state.save(build)
    source = entry.path or entry.default
    log(f"port: {build} is at {describe(repo, state.tip)}")
    if entry.path is None:
        log(
            f"port: {entry.key} is skipped on SGLang {pin.version}; applying the "
            "default patch to re-check"
        )
    status, out, err = run_git(
        repo,
        "am",
        "-q",
        "--keep-non-patch",
        "--keep-cr",
        "--committer-date-is-author-date",
        "--reject",
        str(source.resolve()),
        check=False,
    )
    if status == 0:
        if rev(repo, "HEAD^") == state.tip:
            _store_applied(repo, rev(repo, "HEAD"), source)
        log(
            f"port: {source} applies to SGLang {pin.version}: amend the commit if "
            "it needs changes there (git commit --amend), then make export "
            f"PIN={pin.version}"
        )
    else:
        untracked = git_out(repo, "ls-files", "--others", "--exclude-standard")
        rejected = [f for f in untracked.splitlines() if f.endswith(".rej")]
        log(
            f"port: {source} does not apply to SGLang {pin.version} as it is; git am "
            "stopped with the hunks that apply applied and the others in *.rej "
            "files:\n"
            + "\n".join(f"  {line}" for line in rejected or err.splitlines())
            + f"\nIn {build}: make those changes, delete the *.rej files, git add -A, "
            "git am --continue (or git am --skip when this release needs no such "
            f"patch), then make export PIN={pin.version}"
        )
    return state


# ----------------------------------------------------------------------- export


def _format_patch(repo: git.Repo, rng: str, out_dir: Path) -> List[str]:
    """Write one patch per commit of ``rng`` into ``out_dir`` plus its series file.

    A commit that ``apply`` made from a patch file gets that file back, byte for
    byte; any other commit is written by ``git format-patch``.
    """
    commits = commit_list(repo, rng)
    outputs: List[Tuple[str, bytes]] = []
    with tempfile.TemporaryDirectory(prefix="qsv-format-patch-") as tmp:
        for number, sha in enumerate(commits, 1):
            known = _applied_patch(repo, sha)
            if known is None or known[0] in (name for name, _ in outputs):
                written = git_out(
                    repo,
                    "format-patch",
                    "--zero-commit",
                    "--no-signature",
                    "--no-numbered",
                    "--no-renames",
                    "--subject-prefix=PATCH",
                    f"--start-number={number}",
                    "-o",
                    tmp,
                    "-1",
                    sha,
                )
                path = Path(written.strip())
                known = (path.name, path.read_bytes())
                path.unlink()
            outputs.append(known)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.patch"):
        old.unlink()
    for name, data in outputs:
        (out_dir / name).write_bytes(data)
    names = [name for name, _ in outputs]
    (out_dir / "series").write_text("".join(f"{n}\n" for n in names))
    return names


def _write_overlay(overlay: Path, files: Dict[str, Tuple[bytes, bool]]) -> None:
    overlay.mkdir(parents=True, exist_ok=True)
    for rel in overlay_files(overlay):
        if rel.as_posix() not in files:
            (overlay / rel).unlink()
    for rel, (data, executable) in files.items():
        target = overlay / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)
        target.chmod(0o755 if executable else 0o644)
    for directory in sorted(overlay.rglob("*"), reverse=True):
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()


def _blob(repo: git.Repo, commit: str, path: str) -> Tuple[bytes, bool]:
    mode = git_out(repo, "ls-tree", commit, "--", path).split()[0]
    return git.blob(repo, commit, path), mode == "100755"


def _is_overlay_commit(repo: git.Repo, sha: str) -> bool:
    body = git_out(repo, "log", "-1", "--format=%B", sha)
    return OVERLAY_TRAILER in body.splitlines()


def export(paths: Paths, to_cpu: bool = False) -> Dict[str, List[str]]:
    """Write patches/, patches/cpu/ and overlay/ back from the tree.

    Commits of yours on top of the tree go to the upstream series (their changes to
    files of the pinned tree as new patches, their new files into overlay/), or, with
    ``to_cpu``, to the end of the CPU group unchanged.

    The tree of a release other than the default one (``paths.release``) writes
    back only overlay/ (its series are patches/ plus that release's variants, which
    change through ``make port``); a tree left by ``make port`` writes the port
    (``_export_port``).
    """
    build = paths.build
    pin = load_pin(paths.pin, paths.release)
    if pin.is_default and paths.variants is not None:
        paths = dataclasses.replace(paths, release=None)
    state = State.load(build) if (build / ".git").is_dir() else None
    if state is not None and state.porting and state.tip:
        repo = git.Repo(build)
        _refuse_uncommitted(repo, build)
        return _export_port(paths, pin, repo, state)
    if state is None or not state.tip or not state.upstream:
        raise ToolError(f"{build} is not a complete tree made by `make apply`")
    repo = git.Repo(build)
    _refuse_uncommitted(repo, build)
    head = rev(repo, "HEAD")
    base, upstream, tip = state.base, state.upstream, state.tip
    if is_ancestor(repo, tip, head):
        user_range = f"{tip}..{head}"
    elif is_ancestor(repo, upstream, head):
        user_range = f"{upstream}..{head}"
    else:
        raise ToolError(
            f"HEAD ({describe(repo, head)}) does not descend from the tree that "
            f"make apply built ({UPSTREAM_BRANCH} {upstream[:12]}); cannot tell "
            "which commits are yours"
        )
    user = commit_list(repo, user_range)
    merges = git_out(repo, "rev-list", "--merges", user_range)
    if merges:
        raise ToolError(
            "merge commits cannot be exported as patches; rebase them first:\n"
            + "\n".join(f"  {describe(repo, m)}" for m in merges.split())
        )

    if not pin.is_default:
        _refuse_release_patches(repo, user, base, pin, to_cpu)

    cpu_range = f"{upstream}..{tip}"
    if to_cpu and user:
        if not is_ancestor(repo, tip, head):
            raise ToolError(
                f"--to-cpu needs your commits on top of {CPU_BRANCH} ({tip[:12]})"
            )
        cpu_range, user = f"{upstream}..{head}", []

    series = commit_list(repo, f"{base}..{upstream}")
    overlay_commits = [c for c in series if _is_overlay_commit(repo, c)]
    if overlay_commits and overlay_commits != series[-1:]:
        raise ToolError(
            "the overlay commit must be the last one of the upstream series, found "
            + ", ".join(describe(repo, c) for c in overlay_commits)
        )
    patch_tip = rev(repo, f"{overlay_commits[0]}^") if overlay_commits else upstream

    base_files = set(git_out(repo, "ls-tree", "-r", "--name-only", base).splitlines())
    overlay: Dict[str, Tuple[bytes, bool]] = {}
    if overlay_commits:
        changed = commit_files(repo, overlay_commits[0])
        for path in changed:
            overlay[path] = _blob(repo, upstream, path)
        _refuse_unapplied_overlay_edits(
            repo, overlay_commits[0], changed, paths.overlay
        )

    index = Path(tempfile.mkstemp(prefix="qsv-export-index-")[1])
    try:
        for sha in user:
            changes = git_out(
                repo,
                "diff-tree",
                "-r",
                "--no-commit-id",
                "--name-status",
                "--no-renames",
                sha,
            )
            base_paths = []
            for line in changes.splitlines():
                status, path = line.split("\t", 1)
                if path in base_files:
                    base_paths.append(path)
                elif status == "D":
                    overlay.pop(path, None)
                else:
                    overlay[path] = _blob(repo, sha, path)
            if base_paths:
                patch_tip = _replay(repo, sha, base_paths, patch_tip, index)
    finally:
        index.unlink(missing_ok=True)

    if pin.is_default:
        names = _format_patch(repo, f"{base}..{patch_tip}", paths.patches)
        cpu_names = _format_patch(repo, cpu_range, paths.cpu_patches)
    else:  # the release's series stay as they are (its tree is built from them)
        names = [e.name for e in release_inputs(paths).series]
        cpu_names = [e.name for e in release_inputs(paths).cpu]
    _write_overlay(paths.overlay, overlay)

    state.remember(head)
    state.save(build)
    if pin.is_default:
        written = (
            f"{len(names)} patch(es) -> {paths.patches}/series, "
            f"{len(cpu_names)} CPU patch(es) -> {paths.cpu_patches}/series, "
        )
    else:
        written = (
            f"SGLang {pin.version}: patches/ and patches/{pin.version}/ as they are "
            "(make port changes a variant), "
        )
    log(
        f"export: {written}{len(overlay)} overlay file(s) -> {paths.overlay}"
        + (f"; {len(user)} commit(s) of yours included" if user else "")
    )
    return {"series": names, "cpu": cpu_names, "overlay": sorted(overlay)}


def _refuse_uncommitted(repo: git.Repo, build: Path) -> None:
    found = inspect_tree(repo, State())  # only the operation and dirty parts matter
    if found.operation or found.dirty:
        raise ToolError(
            f"{build} has uncommitted work; commit it first (export writes commits):\n"
            + "\n".join(Findings(found.operation, found.dirty).lines())
        )


def _refuse_release_patches(
    repo: git.Repo, user: List[str], base: str, pin: Pin, to_cpu: bool
) -> None:
    """In another release's tree, commits of yours may change overlay files only."""
    base_files = set(git_out(repo, "ls-tree", "-r", "--name-only", base).splitlines())
    touching = [sha for sha in user if set(commit_files(repo, sha)) & base_files]
    if touching or (to_cpu and user):
        raise ToolError(
            f"this is the tree of SGLang {pin.version}, not the default release "
            f"{pin.default_version}: its commits may change overlay files only. A "
            "change to SGLang's files starts as a patch on the default release "
            f"(commit it in that tree, make export), then is ported to {pin.version} "
            f"(make apply PIN={pin.version}; make port PIN={pin.version} PATCH=... "
            "if it does not apply); a variant changes through make port "
            '(docs/design.md, "Porting a patch"). Commits that change SGLang files:\n'
            + "\n".join(f"  {describe(repo, sha)}" for sha in touching or user)
        )


def _patch_id(repo: git.Repo, diff: str) -> str:
    """git's stable patch id of a patch or diff text ('' for an empty one)."""
    out = git_out(repo, "patch-id", "--stable", stdin=diff)
    return out.split()[0] if out else ""


def _export_port(paths: Paths, pin: Pin, repo: git.Repo, state: State):
    """Record the port that ``make port`` started (the tree stops before the entry
    ``state.porting``; HEAD is its port: one commit, or none for a skip)."""
    release = release_inputs(paths)
    entry = release.entry(state.porting)
    head = rev(repo, "HEAD")
    if not is_ancestor(repo, state.tip, head):
        raise ToolError(
            f"HEAD ({describe(repo, head)}) does not descend from where make port "
            f"left the tree ({describe(repo, state.tip)})"
        )
    commits = commit_list(repo, f"{state.tip}..{head}")
    if len(commits) > 1:
        raise ToolError(
            f"make port leaves room for one commit, the port of {entry.key}; found "
            f"{len(commits)} (squash them):\n"
            + "\n".join(f"  {describe(repo, c)}" for c in commits)
        )
    manifest = dict(release.manifest)
    old = manifest.pop(entry.key, None)
    why = old["why"] if old else ""
    default_bytes = entry.default.read_bytes()
    if pin.is_default:
        target = entry.default
    else:
        target = paths.variants / entry.key
    if commits:
        sha = commits[0]
        wanted = _subject_of_patch(default_bytes.decode("utf-8", "replace"))
        if subject(repo, sha) != wanted:
            raise ToolError(
                f"the port of {entry.key} must keep its subject {wanted!r} (the "
                f"series reads the same on every release); it is "
                f"{subject(repo, sha)!r}: git commit --amend"
            )
        known = _applied_patch(repo, sha)
        if known is not None:
            data = known[1]
        else:
            with tempfile.TemporaryDirectory(prefix="qsv-port-") as tmp:
                written = git_out(
                    repo,
                    "format-patch",
                    "--zero-commit",
                    "--no-signature",
                    "--no-numbered",
                    "--no-renames",
                    "--subject-prefix=PATCH",
                    "-o",
                    tmp,
                    "-1",
                    sha,
                )
                data = Path(written.strip()).read_bytes()
        same_as_default = pin.is_default or _patch_id(
            repo, data.decode("utf-8", "replace")
        ) == _patch_id(repo, default_bytes.decode("utf-8", "replace"))
        if pin.is_default:
            target.write_bytes(data)
            result = f"{target} rewritten"
        elif same_as_default:
            target.unlink(missing_ok=True)
            result = (
                f"the port is the default patch itself: {pin.version} applies "
                f"patches/{entry.key} (no variant)"
            )
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            manifest[entry.key] = {
                "kind": "variant",
                "ported_from": sha256_path(entry.default),
                "why": why,
            }
            result = f"variant {target}"
    else:
        if pin.is_default:
            raise ToolError(
                f"no commit above {describe(repo, state.tip)}: the default release "
                f"cannot skip {entry.key} (remove it from the series instead)"
            )
        if target.exists():
            target.unlink()
        manifest[entry.key] = {
            "kind": "skip",
            "ported_from": sha256_path(entry.default),
            "why": why,
        }
        result = f"SGLang {pin.version} skips {entry.key}"
    if not pin.is_default:
        order = [e.key for e in release.series + release.cpu]
        write_manifest(release.manifest_file, pin.version, manifest, order)
        if release.manifest_file.parent.is_dir() and not any(
            release.manifest_file.parent.rglob("*")
        ):
            release.manifest_file.parent.rmdir()
    state.remember(head, *commits)
    state.porting = None
    state.inputs = None  # the next make apply rebuilds with the port
    state.save(paths.build)
    if not pin.is_default and manifest.get(entry.key, {}).get("why", "x") == "":
        result += f"; say why in {release.manifest_file} (make verify requires it)"
    log(f"export: port of {entry.key}: {result}")
    return {"port": [entry.key]}


def _subject_of_patch(text: str) -> str:
    """The commit subject of a format-patch file (its Subject: header, unfolded,
    without the leading [PATCH])."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Subject: "):
            value = line[len("Subject: ") :]
            for more in lines[i + 1 :]:
                if not more.startswith((" ", "\t")):
                    break
                value += " " + more.strip()
            return re.sub(r"^\[PATCH[^\]]*\]\s*", "", value)
    return ""


def _refuse_unapplied_overlay_edits(
    repo: git.Repo, overlay_commit: str, applied: List[str], overlay_dir: Path
) -> None:
    """Export rewrites overlay/ from the tree: refuse when overlay/ holds edits that
    `make apply` never put into the tree (``applied``: the files of its overlay
    commit), so they are not overwritten."""
    on_disk = {rel.as_posix() for rel in overlay_files(overlay_dir)}
    edited = sorted(
        rel
        for rel in on_disk | set(applied)
        if rel not in applied
        or rel not in on_disk
        or (overlay_dir / rel).read_bytes() != _blob(repo, overlay_commit, rel)[0]
    )
    if edited:
        raise ToolError(
            "overlay/ has changes that are not in the tree (run `make apply` to put "
            "them in first; export would overwrite them):\n"
            + "\n".join(f"  overlay/{rel}" for rel in edited)
        )


def _replay(
    repo: git.Repo, sha: str, base_paths: List[str], onto: str, index: Path
) -> str:
    """Commit the base-file part of user commit ``sha`` on top of ``onto``."""
    env = {"GIT_INDEX_FILE": str(index)}
    run_git(repo, "read-tree", onto, env=env)
    diff = git_out(
        repo,
        "diff",
        "--binary",
        "--full-index",
        "--no-renames",
        f"{sha}^",
        sha,
        "--",
        *base_paths,
        strip=False,
    )
    status, _, err = run_git(
        repo, "apply", "--cached", "-", env=env, stdin=diff, check=False
    )
    if status != 0:
        raise ToolError(
            f"your commit {describe(repo, sha)} does not apply to the upstream series "
            f"without the CPU patches (it changes lines they touch?):\n{err}"
        )
    tree = git_out(repo, "write-tree", env=env)
    fields = git_out(repo, "log", "-1", "--format=%an%x00%ae%x00%aI", sha).split("\0")
    message = git_out(repo, "log", "-1", "--format=%B", sha, strip=False)
    return git_out(
        repo,
        "commit-tree",
        tree,
        "-p",
        onto,
        "-F",
        "-",
        stdin=message,
        env=git.author_env(fields[0], fields[1], fields[2]),
    )
