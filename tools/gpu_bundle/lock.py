"""The bundle's lock: ``requirements.txt`` (pip's hash-checking format) and
``bundle.toml`` (the download target, the GPU host's packages, the slimming rules).

pip does the work: ``pip download --require-hashes`` fetches exactly the locked
files and refuses any other hash. This module reads the two files for the bundle
(why each wheel is there, which file it is, what to drop from it), checks that they
agree, and rewrites the ``--hash`` lines when a version is changed on purpose
(``python -m tools wheelhouse lock``).
"""

import os
import re
import subprocess
import sys
import tempfile
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tools import PROJECT_ROOT, ToolError
from tools.pin import sha256_file

FILES_DIR = PROJECT_ROOT / "tools" / "gpu_bundle"
LOCK_PATH = FILES_DIR / "requirements.txt"
SETTINGS_PATH = FILES_DIR / "bundle.toml"
# name==version, then exactly one sha256 (pip's format; continuation lines joined)
REQUIREMENT = re.compile(
    r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>\S+)"
    r"\s+--hash=sha256:(?P<sha256>[0-9a-f]{64})"
)
FILE_COMMENT = "# file:"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


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
    settings_path: Path
    header: str  # the comment block at the top of requirements.txt, kept as it is
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
    slim: Dict[str, dict] = field(default_factory=dict)
    wheels: List[LockedWheel] = field(default_factory=list)

    def platforms(self) -> List[str]:
        tags = [f"manylinux_2_{n}_x86_64" for n in range(self.manylinux_max, 4, -1)]
        return tags + [
            "manylinux2014_x86_64",
            "manylinux2010_x86_64",
            "manylinux1_x86_64",
        ]

    def pip_download(self, dest: Path, requirements: List[str]) -> List[str]:
        """``pip download`` for the GPU host's interpreter and platform."""
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
        cmd += ["--only-binary=:all:", "--python-version", self.python_version]
        cmd += ["--implementation", self.implementation]
        for abi in self.abis:
            cmd += ["--abi", abi]
        for platform in self.platforms():
            cmd += ["--platform", platform]
        cmd += ["--progress-bar", "off", "--disable-pip-version-check"]
        return cmd + ["-d", str(dest), *requirements]


def _parse_requirements(text: str, path: Path) -> Tuple[str, List[dict]]:
    """(header, entries) of requirements.txt: blocks separated by blank lines, the
    first one all comments (the header), then one requirement per block, its
    reason in the comments above it and its file in the ``# file:`` line below."""
    blocks = [b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()]
    header = ""
    if blocks and all(line.lstrip().startswith("#") for line in blocks[0].splitlines()):
        header = blocks.pop(0)
    entries = []
    for block in blocks:
        why, filename, requirement = [], "", []
        for line in map(str.strip, block.splitlines()):
            if line.startswith(FILE_COMMENT):
                filename = line[len(FILE_COMMENT) :].strip()
            elif line.startswith("#"):
                why.append(line.lstrip("#").strip())
            else:
                requirement.append(line.rstrip("\\").strip())
        m = REQUIREMENT.fullmatch(" ".join(requirement))
        if not m:
            raise ToolError(
                f"{path}: expected one `name==version --hash=sha256:<64 hex>` (one "
                f"pinned file) per block, got:\n{block}"
            )
        entries.append(dict(m.groupdict(), why=" ".join(why), filename=filename))
    return header, entries


def load_lock(path: Path = LOCK_PATH, settings: Path = SETTINGS_PATH) -> Lock:
    try:
        text = Path(path).read_text()
        data = tomllib.loads(Path(settings).read_text())
    except FileNotFoundError as exc:
        raise ToolError(f"lock file not found: {exc.filename}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{settings}: not valid TOML: {exc}") from None
    header, entries = _parse_requirements(text, Path(path))
    try:
        bundle, host = data["bundle"], data["host"]
        lock = Lock(
            path=Path(path),
            settings_path=Path(settings),
            header=header,
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
            slim={normalize(k): v for k, v in data.get("slim", {}).items()},
        )
    except KeyError as exc:
        raise ToolError(f"{settings}: missing key {exc}") from None
    for entry in entries:
        name = normalize(entry["name"])
        slim = lock.slim.get(name, {})
        lock.wheels.append(
            LockedWheel(
                name=name,
                version=entry["version"],
                why=entry["why"],
                filename=entry["filename"],
                sha256=entry["sha256"],
                drop=tuple(slim.get("drop", ())),
                sm_dirs=slim.get("sm_dirs"),
            )
        )
    names = [w.name for w in lock.wheels]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ToolError(f"{path}: listed twice: {dupes}")
    return lock


def format_lock(lock: Lock) -> str:
    """requirements.txt as ``load_lock`` reads it and pip takes it."""
    blocks = [lock.header] if lock.header else []
    for w in lock.wheels:
        lines = [f"# {line}" for line in textwrap.wrap(w.why, 86)]
        lines += [f"{w.name}=={w.version} \\", f"    --hash=sha256:{w.sha256}"]
        if w.filename:
            lines.append(f"    {FILE_COMMENT} {w.filename}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def lock_problems(lock: Lock) -> List[str]:
    """Consistency of the lock itself (no download): a file and a reason for every
    wheel, file names that match name and version, slimming rules for locked
    wheels only, no host package bundled unless overridden."""
    problems = []
    for w in lock.wheels:
        if not w.why:
            problems.append(f"{w.name}: no comment above it saying why it is bundled")
        if not w.filename.endswith(".whl"):
            problems.append(
                f"{w.name}: no `{FILE_COMMENT} <wheel>` line "
                "(run: python -m tools wheelhouse lock)"
            )
            continue
        parts = w.filename[: -len(".whl")].split("-")
        if len(parts) not in (5, 6) or (normalize(parts[0]), parts[1]) != (
            w.name,
            w.version,
        ):
            problems.append(
                f"{w.name}=={w.version}: file {w.filename} is another release"
            )
        if w.name in lock.host_packages and w.name not in lock.override:
            problems.append(f"{w.name}: the GPU host has it already (host.packages)")
    for name in sorted(set(lock.slim) - {w.name for w in lock.wheels}):
        problems.append(f"slim.{name}: not a locked wheel")
    return problems


def _run_pip(cmd: List[str]) -> None:
    print("wheelhouse: " + " ".join(cmd[:3]) + f" ... ({len(cmd)} args)", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"pip download failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )


def fetch_locked(lock: Lock, cache_dir: Path) -> Dict[str, Path]:
    """Every wheel of the lock from ``cache_dir/wheelhouse``; what is missing there
    (or has another sha256: moved aside as ``.rejected``) is downloaded by
    ``pip download --require-hashes -r requirements.txt``. No network when the cache
    is complete."""
    problems = lock_problems(lock)
    if problems:
        raise ToolError(f"{lock.path} is inconsistent:\n  " + "\n  ".join(problems))
    dest = cache_dir / "wheelhouse"
    dest.mkdir(parents=True, exist_ok=True)
    missing = []
    for w in lock.wheels:
        path = dest / w.filename
        if path.is_file() and sha256_file(path) != w.sha256:
            print(
                f"wheelhouse: {w.filename} in the cache has another sha256; moved aside"
            )
            os.replace(path, path.with_name(path.name + ".rejected"))
        if not path.is_file():
            missing.append(w.name)
    if missing:
        print(f"wheelhouse: downloading {', '.join(missing)}")
        _run_pip(lock.pip_download(dest, ["--require-hashes", "-r", str(lock.path)]))
    paths = {}
    for w in lock.wheels:
        path = dest / w.filename
        if not path.is_file():  # pip verified a file of that hash with another name
            raise ToolError(
                f"pip gave no {w.filename} for {w.name}=={w.version}; the file line "
                f"of {lock.path.name} is stale: rerun `python -m tools wheelhouse lock`"
            )
        paths[w.name] = path
    return paths


def update_lock(lock: Lock, cache_dir: Path) -> List[str]:
    """Download every name==version again (no hashes) and rewrite the ``--hash`` and
    file lines of requirements.txt; return what changed."""
    dest = cache_dir / "wheelhouse"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=".lock-") as tmp:
        _run_pip(
            lock.pip_download(
                Path(tmp), [f"{w.name}=={w.version}" for w in lock.wheels]
            )
        )
        found = {normalize(f.name.split("-")[0]): f for f in Path(tmp).glob("*.whl")}
        changed, wheels = [], []
        for w in lock.wheels:
            got = found.get(w.name)
            if got is None:
                raise ToolError(f"pip gave no wheel for {w.name}=={w.version}")
            digest = sha256_file(got)
            if (got.name, digest) != (w.filename, w.sha256):
                changed.append(f"{w.name}: {w.filename or '-'} -> {got.name}")
            wheels.append(
                LockedWheel(
                    w.name, w.version, w.why, got.name, digest, w.drop, w.sm_dirs
                )
            )
            if not (dest / got.name).exists():
                os.replace(got, dest / got.name)
    lock.wheels = wheels
    lock.path.write_text(format_lock(lock))
    return changed
