"""``make check``: the pre-submit gate, run on the patched tree as it is.

``make verify`` checks the inputs on a fresh temporary tree; ``make check`` checks
what would be submitted, the tree ``make apply`` built (``build/sglang``), without
rebuilding it:

1. the tree: built from the current patches/ and overlay/, a clean ``git status``,
   no operation in progress and no commits that ``make export`` has not saved;
2. ``compileall``: the Python files of the upstream series (``qsv/base..qsv/upstream``,
   overlay included) and the project's ``tools/``;
3. black and isort with upstream's pre-commit settings, on the overlay's files only;
4. codespell with upstream's pre-commit settings, on every file the series adds or
   changes (upstream's hook runs on whole changed files);
5. the missing-comma guard on ``srt/configs/model_config.py`` and the overlay.

The checks of 2-5 are tools.verify's. Every failure is collected into one report.
"""

import time
from pathlib import Path
from typing import List

from tools import PROJECT_ROOT, ToolError
from tools.verify import (
    MODEL_CONFIG,
    codespell_failures,
    compile_failures,
    format_failures,
    guard_failures,
)


def tree_problems(paths) -> List[str]:
    """Why the tree at ``paths.build`` is not what would be submitted (empty: it is)."""
    from tools import git
    from tools.tree import State, input_hash, inspect_tree

    state = State.load(paths.build) if (paths.build / ".git").is_dir() else None
    if state is None or not state.upstream or not state.base_key:
        raise ToolError(
            f"{paths.build} is not a tree made by `make apply`; run make apply first"
        )
    problems = []
    if state.inputs != input_hash(state.base_key, paths):
        problems.append(
            f"{paths.build} is stale: patches/ or overlay/ changed since it was "
            "built (or its last build failed); run make apply"
        )
    found = inspect_tree(git.Repo(paths.build), state)
    if found:
        problems.append(
            f"{paths.build} is not clean (git status):\n"
            + "\n".join(found.lines())
            + "\nCommit there and run `make export`, or discard with make apply FORCE=1."
        )
    return problems


def series_files(build: Path) -> List[str]:
    """The files that the upstream series adds or modifies (paths in the tree)."""
    from tools import git
    from tools.tree import BASE_TAG, UPSTREAM_BRANCH

    out = git.git_out(
        git.Repo(build),
        "diff",
        "--name-only",
        "--diff-filter=AM",
        "--no-renames",
        f"{BASE_TAG}..{UPSTREAM_BRANCH}",
    )
    return sorted(out.splitlines()) if out else []


def check(paths, tools_dir: Path = PROJECT_ROOT / "tools") -> None:
    from tools.tree import BASE_TAG, overlay_files

    start = time.monotonic()
    build = paths.build
    failures = tree_problems(paths)
    if not failures:
        print(f"check: {build} is up to date and clean")

    series = series_files(build)
    series_py = [f for f in series if f.endswith(".py")]
    failures += compile_failures(series_py, build, "check")
    tools_py = sorted(str(p) for p in tools_dir.rglob("*.py"))
    failures += compile_failures(tools_py, tools_dir, "check (tools/)")

    # the overlay's files as the tree has them (a stale tree is reported above)
    overlay_py = [
        rel.as_posix()
        for rel in overlay_files(paths.overlay)
        if rel.suffix == ".py" and (build / rel).is_file()
    ]
    failures += format_failures(overlay_py, build, "check")
    failures += codespell_failures(series, build, "check", base=BASE_TAG)
    guarded = [MODEL_CONFIG] + [p for p in overlay_py if p != MODEL_CONFIG]
    failures += guard_failures(guarded, build, "check")

    if failures:
        raise ToolError("check failed:\n" + "\n\n".join(failures))
    print(f"check: all checks passed in {time.monotonic() - start:.1f}s")
