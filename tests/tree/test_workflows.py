"""The GitHub workflows: they lint clean (tools.workflows, part of make verify),
they are thin wrappers over the project's scripts, and the linter catches the
mistakes it claims to catch."""

import textwrap

import pytest
import yaml

from tests.helpers.project import PROJECT_ROOT
from tools.workflows import lint_workflow, lint_workflows

WORKFLOWS = PROJECT_ROOT / ".github" / "workflows"


def load(name):
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True)  # YAML 1.1 reads `on` as true
    return doc


def run_steps(doc):
    for job, spec in doc["jobs"].items():
        for step in spec["steps"]:
            if "run" in step:
                yield job, step


def uses(spec, action):
    return [s for s in spec["steps"] if s.get("uses", "").startswith(action + "@")]


def test_the_project_workflows_lint_clean():
    files, findings = lint_workflows()
    assert {p.name for p in files} == {"cpu.yml", "gpu.yml"}
    assert findings == []


def test_cpu_workflow_runs_the_projects_ci_entry_point():
    doc = load("cpu.yml")
    assert "push" in doc["on"]
    (command,) = [step["run"] for _, step in run_steps(doc)]
    assert command == "bash .ci/run"


def test_gpu_workflow_builds_on_cpu_and_runs_the_gated_stages_on_a_gpu_runner():
    doc = load("gpu.yml")
    assert {"push", "workflow_dispatch"} <= set(doc["on"])
    assert doc["on"]["workflow_dispatch"]["inputs"]["stages"]["default"] == "ci"
    build, gpu = doc["jobs"]["build"], doc["jobs"]["gpu"]
    assert "self-hosted" in gpu["runs-on"] and "gpu" in gpu["runs-on"]
    assert gpu["needs"] == "build"
    assert [s["run"] for s in build["steps"] if "run" in s] == ["make gpu-inputs"]
    (upload,) = uses(build, "actions/upload-artifact")
    paths = upload["with"]["path"].split()
    assert paths == ["dist/qsv-wheelhouse-cp312-sm90.tar.xz", "gpu_carry/qwen.tiktoken"]
    (download,) = uses(gpu, "actions/download-artifact")
    assert download["with"]["name"] == upload["with"]["name"]
    commands = [s["run"] for s in gpu["steps"] if "run" in s]
    assert commands[0] == "bash ci/gpu/run.sh $STAGES"
    (results,) = uses(gpu, "actions/upload-artifact")
    assert results["if"] == "always()"
    assert results["with"]["path"] == gpu["steps"][2]["env"]["OUT"]


def test_every_run_step_is_one_line_calling_the_projects_scripts():
    for name in ("cpu.yml", "gpu.yml"):
        for job, step in run_steps(load(name)):
            command = step["run"].strip()
            assert "\n" not in command, (name, job, command)
            first = command.split()[0]
            assert first in ("make", "bash", "cat"), (name, job, command)
            if first == "bash":
                assert command.split()[1] in (".ci/run", "ci/gpu/run.sh")


BROKEN = {
    "typo in a job key": (
        """
        jobs:
          a:
            run-on: ubuntu-latest
            steps:
              - run: make verify
        """,
        ["jobs.a: unknown key 'run-on'", "jobs.a: no runs-on"],
    ),
    "a script that does not exist": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: bash ci/gpu/nothing.sh
        """,
        ["bash ci/gpu/nothing.sh: no such file in the project"],
    ),
    "a make target that does not exist": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: make gpu-everything V=1
        """,
        ["make gpu-everything: no such target in the Makefile"],
    ),
    "needs an unknown job": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            needs: biuld
            steps:
              - run: make verify
        """,
        ["jobs.a: needs 'biuld', which is not a job of this workflow"],
    ),
    "a step with run and uses": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout@v4
                run: make verify
        """,
        ["needs exactly one of 'run' and 'uses'"],
    ),
    "an unpinned action": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/checkout
        """,
        ["uses 'actions/checkout' is not pinned to a ref"],
    ),
    "an artifact nobody uploads": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with:
                  name: gpu-inputs
        """,
        ["downloads artifact 'gpu-inputs', which no job uploads"],
    ),
    "an artifact from a job not needed": (
        """
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/upload-artifact@v4
                with:
                  name: x
                  path: dist
          b:
            runs-on: ubuntu-latest
            steps:
              - uses: actions/download-artifact@v4
                with:
                  name: x
        """,
        ["artifact 'x' comes from job 'a', which this job does not need"],
    ),
    "an undeclared input and an unknown context": (
        """
        on:
          workflow_dispatch:
            inputs:
              stages:
                default: ci
        jobs:
          a:
            runs-on: ubuntu-latest
            steps:
              - run: bash ci/gpu/run.sh ${{ inputs.stage }} ${{ input.stages }}
        """,
        [
            "inputs.stage is not a workflow_dispatch input",
            "unknown context 'input'",
        ],
    ),
    "broken YAML": (
        """
        jobs:
          a:
            runs-on: [ubuntu-latest
        """,
        ["YAML error"],
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_linter_catches(tmp_path, case):
    body, expected = BROKEN[case]
    text = textwrap.dedent(body)
    if "\non:" not in "\n" + text:
        text = "name: t\non: push\n" + text
    path = tmp_path / "t.yml"
    path.write_text(text)
    findings = lint_workflow(path)
    for message in expected:
        assert any(message in f for f in findings), (message, findings)
    assert all(f.startswith("t.yml") for f in findings)


def test_the_linter_accepts_expressions_with_functions_and_strings(tmp_path):
    path = tmp_path / "ok.yml"
    # a whole workflow, read as it is: its header repeats the case above on purpose
    path.write_text(
        textwrap.dedent(
            """
            name: ok
            on:
              workflow_dispatch:
                inputs:
                  stages:
                    default: ci
            jobs:
              a:
                runs-on: ubuntu-latest
                steps:
                  - if: ${{ always() && contains(github.ref, 'main') }}
                    env:
                      STAGES: ${{ inputs.stages || 'ci' }}
                      OUT: ${{ runner.temp }}/out
                    run: bash ci/gpu/run.sh $STAGES
            """
        )
    )
    assert lint_workflow(path) == []
