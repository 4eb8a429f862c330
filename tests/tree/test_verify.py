"""make verify and its missing-comma guard."""

import textwrap

from tests.helpers.project import run_tools
from tests.helpers.tree import (
    CLEAN_MODULE,
    MODEL_CONFIG,
    commit_in_tree,
    plant_missing_comma,
)
from tools.verify import find_implicit_concatenations


def test_guard_passes_on_the_pristine_model_config(pristine_tree):
    text = (pristine_tree[0] / MODEL_CONFIG).read_text()
    assert "multimodal_model_archs = [" in text
    assert find_implicit_concatenations(text, MODEL_CONFIG) == []


def test_guard_fires_on_a_planted_missing_comma(pristine_tree, tmp_path):
    text = plant_missing_comma((pristine_tree[0] / MODEL_CONFIG).read_text())
    findings = find_implicit_concatenations(text, MODEL_CONFIG)
    assert len(findings) == 1
    (finding,) = findings
    assert finding.kind == "list"
    assert finding.value == "CLIPModelCohere2VisionForConditionalGeneration"
    assert text.splitlines()[finding.line - 1].strip() == '"CLIPModel"'
    # and through the CLI: exit 2, file:line named
    copy = tmp_path / "model_config.py"
    copy.write_text(text)
    proc = run_tools("guard", copy, check=2)
    assert f"{copy}:{finding.line}:" in proc.stderr


def test_guard_covers_tuples_and_sets_but_not_calls_or_plain_strings():
    source = textwrap.dedent(
        """\
        ARCHS = ("A", "B" "C")
        KINDS = {"x" 'y', "z"}
        OK = ["one", "two"]
        msg = ("a long message " "split in two")
        raise_it = ValueError("a " "b")
        nested = [f("p" "q"), ("r" "s")]
        """
    )
    findings = find_implicit_concatenations(source)
    assert [(f.line, f.kind, f.value) for f in findings] == [
        (1, "tuple", "BC"),
        (2, "set", "xy"),
        (6, "list", "rs"),
    ]


def test_verify_passes_on_a_clean_series(workspace):
    probe = workspace.overlay / "python/sglang/srt/models/qsv_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text(CLEAN_MODULE)
    proc = workspace.tools("verify", check=True)
    assert "all checks passed" in proc.stdout
    assert "black ok" in proc.stdout and "isort ok" in proc.stdout


def test_verify_reports_format_syntax_and_guard_failures(workspace):
    tree = workspace.build
    workspace.tools("apply", check=True)
    # a series patch that plants the missing comma
    text = plant_missing_comma((tree / MODEL_CONFIG).read_text())
    (tree / MODEL_CONFIG).write_text(text)
    commit_in_tree(tree, "Oops")
    workspace.tools("export", check=True)
    overlay = workspace.overlay / "python/sglang/srt/models"
    overlay.mkdir(parents=True, exist_ok=True)
    (overlay / "qsv_ugly.py").write_text("import torch\nimport os\nX = { 'a':1 }\n")
    (overlay / "qsv_broken.py").write_text("def f(:\n")

    proc = workspace.tools("verify", check=2)
    err = proc.stderr
    assert "byte-compile failed" in err and "qsv_broken.py" in err
    assert "black would change" in err and "qsv_ugly.py" in err
    assert "isort would change" in err
    assert f"{MODEL_CONFIG}:" in err and "CLIPModelCohere2Vision" in err
    assert "Traceback" not in err
