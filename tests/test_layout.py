"""The import graph of the project is layered (read with ``ast``, nothing imported):

* no production module (tools/, ci/, benchmarks/, examples/, qsv_reference/,
  overlay/) imports the tests: not ``tests.*``, and not a module of tests/ by its
  bare name through a ``sys.path`` entry;
* ``tools/__main__.py`` is only the entry point: it defines nothing, and no module
  of tools/ imports it, directly or through a module that imports it back;
* the command line's choices for ``tiny`` are the ones tools/checkpoints/tiny.py
  defines.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import PROJECT_ROOT

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
