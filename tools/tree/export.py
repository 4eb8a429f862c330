"""``make export``: the tree's commits written back as the series and the overlay."""

import dataclasses
import re
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from tools import ToolError, git
from tools.git import (
    commit_files,
    commit_list,
    describe,
    git_out,
    is_ancestor,
    rev,
    run_git,
    subject,
)
from tools.pin import Pin, load_pin, sha256_file
from tools.tree.apply import _applied_patch
from tools.tree.base import State
from tools.tree.inputs import overlay_files, release_inputs, write_manifest
from tools.tree.paths import CPU_BRANCH, OVERLAY_TRAILER, UPSTREAM_BRANCH, Paths, log
from tools.tree.safety import Findings, inspect_tree

# the series' patch format: stable across git versions and machines (no sha, no
# signature, no "n/m" numbering, renames as delete + add)
FORMAT_PATCH = (
    "format-patch",
    "--zero-commit",
    "--no-signature",
    "--no-numbered",
    "--no-renames",
    "--subject-prefix=PATCH",
)


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
                    *FORMAT_PATCH,
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
                    *FORMAT_PATCH,
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
                "ported_from": sha256_file(entry.default),
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
            "ported_from": sha256_file(entry.default),
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
