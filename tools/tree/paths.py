"""Where the tree tools read and write (``Paths``), the names of the tree's refs and
files, and the log line."""

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tools import PROJECT_ROOT

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
