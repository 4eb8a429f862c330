"""The state file (a hash of every input, the shas a build produced) and the
pristine base commit (``qsv/base``) from the pinned wheel or an SGLang checkout."""

import hashlib
import json
import os
import re
import shutil
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from tools import ToolError, git
from tools.git import TOOL_EMAIL, TOOL_NAME, rev, run_git
from tools.pin import Pin, fetch_wheel
from tools.tree.inputs import _is_executable, overlay_files, release_inputs
from tools.tree.paths import (
    BASE_TAG,
    CPU_BRANCH,
    IGNORED_IN_TREE,
    MAX_REMEMBERED_TIPS,
    STATE_NAME,
    TREE_FORMAT,
    Paths,
    log,
)


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
