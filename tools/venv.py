"""The project's virtual environment: create or refresh it (``make setup``), and
re-resolve its pins on purpose (``make pins``).

Standard library only: this runs under the system ``python3.11`` before any
third-party package is installed.  A stamp file inside the venv records the sha256 of
the requirements file it was installed from, so a second run is a no-op.

tools/requirements-cpu.txt pins every package exactly (Pillow, NumPy and OpenCV,
which the preprocessing depends on, included), so a fresh machine gets what CI
tested. It is written only by ``update_pins``: pip resolves
tools/requirements-cpu.in (the top-level names, and the pins that are deliberate,
each with its reason) without installing anything, and the result replaces the file.
"""

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

from tools import ToolError

STAMP_NAME = ".qsv-requirements.sha256"


def requirements_hash(requirements: Path) -> str:
    digest = hashlib.sha256()
    digest.update(requirements.read_bytes())
    digest.update(f"python{sys.version_info[0]}.{sys.version_info[1]}".encode())
    return digest.hexdigest()


def setup(venv_dir: Path, requirements: Path) -> bool:
    """Make ``venv_dir`` match ``requirements``; return True when anything changed."""
    if not requirements.is_file():
        raise ToolError(f"requirements file not found: {requirements}")
    want = requirements_hash(requirements)
    stamp = venv_dir / STAMP_NAME
    python = venv_dir / "bin" / "python"
    if python.exists() and stamp.is_file() and stamp.read_text().strip() == want:
        print(f"setup: {venv_dir} is up to date with {requirements.name} ({want[:12]})")
        return False
    if not python.exists():
        print(
            f"setup: creating {venv_dir} with {sys.executable} ({sys.version.split()[0]})"
        )
        venv.EnvBuilder(with_pip=True, clear=venv_dir.exists()).create(venv_dir)
    else:
        print(f"setup: {requirements.name} changed since {venv_dir} was installed")
    stamp.unlink(missing_ok=True)
    cmd = [str(python), "-m", "pip", "install", "--progress-bar", "off"]
    cmd += ["-r", str(requirements)]
    print("setup: " + " ".join(cmd), flush=True)
    if subprocess.run(cmd).returncode != 0:
        raise ToolError(
            f"pip could not install {requirements}; {venv_dir} is left unstamped, "
            "so the next `make setup` retries"
        )
    stamp.write_text(want + "\n")
    print(f"setup: {venv_dir} ready (stamp {want[:12]})")
    return True


PINS_HEADER = """\
# The CPU environment of the project (make setup), every package pinned exactly, so a
# fresh machine gets what CI tested. Written by `make pins` (python -m tools pins):
# pip's resolution of tools/{source} for this interpreter. Do not edit it
# by hand: change the .in (a name, or a deliberate pin with its reason) and run
# make pins, then review the diff; the next make setup installs it.
"""


# what the venv brings itself (ensurepip of the interpreter), left out as pip freeze
# leaves them out: setuptools is torch's dependency, and the venv's satisfies it
VENV_OWN = {"pip", "setuptools", "wheel", "distribute"}


def resolve_pins(requirements_in: Path, python: str = sys.executable) -> list[str]:
    """``name==version`` of every package pip would install from
    ``requirements_in`` into an empty environment of ``python`` (nothing is
    installed: ``pip install --dry-run --ignore-installed --report``)."""
    with tempfile.TemporaryDirectory(prefix="qsv-pins-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [python, "-m", "pip", "install", "--dry-run", "--ignore-installed"]
        cmd += ["--quiet", "--disable-pip-version-check", "--report", str(report)]
        cmd += ["-r", str(requirements_in)]
        print("pins: " + " ".join(cmd), flush=True)
        if subprocess.run(cmd).returncode != 0:
            raise ToolError(f"pip could not resolve {requirements_in}")
        installs = json.loads(report.read_text())["install"]
    pins = {
        f"{i['metadata']['name']}=={i['metadata']['version']}"
        for i in installs
        if i["metadata"]["name"].lower() not in VENV_OWN
    }
    return sorted(pins, key=str.lower)  # pip freeze's order


def update_pins(requirements_in: Path, requirements: Path) -> list[str]:
    """Rewrite ``requirements`` from ``resolve_pins``; print and return the changes."""
    if not requirements_in.is_file():
        raise ToolError(f"requirements file not found: {requirements_in}")
    pins = resolve_pins(requirements_in)
    old = []
    if requirements.is_file():
        old = [
            line.strip()
            for line in requirements.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]

    def versions(lines):  # normalized name -> version
        return {
            re.sub(r"[-_.]+", "-", n).lower(): v
            for n, v in (p.split("==") for p in lines)
        }

    before, after = versions(old), versions(pins)
    changes = [
        f"{name}: {before.get(name, '-')} -> {after.get(name, '-')}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]
    header = PINS_HEADER.format(source=requirements_in.name)
    requirements.write_text(header + "".join(f"{p}\n" for p in pins))
    print("\n".join(changes) if changes else "pins: no version changed")
    return changes
