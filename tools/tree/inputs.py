"""What goes into the tree: the series files, the overlay, and a release's variants
of the series (``patches/<release>/``, ``variants.toml``)."""

import json
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from tools import ToolError
from tools.pin import sha256_file
from tools.tree.paths import Paths

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
            if record is not None and record["ported_from"] != sha256_file(
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
                out.append(
                    f"{self.manifest_file}: [{record['kind']}.\"{key}\"] has no why"
                )
        return out


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
                    raise ToolError(f"{manifest_file}: variant {key} has no file {own}")
                entries.append(Entry(group, default.name, default, own, True))
        resolved[group] = entries
    if variants is not None and variants.is_dir():
        files = sorted(
            p.relative_to(variants).as_posix() for p in variants.rglob("*.patch")
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
