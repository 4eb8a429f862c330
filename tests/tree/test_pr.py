"""make pr: the upstream series as mail and DESCRIPTION.md from recorded results.

The series is generated from a workspace tree built from the project's real
patches/ and overlay/; the description from the recorded results in
tests/data/pr_results/ (values no real run has), from the project's own docs/, and
from nothing at all.
"""

import email
import json
import re
import shutil
import subprocess

import pytest

from tests.helpers.project import PROJECT_ROOT, git
from tools.pr import ENV_NAME, env_reads

RESULTS = PROJECT_ROOT / "tests" / "data" / "pr_results"


@pytest.fixture
def project_ws(workspace):
    """The workspace with the project's real series and overlay, applied."""
    shutil.rmtree(workspace.patches)
    shutil.copytree(PROJECT_ROOT / "patches", workspace.patches)
    shutil.rmtree(workspace.overlay)
    shutil.copytree(PROJECT_ROOT / "overlay", workspace.overlay)
    workspace.commit_inputs("project inputs")
    workspace.tools("apply", check=True)
    return workspace


def make_pr(ws, out, docs, ci_dir, check=True):
    return ws.tools(
        "pr",
        "--out",
        out,
        "--docs-dir",
        docs,
        "--ci-dir",
        ci_dir,
        "--readme",
        PROJECT_ROOT / "README.md",
        check=check,
    )


def test_series_applies_with_git_am_onto_the_base(project_ws, tmp_path):
    out = tmp_path / "pr"
    (out).mkdir()
    (out / "0042-stale.patch").write_text("an old run's patch\n")
    make_pr(project_ws, out, RESULTS / "docs", RESULTS / "ci")
    tree = project_ws.build
    patches = sorted(out.glob("*.patch"))
    commits = git(tree, "rev-list", "--reverse", "qsv/base..qsv/upstream").split()
    assert len(patches) == len(commits) >= 2  # the stale patch is gone
    subjects = [
        " ".join(email.message_from_string(p.read_text())["Subject"].split())
        for p in patches
    ]
    assert not any("[CPU]" in s for s in subjects)  # the CPU group stays out
    numbers = [re.match(r"\[PATCH (\d+)/(\d+)\] ", s).groups() for s in subjects]
    assert [(int(n), int(of)) for n, of in numbers] == [
        (n, len(commits)) for n in range(1, len(commits) + 1)
    ]

    # a fresh clone at the base takes the mails with git am; --keep-non-patch
    # keeps the upstream-style "[Model] ..." prefix (plain git am drops it)
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--no-checkout", str(tree), str(clone))
    git(clone, "checkout", "-q", "--detach", "qsv/base")
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=Reviewer",
            "-c",
            "user.email=reviewer@localhost",
            "am",
            "-q",
            "--keep-non-patch",
            *map(str, patches),
        ],
        cwd=clone,
        check=True,
        capture_output=True,
    )
    assert git(clone, "rev-parse", "HEAD^{tree}") == git(
        tree, "rev-parse", "qsv/upstream^{tree}"
    )
    applied = git(clone, "log", "--format=%s", "--reverse", "qsv/base..HEAD")
    assert applied.splitlines() == [s.split("] ", 1)[1] for s in subjects]


def test_description_is_filled_from_the_recorded_results(project_ws, tmp_path):
    out = tmp_path / "pr"
    proc = make_pr(project_ws, out, RESULTS / "docs", RESULTS / "ci")
    assert "DESCRIPTION.md" in proc.stdout
    text = (out / "DESCRIPTION.md").read_text()
    # upstream's template sections, then ours, then the checklist last
    headings = re.findall(r"^## (.*)$", text, re.M)
    assert headings == [
        "Motivation",
        "Modifications",
        "Benchmark & Profiling",
        "How to run",
        "Documentation",
        "Test results",
        "Hardware requirements",
        "Checklist",
    ]
    parity = json.loads((RESULTS / "docs/gpu-runs/2030-01-02/parity.json").read_text())
    assert f"{parity['prompt_tokens']} tokens, identical" in text
    assert "max abs difference 0.042" in text
    assert "`[0, 3, 8, 21]`" in text
    assert "project commit `abcdef1`" in text  # the run's code, from gpu-runs.md
    assert "TP=4 on NVIDIA Fixture-GPU 123GB" in text
    # the newest run (its folder named in its entry) holds only the gates
    assert (
        "GPU CI gates (2030-01-05, project commit `beef123`, `gates.json`, "
        "ci/gpu/gates.py): **pass**, 11 passed, 0 failed, 2 not gated, 1 pending."
    ) in text
    # the performance table against the original, its rows as recorded
    assert "| 420 frames, first | **0.777** | 9.99 | 12.9x faster |" in text
    assert "| decode tokens/s per request, batch 1 | 211.2 | 12.5 |" in text
    assert "| 8 concurrent video requests/s | 2.345 | 0.321 |" in text
    # CI: the run, its stages and pytest's totals
    assert "project commit `fedcba987654`" in text
    assert "**passed** in 666 s" in text
    assert "| test | ok | 547 |" in text
    assert "pytest: 271 passed, 0 failed, 0 errors, 3 skipped (274 tests" in text
    assert "`tests.test_fixture::test_needs_a_gpu`: needs CUDA (fixture)" in text
    # the CI commit is not the project's HEAD: said so, and the format box unticked
    assert "these results are of the commit above" in text
    assert "- [ ] Format your code" in text
    assert "- [x] Add unit tests." in text  # the series adds test/ files
    # the rows for upstream's supported-models doc
    assert "docs/supported_models/text_generation/multimodal_language_models.md" in text
    assert "\n  | **Quicksviewer** (Qwen2.5-7B, Llama-3.1-8B) |" in text
    # hardware
    assert "17.5 GB in bf16" in text and "9.9.9+fixture" in text
    assert "2030-01-02: 4 x NVIDIA Fixture-GPU 123GB, NVIDIA Fixture-GPU 123GB" in text

    # files touched: every file of the diff, once
    changed = git(project_ws.build, "diff", "--name-only", "qsv/base..qsv/upstream")
    for path in changed.splitlines():
        assert text.count(f"| `{path}` |") == 1, path
    # every SGLANG_QSV_ variable the overlay reads, with the README's description
    names = set()
    for path in (PROJECT_ROOT / "overlay").rglob("*.py"):
        names |= set(env_reads(path.read_text(), str(path), ENV_NAME))
    assert names
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name in names:
        row = re.search(rf"^\| `{name}` \| ([^|]*) \|", text, re.M)
        assert row, name
        assert f"| `{name}` | {row.group(1).strip()} |" in readme, name
    assert "not described in the project's README" not in text
    # the series' test and its variable
    assert "QUICKSVIEWER_MODEL_PATH=<path> python3 -m pytest" in text


def test_description_from_the_projects_docs(project_ws, tmp_path):
    """The project's real docs/ parse: the newest parity run's values appear."""
    docs = PROJECT_ROOT / "docs"
    runs = sorted(p.parent.name for p in (docs / "gpu-runs").glob("*/parity.json"))
    parity = json.loads((docs / "gpu-runs" / runs[-1] / "parity.json").read_text())
    make_pr(project_ws, tmp_path / "pr", docs, tmp_path / "no-ci")
    text = (tmp_path / "pr" / "DESCRIPTION.md").read_text()
    diff = parity["first_token_top20_max_abs_logprob_diff"]
    assert f"max abs difference {diff:.3f}" in text
    assert f"`docs/gpu-runs/{runs[-1]}/parity.json`" in text
    assert "| ours | original |" in text
    assert "No CI run is recorded" in text


def test_missing_results_are_reported_missing(project_ws, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    make_pr(project_ws, tmp_path / "pr", empty, empty)
    text = (tmp_path / "pr" / "DESCRIPTION.md").read_text()
    for missing in (
        "No CI run is recorded",
        "No GPU parity run is recorded",
        "No comparison with the original is recorded",
        "No benchmark run is recorded",
        "No GPU run is recorded",
    ):
        assert missing in text, missing
    assert "- [ ] Provide throughput" in text  # nothing recorded: not ticked


def test_upstream_template_of_the_tree_is_used(workspace, tmp_path):
    """A tree with upstream's .github/pull_request_template.md (a checkout) gets
    the description in that template: its sections, comments dropped, checklist
    kept (ticked where a recorded result backs the item)."""
    template = workspace.overlay / ".github" / "pull_request_template.md"
    template.parent.mkdir(parents=True)
    template.write_text(
        "<!-- intro for contributors -->\n\n## Motivation\n\n<!-- why -->\n\n"
        "## Modifications\n\n<!-- what -->\n\n## Accuracy Tests\n\n<!-- numbers -->\n"
        "\n## Checklist\n\n- [ ] Add unit tests for the change.\n"
        "- [ ] Be nice.\n"
    )
    probe = workspace.overlay / "test" / "registered" / "test_probe.py"
    probe.parent.mkdir(parents=True)
    probe.write_text("X = 1\n")
    workspace.commit_inputs("template")
    workspace.tools("apply", check=True)
    make_pr(workspace, tmp_path / "pr", RESULTS / "docs", RESULTS / "ci")
    text = (tmp_path / "pr" / "DESCRIPTION.md").read_text()
    # the list in full, like the default template's above: the third section differs
    headings = re.findall(r"^## (.*)$", text, re.M)
    assert headings == [
        "Motivation",
        "Modifications",
        "Accuracy Tests",
        "How to run",
        "Documentation",
        "Test results",
        "Hardware requirements",
        "Checklist",
    ]
    assert "<!-- why -->" not in text and "intro for contributors" not in text
    assert "- [x] Add unit tests for the change." in text
    assert "- [ ] Be nice." in text
    assert "from upstream template .github/pull_request_template.md" in text


def test_pr_refuses_a_tree_with_unsaved_work(project_ws, tmp_path):
    (project_ws.build / "notes.txt").write_text("unsaved\n")
    proc = make_pr(project_ws, tmp_path / "pr", RESULTS / "docs", RESULTS / "ci", 2)
    assert "not clean" in proc.stderr and "notes.txt" in proc.stderr
    assert not (tmp_path / "pr" / "DESCRIPTION.md").exists()
