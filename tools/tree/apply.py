"""``make apply``: the series, the overlay and the CPU group on the base, idempotent,
and ``make port``."""

import dataclasses
import shutil
import time
from pathlib import Path
from typing import List, Optional, Tuple

from tools import ToolError, git
from tools.git import TOOL_EMAIL, TOOL_NAME, describe, git_out, rev, run_git
from tools.pin import Pin, load_pin
from tools.tree.base import State, create_base, input_hash, resolve_base
from tools.tree.inputs import Entry, _is_executable, overlay_files, release_inputs
from tools.tree.paths import (
    BASE_TAG,
    CPU_BRANCH,
    OVERLAY_TRAILER,
    PTH_NAME,
    STATE_NAME,
    TREE_FORMAT,
    UPSTREAM_BRANCH,
    Paths,
    log,
)
from tools.tree.safety import Findings, inspect_tree


APPLIED_DIR = "qsv-applied"
# a series file as one commit, byte for byte: its own dates, CRs and extra headers
GIT_AM = (
    "am",
    "-q",
    "--keep-non-patch",
    "--keep-cr",
    "--committer-date-is-author-date",
)


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
    status, out, err = run_git(repo, *GIT_AM, str(patch.resolve()), check=False)
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
            f'PATCH={entry.key} (docs/design.md, "Porting a patch").'
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
        repo, *GIT_AM, "--reject", str(source.resolve()), check=False
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
