"""The pinned upstream releases (``pin.toml``) and the hash-checked wheel cache.

``pin.toml`` pins several SGLang releases (``[releases."<version>"]``) and names the
``default`` one; ``load_pin(path)`` is the default release, ``load_pin(path, v)``
release ``v``.

A wheel is used only after its sha256 matches the pin.  A file whose hash differs is
moved aside as ``<name>.rejected`` and reported; it is never laid out into a tree.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Tuple

from tools import ToolError

WHEEL_DIR_ENV = "QSV_WHEEL_DIR"


@dataclass(frozen=True)
class Wheel:
    tag: str
    filename: str
    sha256: str
    python_version: str
    platform: str


@dataclass(frozen=True)
class Pin:
    """One pinned SGLang release of ``pin.toml``."""

    path: Path
    version: str
    upstream_tag: str
    base_wheel: str
    wheels: Dict[str, Wheel]
    # the release that make uses without PIN= (pin.toml's ``default``)
    default_version: str = ""

    @property
    def base(self) -> Wheel:
        return self.wheels[self.base_wheel]

    @property
    def is_default(self) -> bool:
        return self.version == self.default_version


def _read_pin_file(path: Path) -> dict:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ToolError(f"pin file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ToolError(f"{path}: not valid TOML: {exc}") from None


def pinned_releases(path: Path) -> Tuple[str, List[str]]:
    """(the default release, every pinned release in file order) of ``path``."""
    data = _read_pin_file(path)
    releases = data.get("releases")
    if not isinstance(releases, dict) or not releases:
        raise ToolError(f'{path}: no [releases."<version>"] tables')
    default = data.get("default")
    if default not in releases:
        raise ToolError(
            f"{path}: default = {default!r} is not one of the pinned releases "
            f"({', '.join(releases)})"
        )
    return default, list(releases)


def load_pin(path: Path, release: Optional[str] = None) -> Pin:
    """The pinned release ``release`` of ``path`` (None: its default release)."""
    default, versions = pinned_releases(path)
    version = release or default
    if version not in versions:
        raise ToolError(
            f"SGLang {version} is not pinned in {path}; pinned: {', '.join(versions)} "
            f"(make ... PIN=<one of them>)"
        )
    section = _read_pin_file(path)["releases"][version]
    where = f'{path} [releases."{version}"]'
    try:
        wheels = {
            tag: Wheel(
                tag=tag,
                filename=entry["filename"],
                sha256=entry["sha256"].lower(),
                python_version=entry["python_version"],
                platform=entry["platform"],
            )
            for tag, entry in section["wheels"].items()
        }
        pin = Pin(
            path=Path(path),
            version=version,
            upstream_tag=section["upstream_tag"],
            base_wheel=section["base_wheel"],
            wheels=wheels,
            default_version=default,
        )
    except KeyError as exc:
        raise ToolError(f"{where}: missing key {exc}") from None
    if pin.base_wheel not in wheels:
        raise ToolError(f"{where}: base_wheel {pin.base_wheel!r} has no wheels entry")
    for wheel in wheels.values():
        if f"-{version}-" not in wheel.filename:
            raise ToolError(f"{where}: {wheel.filename} is not SGLang {version}")
    return pin


def release_suffix(pin: Pin) -> str:
    """'' for the default release, '-<version>' for another: the suffix of its
    tree (build/sglang-<version>), venv (.venv-<version>) and requirements file
    (tools/requirements-cpu-<version>.txt); the Makefile spells the same names."""
    return "" if pin.is_default else f"-{pin.version}"


def release_build_dir(pin: Pin, build_root: Path) -> Path:
    return Path(build_root) / f"sglang{release_suffix(pin)}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _reject(
    path: Path, wheel: Wheel, actual: str, origin: str, keep: bool
) -> ToolError:
    note = f"left in place at {path}"
    if not keep:
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        note = f"moved aside to {rejected}; the next run downloads a fresh copy"
    return ToolError(
        f"refusing {wheel.filename} from {origin}: sha256 mismatch\n"
        f"  expected {wheel.sha256} (pin.toml)\n"
        f"  got      {actual}\n"
        f"The file was not used ({note})."
    )


def _pip_download(wheel: Wheel, version: str, dest: Path) -> Path:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
    cmd += ["--only-binary=:all:", "--python-version", wheel.python_version]
    cmd += ["--platform", wheel.platform, "--progress-bar", "off"]
    cmd += ["-d", str(dest), f"sglang=={version}"]
    print("fetch: " + " ".join(cmd), flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolError(
            f"pip could not download {wheel.filename}:\n{proc.stdout}{proc.stderr}"
        )
    got = dest / wheel.filename
    if not got.exists():
        found = ", ".join(p.name for p in dest.iterdir()) or "nothing"
        raise ToolError(f"pip download gave {found}, not {wheel.filename}")
    return got


def fetch_wheel(
    pin: Pin,
    cache_dir: Path,
    tag: Optional[str] = None,
    wheel_dirs: Optional[Iterable[Path]] = None,
    download: Optional[Callable[[Wheel, str, Path], Path]] = None,
) -> Path:
    """Return the cached, hash-checked wheel ``tag`` (default: the base wheel).

    Looks in ``cache_dir``, then in ``wheel_dirs`` (default: the directories named by
    $QSV_WHEEL_DIR, ``:``-separated), then downloads it with pip.
    """
    wheel = pin.wheels[tag or pin.base_wheel]
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cache_dir / wheel.filename
    if cached.exists():
        actual = sha256_file(cached)
        if actual != wheel.sha256:
            raise _reject(cached, wheel, actual, f"the cache {cache_dir}", keep=False)
        return cached

    if wheel_dirs is None:
        wheel_dirs = [
            Path(p) for p in os.environ.get(WHEEL_DIR_ENV, "").split(":") if p
        ]
    for directory in wheel_dirs:
        candidate = Path(directory) / wheel.filename
        if candidate.is_file():
            actual = sha256_file(candidate)
            if actual != wheel.sha256:
                raise _reject(candidate, wheel, actual, str(directory), keep=True)
            tmp = cached.with_name(cached.name + ".part")
            shutil.copyfile(candidate, tmp)
            os.replace(tmp, cached)
            print(f"fetch: {wheel.filename} copied from {directory} (sha256 ok)")
            return cached

    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".download-") as tmp:
        got = (download or _pip_download)(wheel, pin.version, Path(tmp))
        actual = sha256_file(got)
        if actual != wheel.sha256:
            raise _reject(got, wheel, actual, "the package index", keep=False)
        os.replace(got, cached)
    print(f"fetch: {wheel.filename} -> {cached} (sha256 ok)")
    return cached
