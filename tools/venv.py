"""Create or refresh the project's virtual environment (``make setup``).

Standard library only: this runs under the system ``python3.11`` before any
third-party package is installed.  A stamp file inside the venv records the sha256 of
the requirements file it was installed from, so a second run is a no-op.
"""

import hashlib
import subprocess
import sys
import venv
from pathlib import Path

from tools import PROJECT_ROOT, ToolError

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


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tools.venv", description=__doc__)
    parser.add_argument("--venv", type=Path, default=PROJECT_ROOT / ".venv")
    parser.add_argument(
        "--requirements",
        type=Path,
        default=PROJECT_ROOT / "tools" / "requirements-cpu.txt",
    )
    args = parser.parse_args(argv)
    try:
        setup(args.venv, args.requirements)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
