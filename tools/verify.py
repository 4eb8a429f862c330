"""``make verify``: check the series the way an upstream reviewer's CI would.

1. the series, the overlay and the CPU group apply to a fresh pinned tree (temp dir),
   for another release than the default with its variants (patches/<release>/), which
   must be ported from the current default patches and say why;
2. every Python file they touch byte-compiles;
3. the overlay's Python files pass black and isort with upstream's settings;
4. guard: no list, tuple or set of strings in ``srt/configs/model_config.py`` (or in
   an overlay file) holds implicitly concatenated string literals, the classic
   missing comma that silently merges two architecture names;
5. the GitHub workflows lint clean (``tools.workflows``).
"""

import ast
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import tokenize
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from tools import ToolError

MODEL_CONFIG = "python/sglang/srt/configs/model_config.py"
# upstream's pre-commit: black (default line length 88) and isort --profile black;
# upstream files place sglang imports in their own first-party section.
BLACK_ARGS = ["--check", "--diff", "--quiet", "--line-length", "88"]
ISORT_ARGS = ["--check-only", "--diff", "--quiet", "--profile", "black", "-p", "sglang"]
# upstream's pre-commit: codespell v2.4.1 with
#   args: ['--toml', 'python/pyproject.toml', '-L', 'cann,thi,makro,wil,rouge,PRIS']
# and python/pyproject.toml's [tool.codespell] (CODESPELL_TOML), excluding the files
# that match CODESPELL_EXCLUDE (the hook's own exclude and the config's global one).
# Read from upstream's files of 0.5.1-0.5.3 (the same in both; the wheel of 0.5.17
# ships neither file); a tree built from a checkout uses its own pyproject.toml.
CODESPELL_ARGS = ["-L", "cann,thi,makro,wil,rouge,PRIS"]
CODESPELL_TOML = {
    "ignore-words-list": "ans, als, hel, boostrap, childs, te, vas, hsa, ment",
    "skip": "*.json,*.jsonl,*.patch,*.txt",
}
CODESPELL_EXCLUDE = re.compile(
    r"^(python/sglang/srt/grpc/|test/srt/test_reasoning_parser\.py$"
    r"|docs/advanced_features/vlm_query\.ipynb$)"
)


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    kind: str
    value: str
    literals: List[str]

    def __str__(self) -> str:
        joined = " ".join(self.literals)
        return (
            f"{self.path}:{self.line}: the {self.kind} element {joined} is ONE string "
            f"({self.value!r}): implicitly concatenated literals; a missing comma?"
        )


def _char_col(lines: List[str], lineno: int, byte_col: int) -> int:
    """Convert an AST (UTF-8 byte) column to a tokenize (character) column."""
    line = lines[lineno - 1] if lineno - 1 < len(lines) else ""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def find_implicit_concatenations(source: str, path: str = "<source>") -> List[Finding]:
    """Elements of list/tuple/set displays made of two or more adjacent STRING tokens.

    ``["A" "B", "C"]`` parses as ``["AB", "C"]``: the AST cannot tell, the tokens can.
    """
    try:
        tree = ast.parse(source, filename=path)
    except SyntaxError as exc:
        raise ToolError(f"{path}:{exc.lineno}: syntax error: {exc.msg}") from None
    lines = source.splitlines(keepends=True)
    strings = [
        tok
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.STRING
    ]
    kinds = {ast.List: "list", ast.Tuple: "tuple", ast.Set: "set"}
    findings = []
    for node in ast.walk(tree):
        kind = kinds.get(type(node))
        if kind is None:
            continue
        for elt in node.elts:
            if not (isinstance(elt, ast.Constant) and isinstance(elt.value, str)):
                continue
            start = (elt.lineno, _char_col(lines, elt.lineno, elt.col_offset))
            end = (elt.end_lineno, _char_col(lines, elt.end_lineno, elt.end_col_offset))
            inside = [tok for tok in strings if start <= tok.start and tok.end <= end]
            if len(inside) > 1:
                findings.append(
                    Finding(
                        path=path,
                        line=inside[0].start[0],
                        kind=kind,
                        value=elt.value,
                        literals=[tok.string for tok in inside],
                    )
                )
    return sorted(findings, key=lambda f: f.line)


def check_files(files: Iterable[Path]) -> None:
    """Run the guard on ``files``; raise ToolError listing every finding."""
    files = list(files)
    findings = []
    for path in files:
        findings += find_implicit_concatenations(Path(path).read_text(), str(path))
    if findings:
        raise ToolError(
            "implicitly concatenated strings in a list/tuple/set:\n"
            + "\n".join(f"  {f}" for f in findings)
        )
    print(f"guard: ok ({len(files)} file(s))")


def _run_tool(
    module: str,
    args: List[str],
    files: List[str],
    cwd: Path,
    env: Optional[Dict[str, str]] = None,
) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args, *files],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=None if env is None else {**os.environ, **env},
    )
    if proc.returncode == 0:
        return ""
    if "No module named" in proc.stderr:
        raise ToolError(
            f"{module} is not installed in {sys.executable}; run make setup"
        )
    return (proc.stdout + proc.stderr).strip() or f"{module} exited {proc.returncode}"


# ------------------------------------------------ the checks (verify and check)


def compile_failures(files: List[str], cwd: Path, label: str) -> List[str]:
    """``python -m compileall`` on ``files`` (relative to ``cwd``); the bytecode
    goes to a temporary directory, so nothing is written next to the sources."""
    if not files:
        return []
    with tempfile.TemporaryDirectory(prefix="qsv-pycache-") as cache:
        proc = subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "-f", *files],
            cwd=cwd,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONPYCACHEPREFIX": cache},
        )
    if proc.returncode != 0:
        return ["byte-compile failed:\n" + proc.stdout + proc.stderr]
    print(f"{label}: compileall ok ({len(files)} file(s))")
    return []


def format_failures(files: List[str], cwd: Path, label: str) -> List[str]:
    """black and isort with upstream's settings on ``files``, run inside the tree
    ``cwd`` (isort's sections depend on it)."""
    if not files:
        print(f"{label}: no overlay Python files to format-check")
        return []
    failures = []
    for module, args in (("black", BLACK_ARGS), ("isort", ISORT_ARGS)):
        out = _run_tool(module, args, files, cwd)
        if out:
            failures.append(
                f"{module} would change overlay files (run it on overlay/):\n" + out
            )
        else:
            print(f"{label}: {module} ok ({len(files)} overlay file(s))")
    return failures


def guard_failures(files: List[str], cwd: Path, label: str) -> List[str]:
    """The missing-comma guard on ``files`` (relative to ``cwd``)."""
    findings = []
    for rel in files:
        text = (cwd / rel).read_text()
        try:
            findings += find_implicit_concatenations(text, rel)
        except ToolError:
            pass  # a syntax error, reported by compileall
    if findings:
        return [
            "implicitly concatenated strings in a list/tuple/set:\n"
            + "\n".join(f"  {f}" for f in findings)
        ]
    print(f"{label}: guard ok ({len(files)} file(s))")
    return []


def codespell_files(files: List[str]) -> List[str]:
    """``files`` minus those upstream's pre-commit excludes from codespell."""
    return [f for f in files if not CODESPELL_EXCLUDE.search(f)]


def codespell_failures(
    files: List[str], cwd: Path, label: str, base: Optional[str] = None
) -> List[str]:
    """codespell with upstream's settings on ``files`` (relative to ``cwd``).

    Upstream passes ``--toml python/pyproject.toml``; a tree laid out from the
    wheel has no pyproject.toml, so its ``[tool.codespell]`` section is written to
    a temporary file instead (CODESPELL_TOML, the same keys).

    ``base``: a commit of the tree at ``cwd`` (the pinned release). A finding on a
    line that the file already has there is upstream's own text (0.5.17's
    server_args.py, 0.5.23's io_struct.py: "MIS"): reported, not a failure, since
    the series did not write it and must not reformat upstream files."""
    files = codespell_files(files)
    if not files:
        print(f"{label}: no files for codespell")
        return []
    with tempfile.TemporaryDirectory(prefix="qsv-codespell-") as tmp:
        toml = cwd / "python" / "pyproject.toml"
        if not (toml.is_file() and "[tool.codespell]" in toml.read_text()):
            toml = Path(tmp) / "pyproject.toml"
            toml.write_text(
                "[tool.codespell]\n"
                + "".join(f'{k} = "{v}"\n' for k, v in CODESPELL_TOML.items())
            )
        out = _run_tool(
            "codespell_lib", ["--toml", str(toml), *CODESPELL_ARGS], files, cwd
        )
    findings = out.splitlines() if out else []
    if base is not None:
        upstream = [f for f in findings if _at_base(f, cwd, base)]
        findings = [f for f in findings if f not in upstream]
        for finding in upstream:
            print(f"{label}: codespell: upstream's own line, left as it is: {finding}")
    if findings:
        return ["codespell found misspellings:\n" + "\n".join(findings)]
    print(f"{label}: codespell ok ({len(files)} file(s))")
    return []


def _at_base(finding: str, cwd: Path, base: str) -> bool:
    """Whether the line of a codespell finding (``path:line: word ==> fix``) is, to
    the letter, a line of that file at ``base``."""
    from tools import git

    path, sep, rest = finding.partition(":")
    number = rest.split(":", 1)[0]
    if not sep or not number.strip().isdigit():
        return False
    lines = (cwd / path).read_text(errors="replace").splitlines()
    index = int(number) - 1
    if not 0 <= index < len(lines):
        return False
    status, original, _ = git.run_git(
        git.Repo(cwd), "show", f"{base}:{path}", check=False
    )
    # not in the release (status != 0): the series added the file
    return status == 0 and lines[index] in original.splitlines()


def verify(paths, src: Optional[Path] = None) -> None:
    from tools import git
    from tools.git import git_out
    from tools.tree import BASE_TAG, Paths, apply, overlay_files, release_inputs

    failures = []
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="qsv-verify-") as tmp:
        fresh = Paths(
            pin=paths.pin,
            patches=paths.patches,
            overlay=paths.overlay,
            build=Path(tmp) / "sglang",
            cache=paths.cache,
            release=paths.release,
        )
        # 1. applies to a fresh pinned tree (raises with the failing patch named);
        # a release's variants are ported from the current default patches
        failures += release_inputs(fresh).problems()
        state = apply(fresh, src=src, pack=False)
        repo = git.Repo(fresh.build)
        changed = git_out(
            repo,
            "diff",
            "--name-only",
            "--diff-filter=AMR",
            "--no-renames",
            f"{BASE_TAG}..{state.tip}",
        ).splitlines()
        touched = sorted(p for p in changed if p.endswith(".py"))
        print(f"verify: series applies; {len(touched)} Python file(s) touched")

        # 2. byte-compiles
        failures += compile_failures(touched, fresh.build, "verify")

        # 3. overlay formatting, checked in place in the tree (for isort's sections)
        overlay_py = [
            rel.as_posix()
            for rel in overlay_files(paths.overlay)
            if rel.suffix == ".py"
        ]
        failures += format_failures(overlay_py, fresh.build, "verify")

        # 4. the missing-comma guard
        guarded = [MODEL_CONFIG] + [p for p in overlay_py if p != MODEL_CONFIG]
        failures += guard_failures(guarded, fresh.build, "verify")

    # 5. the project's GitHub workflows (not inputs of the tree)
    from tools.workflows import lint_workflows

    workflows, findings = lint_workflows()
    if findings:
        failures.append("workflow lint:\n" + "\n".join(f"  {f}" for f in findings))
    else:
        print(f"verify: workflows ok ({len(workflows)} file(s))")

    if failures:
        raise ToolError("verify failed:\n" + "\n\n".join(failures))
    print(f"verify: all checks passed in {time.monotonic() - start:.1f}s")
