"""The import graph of the project is layered (read with ``ast``, nothing imported):

* no production module (tools/, ci/, benchmarks/, examples/, qsv_reference/,
  overlay/) imports the tests: not ``tests.*``, and not a module of tests/ by its
  bare name through a ``sys.path`` entry;
* no module of tests/ (test modules, conftest.py, tests/helpers/) imports a test
  module or conftest, by ``tests.*`` or by its bare name: what tests share is in
  tests/helpers/;
* ``tools/__main__.py`` is only the entry point: it defines nothing, and no module
  of tools/ imports it, directly or through a module that imports it back;
* the command line's choices for ``tiny`` are the ones tools/checkpoints/tiny.py
  defines;
* tools/git.py is the tools' one git layer: no other module of tools/ imports
  gitpython (``import git``) or starts git itself (``subprocess``/``os`` with a
  ``git`` command line).
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.project import PROJECT_ROOT

PRODUCTION = ("tools", "ci", "benchmarks", "examples", "qsv_reference", "overlay")
TOOLS = PROJECT_ROOT / "tools"
MAIN = "tools.__main__"


def python_files(*tops: str) -> list[Path]:
    return sorted(
        path
        for top in tops
        for path in (PROJECT_ROOT / top).rglob("*.py")
        if "__pycache__" not in path.parts
    )


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in it (function-level included),
    with ``from X import Y`` also giving ``X.Y`` (Y may be a submodule)."""
    package = module_name(path)
    if path.name != "__init__.py":
        package = package.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against the package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def test_production_code_does_not_import_the_tests():
    test_modules = {p.stem for p in python_files("tests")} - {"__init__"}
    own = {p.stem for p in python_files(*PRODUCTION)}  # sys.path neighbours
    found = []
    for path in python_files(*PRODUCTION):
        for name in imported(path):
            top = name.split(".")[0]
            if top == "tests" or (top in test_modules and top not in own):
                found.append(f"{path.relative_to(PROJECT_ROOT)}: imports {name}")
    assert found == []


def test_tests_import_helpers_not_tests_or_conftest():
    test_modules = {p.stem for p in python_files("tests") if p.stem.startswith("test_")}
    forbidden = test_modules | {"conftest"}

    def offends(name: str) -> bool:
        parts = name.split(".")
        if parts[0] == "tests":  # tests.<dir>.test_x, tests.conftest, ...
            return any(part in forbidden for part in parts[1:])
        return parts[0] in forbidden  # by its bare name through sys.path

    found = [
        f"{path.relative_to(PROJECT_ROOT)}: imports {name}"
        for path in python_files("tests")
        for name in sorted(imported(path))
        if offends(name)
    ]
    assert found == [], "import shared helpers from tests/helpers/"
    # the check sees what it forbids
    assert offends("conftest.git") and offends("tests.conftest.run_tools")
    assert offends("test_layout") and offends("tests.tree.test_layout.imported")
    assert not offends("tests.helpers.project.git") and not offends("tools.tree")


def test_tools_main_is_only_the_entry_point():
    tree = ast.parse((TOOLS / "__main__.py").read_text())
    defined = [
        node.name
        for node in tree.body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    ]
    assert (
        defined == []
    ), "tools/__main__.py defines helpers; they belong in tools/cli.py"

    modules = {module_name(p): p for p in python_files("tools")}
    graph = {
        name: {m for m in imported(path) if m in modules and m != name}
        for name, path in modules.items()
    }
    importers = sorted(name for name, deps in graph.items() if MAIN in deps)
    assert importers == []

    # and nothing of tools/ reaches it through other modules (no cycle back)
    for start in sorted(set(graph) - {MAIN}):
        seen, todo = set(), [start]
        while todo:
            for dep in graph[todo.pop()] - seen:
                seen.add(dep)
                todo.append(dep)
        assert MAIN not in seen, f"{start} reaches {MAIN}"

    # the same for the other production code
    for path in python_files(*(top for top in PRODUCTION if top != "tools")):
        assert MAIN not in imported(path), path


def test_tiny_choices_of_the_command_line_are_tinys():
    from tools.cli import build_parser

    tree = ast.parse((TOOLS / "checkpoints" / "tiny.py").read_text())
    keys = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in ("DTYPES", "SHAPES"):
                    keys[target.id] = sorted(k.value for k in node.value.keys)
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.dest == "command"]
    tiny = commands.choices["tiny"]
    choices = {a.dest: sorted(a.choices) for a in tiny._actions if a.choices}
    assert choices["dtype"] == keys["DTYPES"]
    assert choices["shape"] == keys["SHAPES"]


GIT_LAYER = TOOLS / "git.py"


def _is_git_word(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and (node.value == "git" or node.value.endswith("/git"))
    )


def git_runs(path: Path) -> list[str]:
    """Where ``path`` imports gitpython or builds a git command line of its own:
    a list or tuple that starts with "git", or a shell string "git ..."."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [
                f"{node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.split(".")[0] == "git"
            ]
        elif isinstance(node, ast.ImportFrom):
            if not node.level and (node.module or "").split(".")[0] == "git":
                found.append(f"{node.lineno}: from {node.module} import ...")
        elif isinstance(node, (ast.List, ast.Tuple)):
            if node.elts and _is_git_word(node.elts[0]):
                found.append(f"{node.lineno}: a git command line")
        elif isinstance(node, ast.Call) and node.args:
            first = node.args[0]
            if (
                isinstance(first, ast.Constant)
                and isinstance(first.value, str)
                and first.value.startswith("git ")
                and isinstance(node.func, ast.Attribute)
                and node.func.attr
                in (
                    "run",
                    "Popen",
                    "call",
                    "check_call",
                    "check_output",
                    "system",
                    "popen",
                )
            ):
                found.append(f"{node.lineno}: a git shell command")
    return found


def test_tools_drive_git_through_tools_git_only():
    assert GIT_LAYER.is_file()
    found = [
        f"{path.relative_to(PROJECT_ROOT)}:{where}"
        for path in python_files("tools")
        if path != GIT_LAYER
        for where in git_runs(path)
    ]
    assert found == [], "run git through tools/git.py (from tools import git)"


def test_the_git_check_sees_what_it_forbids(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import subprocess\n"
        "import git\n"
        "from git import Repo\n"
        "subprocess.run(['git', 'status'])\n"
        "subprocess.run(('git', '-C', 'x', 'log'))\n"
        "subprocess.run('git status', shell=True)\n"
        "subprocess.run(['pip', 'install', 'git'])\n"
        "from tools import git as layer\n"
    )
    assert sorted(int(line.split(":")[0]) for line in git_runs(sample)) == [
        2,
        3,
        4,
        5,
        6,
    ]
