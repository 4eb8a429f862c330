"""``make pr``: the upstream pull-request kit, written into ``out/pr/``.

    out/pr/0001-*.patch ...  ``git format-patch qsv/base..qsv/upstream``: the series
                             in order, then the overlay commit (no CPU group)
    out/pr/DESCRIPTION.md    the PR description in upstream's template

Every fact in the description is read from something recorded, never typed here:

- the series and the files touched: git, from the tree;
- the environment variables: the series' code (names, where they are read, defaults
  written at the call) and README.md's tables (default, meaning);
- how to run: the usage text of the example and the test that the series adds;
- test results: the last CI run (``build/ci/last-run.json`` and ``pytest.xml``,
  written by ci/cpu.sh);
- GPU results: the runs of ``docs/gpu-runs.md`` (date, card, commit) and their raw
  JSON in ``docs/gpu-runs/<date>/`` (parity, TP, server, benchmarks), and
  ``docs/performance.md``'s table of ours against the original;
- hardware: the cards, the torch build and the checkpoint size of those runs.

A result that is not recorded is reported as missing.
"""

from __future__ import annotations

import ast
import json
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from tools import ToolError

DESCRIPTION = "DESCRIPTION.md"
TEMPLATE_PATHS = (
    ".github/pull_request_template.md",
    ".github/PULL_REQUEST_TEMPLATE.md",
)
# upstream's template's sections, used when the tree has no template of its own (a
# tree laid out from the wheel has no .github/); the checklist is the same items in
# short (upstream's contribution guide has the details)
FALLBACK_TEMPLATE = """\
## Motivation

## Modifications

## Benchmark & Profiling

## Checklist

- [ ] Format your code according to upstream's pre-commit (`make check` runs the
  same black, isort and codespell).
- [ ] Add unit tests.
- [ ] Update documentation / docstrings / example tutorials as needed.
- [ ] Provide throughput / latency benchmark results and accuracy evaluation results
  as needed.
"""
MOTIVATION = """\
Adds [Quicksviewer](https://arxiv.org/abs/2504.15270), a video LMM built on
Qwen2.5-7B-Instruct and SigLIP-so400m, as a multimodal model of SGLang. Quicksviewer
partitions a video into cubes of varying length ("cubing", from the momentum of
consecutive frame features) and resamples every cube to 64 tokens, so a long video
costs few prompt tokens. Because the cube boundaries depend on the visual encoder's
output, the prompt layout is known only after encoding; the model therefore encodes
in `pad_input_ids` (once per request, before the radix-cache match) and hands the
embeddings over as precomputed embeddings. The goal is the original implementation's
outputs (same prompt ids after cubing, same greedy tokens) served with SGLang's
batching, radix cache and CUDA graphs."""


# upstream's tables of docs/supported_models/text_generation/multimodal_language_models.md
# (upstream main; the release wheels carry no docs/, so these rows cannot be a patch
# of the series: the PR adds them in its checkout)
DOCS_FILE = "docs/supported_models/text_generation/multimodal_language_models.md"
DOCS_ROWS = [
    (
        "Supported models",
        "| **Quicksviewer** (Qwen2.5-7B, Llama-3.1-8B) | ModelScope "
        "`qijithu/Quicksviewer-8B`, converted by `python -m tools convert` | Video "
        "LMM that cuts a video (up to 420 frames at 1 fps) into cubes of varying "
        "length and resamples each cube to 64 tokens, plus a 64-token "
        "thumbnail; also images (anyres tiles). | The converted layout: "
        "`model_type: quicksviewer`, chat templates `quicksviewer` and "
        "`quicksviewer-llama-3` |",
    ),
    (
        "Video Input Support",
        "| **Quicksviewer** | a converted original checkpoint | The processor "
        "samples one frame per second (at most 420; `fps` and `max_frames` per "
        "request), the model encodes it once per video off the scheduler loop and "
        "keeps the result in a visual cache; `return_segments` returns the cubes. |",
    ),
]


def render_docs() -> List[str]:
    lines = [
        f"Rows for upstream's `{DOCS_FILE}` (added in the PR's checkout: the "
        "release wheels this series is built on carry no `docs/`):",
        "",
    ]
    for table, row in DOCS_ROWS:
        lines += [f'- table "{table}":', "", "  " + row, ""]
    return lines[:-1]


@dataclass
class Commit:
    number: int
    sha: str
    subject: str
    files: List[str]


@dataclass
class FileChange:
    path: str
    status: str  # A or M
    added: str
    deleted: str
    commits: List[int] = field(default_factory=list)


@dataclass
class EnvVar:
    name: str
    places: List[str] = field(default_factory=list)  # path:line
    code_default: Optional[str] = None
    readme_default: Optional[str] = None
    what: Optional[str] = None


@dataclass
class GpuRun:
    date: str
    title: str
    commit: Optional[str]
    raw: Optional[Path]


# ------------------------------------------------------------------------ git


def series(repo) -> List[Commit]:
    from tools.git import commit_files, commit_list, subject
    from tools.tree import BASE_TAG, UPSTREAM_BRANCH

    return [
        Commit(number, sha, subject(repo, sha), commit_files(repo, sha))
        for number, sha in enumerate(
            commit_list(repo, f"{BASE_TAG}..{UPSTREAM_BRANCH}"), 1
        )
    ]


def files_touched(repo, commits: List[Commit]) -> List[FileChange]:
    from tools.git import git_out
    from tools.tree import BASE_TAG, UPSTREAM_BRANCH

    rng = f"{BASE_TAG}..{UPSTREAM_BRANCH}"
    status = dict(
        reversed(line.split("\t", 1))
        for line in git_out(
            repo, "diff", "--name-status", "--no-renames", rng
        ).splitlines()
    )
    changes = []
    for line in git_out(repo, "diff", "--numstat", "--no-renames", rng).splitlines():
        added, deleted, path = line.split("\t", 2)
        change = FileChange(path, status[path], added, deleted)
        change.commits = [c.number for c in commits if path in c.files]
        changes.append(change)
    return changes


def cpu_subjects(repo) -> List[str]:
    """Subjects of the CPU group (qsv/upstream..qsv/cpu), which the PR leaves out."""
    from tools.git import commit_list, subject
    from tools.tree import CPU_BRANCH, UPSTREAM_BRANCH

    return [
        subject(repo, c) for c in commit_list(repo, f"{UPSTREAM_BRANCH}..{CPU_BRANCH}")
    ]


def write_series(repo, out: Path) -> List[Path]:
    """``git format-patch qsv/base..qsv/upstream`` into ``out`` (old patches go)."""
    from tools.git import git_out
    from tools.tree import BASE_TAG, UPSTREAM_BRANCH

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.patch"):
        old.unlink()
    written = git_out(
        repo,
        "format-patch",
        "--numbered",
        "--zero-commit",
        "--no-signature",
        "--no-renames",
        "-o",
        str(out),
        f"{BASE_TAG}..{UPSTREAM_BRANCH}",
    )
    return [Path(line) for line in written.splitlines() if line.strip()]


# ------------------------------------------------------ environment variables

ENV_NAME = re.compile(r"^SGLANG_QSV_[A-Z0-9_]+$")
README_ROW = re.compile(r"^\|\s*`([A-Z][A-Z0-9_]+)`\s*\|(.*?)\|(.*)\|\s*$")


def _is_environ_get(func: ast.expr) -> bool:
    """``os.environ.get`` or ``os.getenv``."""
    if isinstance(func, ast.Attribute) and func.attr == "get":
        value = func.value
        return isinstance(value, ast.Attribute) and value.attr == "environ"
    return isinstance(func, ast.Attribute) and func.attr == "getenv"


def env_reads(source: str, path: str, pattern: re.Pattern) -> Dict[str, EnvVar]:
    """Environment variables named in ``source``: every string constant that is a
    whole name matching ``pattern`` (docstrings that mention one do not count),
    with the default of each ``os.environ.get(NAME, default)`` call on it."""
    tree = ast.parse(source, filename=path)
    found: Dict[str, EnvVar] = {}
    constants: Dict[str, str] = {}  # module-level NAME = "SGLANG_QSV_..."
    for node in tree.body:
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
            and pattern.match(node.value.value)
        ):
            constants[node.targets[0].id] = node.value.value
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and pattern.match(node.value)
        ):
            var = found.setdefault(node.value, EnvVar(node.value))
            var.places.append(f"{path}:{node.lineno}")
        if isinstance(node, ast.Call) and _is_environ_get(node.func) and node.args:
            first = node.args[0]
            name = None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                name = first.value
            elif isinstance(first, ast.Name):
                name = constants.get(first.id)
            if name and pattern.match(name) and len(node.args) > 1:
                default = node.args[1]
                if isinstance(default, ast.Constant):
                    var = found.setdefault(name, EnvVar(name))
                    var.code_default = repr(default.value)
    return found


def readme_rows(readme: Path) -> Dict[str, Tuple[str, str]]:
    """``| `NAME` | default | what |`` rows of the README's tables."""
    rows = {}
    if readme.is_file():
        for line in readme.read_text().splitlines():
            match = README_ROW.match(line)
            if match:
                rows[match.group(1)] = (match.group(2).strip(), match.group(3).strip())
    return rows


def environment(repo, changes: List[FileChange], readme: Path) -> List[EnvVar]:
    from tools.git import git_out
    from tools.tree import UPSTREAM_BRANCH

    found: Dict[str, EnvVar] = {}
    for change in changes:
        if not change.path.endswith(".py") or change.path.startswith("test/"):
            continue
        source = git_out(repo, "show", f"{UPSTREAM_BRANCH}:{change.path}", strip=False)
        for name, var in env_reads(source, change.path, ENV_NAME).items():
            known = found.setdefault(name, EnvVar(name))
            known.places += var.places
            known.code_default = known.code_default or var.code_default
    rows = readme_rows(readme)
    for var in found.values():
        if var.name in rows:
            var.readme_default, var.what = rows[var.name]
    return sorted(found.values(), key=lambda v: v.name)


# ------------------------------------------------------------------ CI results


def ci_results(ci_dir: Path) -> Optional[dict]:
    """What the last ``.ci/run`` recorded, or None."""
    record = ci_dir / "last-run.json"
    if not record.is_file():
        return None
    try:
        run = json.loads(record.read_text())
    except ValueError as exc:
        raise ToolError(f"{record}: not JSON ({exc})") from None
    junit = ci_dir / run.get("junit", "pytest.xml")
    run["pytest"] = junit_totals(junit) if junit.is_file() else None
    return run


def junit_totals(path: Path) -> dict:
    """Totals and skip reasons of a pytest JUnit XML report."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ToolError(f"{path}: not a JUnit XML report ({exc})") from None
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0}
    skipped = []
    for suite in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            totals[key] += int(suite.get(key, 0))
        totals["time"] += float(suite.get("time", 0))
        for case in suite.iter("testcase"):
            skip = case.find("skipped")
            if skip is not None:
                name = f"{case.get('classname', '')}::{case.get('name', '')}"
                skipped.append((name, skip.get("message", "")))
    totals["passed"] = (
        totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    )
    totals["skipped_cases"] = skipped
    return totals


# ----------------------------------------------------------------- GPU results

# "## <date>: <title>" or "## <date> (<which>): <title>"
RUN_HEADING = re.compile(r"^## (\d{4}-\d{2}-\d{2})(?: \([^)]*\))?: (.+)$")
RUN_COMMIT = re.compile(r"Code: commit `([0-9a-f]{7,40})`")
# ci/gpu/gates.py's entries name their folder (docs/gpu-runs/<name>/, <name> may be
# <date>-2); older entries use docs/gpu-runs/<date>/
RUN_RAW = re.compile(r"Raw results in `docs/gpu-runs/([^`/]+)/`")


def gpu_runs(docs: Path) -> List[GpuRun]:
    """The runs recorded in docs/gpu-runs.md, newest first."""
    path = docs / "gpu-runs.md"
    if not path.is_file():
        return []
    runs: List[GpuRun] = []
    named = False  # the entry named its folder (its first "Raw results in" line)
    for line in path.read_text().splitlines():
        heading = RUN_HEADING.match(line)
        if heading:
            date, title = heading.groups()
            raw = docs / "gpu-runs" / date
            runs.append(GpuRun(date, title, None, raw if raw.is_dir() else None))
            named = False
        elif runs:
            commit = RUN_COMMIT.search(line)
            if commit and runs[-1].commit is None:
                runs[-1].commit = commit.group(1)
            raw = RUN_RAW.search(line)
            if raw and not named and (docs / "gpu-runs" / raw.group(1)).is_dir():
                runs[-1].raw = docs / "gpu-runs" / raw.group(1)
                named = True
    return sorted(runs, key=lambda r: r.date, reverse=True)


def newest(runs: List[GpuRun], name: str) -> Optional[Tuple[GpuRun, dict]]:
    """The newest run whose raw results hold ``name`` (a JSON file), and its data."""
    for run in runs:
        if run.raw is not None and (run.raw / name).is_file():
            return run, json.loads((run.raw / name).read_text())
    return None


def markdown_tables(text: str) -> List[Tuple[str, List[str], List[List[str]]]]:
    """(heading above, header cells, rows) of every table in ``text``."""
    tables = []
    heading, block = "", []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            block.append([c.strip() for c in line.strip().strip("|").split("|")])
            continue
        if len(block) >= 2:
            tables.append((heading, block[0], block[2:]))
        block = []
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
    return tables


def original_comparison(docs: Path):
    """The first table of docs/performance.md with an "ours" and an "original"
    column (the page is newest first), as (heading, header, rows)."""
    path = docs / "performance.md"
    if not path.is_file():
        return None
    for heading, header, rows in markdown_tables(path.read_text()):
        lowered = [cell.lower() for cell in header]
        if "ours" in lowered and "original" in lowered:
            return heading, header, rows
    return None


# ------------------------------------------------------------------- rendering


def _fmt(value, digits: int = 3) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: List[str], rows: List[List[str]]) -> List[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _run_label(run: GpuRun) -> str:
    return f"{run.date}" + (f", project commit `{run.commit}`" if run.commit else "")


def render_modifications(
    commits: List[Commit],
    changes: List[FileChange],
    env: List[EnvVar],
    base_note: str,
) -> List[str]:
    out = [f"The series, on {base_note}, one concern per commit:", ""]
    for commit in commits:
        out.append(f"{commit.number}. {commit.subject} ({len(commit.files)} file(s))")
    out += ["", "### Files touched", ""]
    rows = [
        [
            f"`{c.path}`",
            {"A": "new", "M": "changed"}.get(c.status, c.status),
            f"+{c.added} -{c.deleted}",
            ", ".join(str(n) for n in c.commits),
        ]
        for c in changes
    ]
    out += _table(["file", "kind", "lines", "commit(s)"], rows)
    added = sum(int(c.added) for c in changes if c.added.isdigit())
    deleted = sum(int(c.deleted) for c in changes if c.deleted.isdigit())
    out += ["", f"{len(changes)} files, +{added} -{deleted} lines."]
    out += ["", "### Environment variables (all optional)", ""]
    if env:
        rows = []
        for var in env:
            default = var.readme_default or (
                f"`{var.code_default}`" if var.code_default else "(see the code)"
            )
            what = var.what or "(not described in the project's README)"
            places = ", ".join(f"`{p}`" for p in var.places)
            rows.append([f"`{var.name}`", default, what, places])
        out += _table(["variable", "default", "what", "read in"], rows)
    else:
        out.append("The series reads no environment variable of its own.")
    return out


def render_accuracy(runs: List[GpuRun]) -> List[str]:
    out = ["### Accuracy: parity with the original implementation", ""]
    found = newest(runs, "parity.json")
    if found is None:
        return out + ["No GPU parity run is recorded (docs/gpu-runs.md, parity.json)."]
    run, parity = found
    out.append(
        f"Recorded GPU run {_run_label(run)}, {run.title} (`docs/gpu-runs/{run.raw.name}/"
        "parity.json`), against the reference implementation of the original "
        "inference path, bf16, same random full-size weights:"
    )
    out.append("")
    rows = [
        ["card", parity.get("device", "?")],
        ["frames of the video", parity.get("frames", "?")],
        [
            "prompt ids after cubing",
            f"{parity.get('prompt_tokens', '?')} tokens, "
            + ("identical" if parity.get("ids_equal") else "DIFFERENT"),
        ],
        ["cube starts (reference)", f"`{parity.get('cube_starts_reference', '?')}`"],
        [
            "greedy tokens",
            f"{len(parity.get('tokens_sglang', []))} tokens, "
            + ("identical" if parity.get("tokens_equal") else "DIFFERENT"),
        ],
    ]
    if "first_token_top20_max_abs_logprob_diff" in parity:
        rows.append(
            [
                "first-token top-20 log-probabilities",
                "max abs difference "
                + _fmt(parity["first_token_top20_max_abs_logprob_diff"]),
            ]
        )
    out += _table(["check", "result"], rows)
    tp = newest(runs, "tp.json")
    if tp is not None:
        run, data = tp
        same = data.get("ids_equal") and data.get("tokens_equal")
        out += [
            "",
            f"Tensor parallelism ({_run_label(run)}, `tp.json`): TP="
            f"{data.get('gpus', '?')} on {data.get('device', '?')} against TP=1: "
            + (
                f"identical prompt ids ({data.get('prompt_tokens', '?')} tokens) and "
                f"identical {len(data.get('tokens_tp1', []))} greedy tokens."
                if same
                else "DIFFERENT outputs."
            ),
        ]
    gates = newest(runs, "gates.json")
    if gates is not None:
        run, data = gates
        counts = data.get("counts", {})
        out += [
            "",
            f"GPU CI gates ({_run_label(run)}, `gates.json`, ci/gpu/gates.py): "
            f"**{data.get('result', '?')}**, {counts.get('pass', 0)} passed, "
            f"{counts.get('FAIL', 0)} failed, {counts.get('not gated', 0)} not gated, "
            f"{counts.get('pending', 0)} pending.",
        ]
    server = newest(runs, "server.json")
    if server is not None:
        run, data = server
        out += [
            "",
            f"HTTP server ({_run_label(run)}, `server.json`): "
            + ("CUDA graphs on, " if data.get("cuda_graph") else "")
            + f"ready in {_fmt(data.get('ready_s', '?'), 1)} s, "
            + ("all checks passed." if data.get("ok") else "a check FAILED."),
        ]
    return out


def render_benchmarks(docs: Path, runs: List[GpuRun]) -> List[str]:
    out = ["### Against the original", ""]
    table = original_comparison(docs)
    if table is None:
        out.append(
            "No comparison with the original is recorded (docs/performance.md has "
            "no table with an 'ours' and an 'original' column)."
        )
    else:
        heading, header, rows = table
        out += [f'From `docs/performance.md`, section "{heading}":', ""]
        out += _table(header, rows)
    out += ["", "### Against the reference implementation", ""]
    bench = newest(runs, "bench.json")
    if bench is None:
        out.append("No benchmark run is recorded (docs/gpu-runs.md, bench.json).")
        return out
    run, data = bench
    ours, ref = data.get("sglang", {}), data.get("reference", {})
    host = data.get("host", {})
    out += [
        f"`docs/gpu-runs/{run.raw.name}/bench.json` ({_run_label(run)}; "
        f"{host.get('device', '?')}, {host.get('dtype', '?')}, torch "
        f"{host.get('torch', '?')}):",
        "",
    ]
    rows = []
    concurrent = ours.get("concurrent_videos", "?")
    for key, label, digits in (
        ("decode_tok_s_batch1", "decode tokens/s per request, batch 1", 1),
        ("decode_tok_s_batch8", "decode tokens/s per request, batch 8", 1),
        ("concurrent_requests_per_s", f"{concurrent} concurrent video requests/s", 3),
    ):
        if key in ours:
            rows.append(
                [label, _fmt(ours[key], digits), _fmt(ref.get(key, "-"), digits)]
            )
    out += _table(["metric", "SGLang", "reference"], rows)
    return out


def render_hardware(runs: List[GpuRun], cpu_group: List[str]) -> List[str]:
    out = []
    devices = []
    for run in runs:
        cards = set()
        if run.raw is not None:
            for path in sorted(run.raw.rglob("*.json")):
                try:
                    data = json.loads(path.read_text())
                except ValueError:
                    continue
                if isinstance(data, dict):
                    device = data.get("device") or data.get("host", {}).get("device")
                    if device:
                        gpus = data.get("gpus")
                        cards.add(f"{gpus} x {device}" if gpus else device)
        if cards:
            devices.append(f"{run.date}: {', '.join(sorted(cards))}")
    if devices:
        out.append(
            "- Recorded GPU runs (docs/gpu-runs.md): " + "; ".join(devices) + "."
        )
    else:
        out.append("- No GPU run is recorded (docs/gpu-runs.md).")
    checkpoint = newest(runs, "checkpoint.json")
    if checkpoint is not None and "bytes" in checkpoint[1]:
        size = checkpoint[1]["bytes"] / 1e9
        out.append(
            f"- Weights: {size:.1f} GB in bf16 (the full-size checkpoint of "
            f"{checkpoint[0].date}, `checkpoint.json`)."
        )
    bench = newest(runs, "bench.json")
    if bench is not None and bench[1].get("host", {}).get("torch"):
        out.append(
            f"- torch of the benchmark run ({bench[0].date}, `bench.json`): "
            f"{bench[1]['host']['torch']}."
        )
    if cpu_group:
        out.append(
            f"- CPU hosts: the project also runs on CPU (its CI), with {len(cpu_group)} "
            "CPU enablement commit(s) that are not part of this PR: "
            + "; ".join(f"{s}" for s in cpu_group)
            + "."
        )
    return out


def render_how_to_run(repo, changes: List[FileChange]) -> List[str]:
    from tools.git import git_out
    from tools.tree import UPSTREAM_BRANCH

    out = []
    examples = [c.path for c in changes if c.path.startswith("examples/")]
    tests = [c.path for c in changes if c.path.startswith("test/")]
    for path in examples:
        source = git_out(repo, "show", f"{UPSTREAM_BRANCH}:{path}", strip=False)
        doc = ast.get_docstring(ast.parse(source)) or ""
        out += [f"Example `{path}`:", "", "```", doc.strip(), "```", ""]
    env_any = re.compile(r"^[A-Z][A-Z0-9_]+$")
    for path in tests:
        if not path.endswith(".py"):
            continue
        source = git_out(repo, "show", f"{UPSTREAM_BRANCH}:{path}", strip=False)
        names = [
            (n, v.code_default)
            for n, v in env_reads(source, path, env_any).items()
            if v.code_default
        ]
        env = " ".join(
            f"{name}=<{'path' if name.endswith('PATH') else 'value'}>"
            for name, _ in names
        )
        out += [
            f"Test `{path}`"
            + (
                " (" + ", ".join(f"`{n}` defaults to {d}" for n, d in names) + ")"
                if names
                else ""
            )
            + ":",
            "",
            "```bash",
            (env + " " if env else "") + f"python3 -m pytest {path} -v",
            "```",
            "",
        ]
    if not out:
        out.append("The series adds no example and no test.")
    return out


def render_tests(ci: Optional[dict], project_head: Optional[str]) -> List[str]:
    if ci is None:
        return [
            "No CI run is recorded (build/ci/last-run.json is missing; `bash .ci/run` "
            "writes it)."
        ]
    commit = ci.get("commit", "unknown")
    out = [
        f"The project's CI (`bash .ci/run`, CPU only) at project commit `{commit[:12]}`"
        + (" with uncommitted changes" if ci.get("dirty") else "")
        + f", {ci.get('started', '?')} to {ci.get('finished', '?')}: "
        + f"**{ci.get('result', '?')}** in {ci.get('total_seconds', '?')} s."
    ]
    if project_head and commit != project_head:
        out.append(
            f"(The project is now at `{project_head[:12]}`; these results are of the "
            "commit above.)"
        )
    out.append("")
    stages = ci.get("stages", [])
    if stages:
        out += _table(
            ["stage", "result", "seconds"],
            [[s.get("name"), s.get("status"), s.get("seconds")] for s in stages],
        )
        out.append("")
    pytest = ci.get("pytest")
    if pytest is None:
        out.append("No pytest report was recorded in that run.")
        return out
    out.append(
        f"pytest: {pytest['passed']} passed, {pytest['failures']} failed, "
        f"{pytest['errors']} errors, {pytest['skipped']} skipped "
        f"({pytest['tests']} tests, {pytest['time']:.0f} s)."
    )
    if pytest["skipped_cases"]:
        out += ["", "Skipped:", ""]
        for name, message in pytest["skipped_cases"]:
            out.append(f"- `{name}`: {message}")
    return out


# -------------------------------------------------------------------- template


def load_template(build: Path) -> Tuple[str, List[Tuple[str, str]]]:
    """(where from, [(heading, body)]) of upstream's PR template."""
    for rel in TEMPLATE_PATHS:
        if (build / rel).is_file():
            return rel, split_sections((build / rel).read_text())
    return "", split_sections(FALLBACK_TEMPLATE)


def split_sections(text: str) -> List[Tuple[str, str]]:
    sections: List[Tuple[str, str]] = [("", "")]
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            sections.append((line[3:].strip(), ""))
        else:
            heading, body = sections[-1]
            sections[-1] = (heading, body + line)
    return sections


def strip_comments(text: str) -> str:
    return re.sub(r"<!--.*?-->\s*", "", text, flags=re.S).strip()


def tick_checklist(body: str, evidence: Dict[str, bool]) -> str:
    """Tick the items of upstream's checklist that a recorded result backs:
    ``evidence`` maps a word of the item (lower case) to whether it is backed."""
    lines = []
    for line in body.splitlines():
        if line.lstrip().startswith("- [ ]") and any(
            backed and word in line.lower() for word, backed in evidence.items()
        ):
            line = line.replace("- [ ]", "- [x]", 1)
        lines.append(line)
    return "\n".join(lines)


def make_description(
    paths,
    docs: Path,
    ci_dir: Path,
    readme: Path,
    project_head: Optional[str] = None,
) -> str:
    from tools import git
    from tools.tree import State

    repo = git.Repo(paths.build)
    state = State.load(paths.build)
    commits = series(repo)
    changes = files_touched(repo, commits)
    env = environment(repo, changes, readme)
    runs = gpu_runs(docs)
    from tools.pin import load_pin

    pin = load_pin(paths.pin, paths.release)
    base_note = f"SGLang {pin.version} (tag `{pin.upstream_tag}`; " + (
        f"its commit `{state.base_key[4:16]}`)"
        if state.base_key.startswith("src:")
        else "the released wheel laid out as `python/sglang/`)"
    )

    fill = {
        "motivation": [MOTIVATION],
        "modifications": render_modifications(commits, changes, env, base_note)
        + [""]
        + render_accuracy(runs),
        "benchmark & profiling": render_benchmarks(docs, runs),
    }
    ci = ci_results(ci_dir)
    checked = bool(
        ci
        and ci.get("commit") == project_head
        and not ci.get("dirty")
        and any(
            s.get("name") == "check" and s.get("status") == "ok"
            for s in ci.get("stages", [])
        )
    )
    evidence = {
        # make check (upstream's black, isort, codespell) passed in CI at this commit
        "format": checked,
        "unit test": any(c.path.startswith("test/") for c in changes),
        "documentation": any(
            c.path.startswith(("docs/", "examples/")) for c in changes
        ),
        "benchmark": newest(runs, "parity.json") is not None
        and original_comparison(docs) is not None,
    }
    extra = [
        ("How to run", render_how_to_run(repo, changes)),
        ("Documentation", render_docs()),
        ("Test results", render_tests(ci, project_head)),
        ("Hardware requirements", render_hardware(runs, cpu_subjects(repo))),
    ]
    source, sections = load_template(paths.build)
    out = [
        "<!-- Generated by `make pr` (tools/pr.py) from "
        f"{'upstream template ' + source if source else 'upstream template sections'}"
        f", qsv/upstream {state.upstream[:12]}; regenerate, do not edit. -->",
        "",
    ]
    done_extra = False
    for heading, body in sections:
        if not heading:
            continue
        key = heading.lower()
        if key == "checklist" and not done_extra:
            for title, lines in extra:
                out += [f"## {title}", "", *lines, ""]
            done_extra = True
        out += [f"## {heading}", ""]
        if key in fill:
            out += [*fill[key], ""]
        else:
            kept = strip_comments(body)
            if key == "checklist":
                kept = tick_checklist(kept, evidence)
            if kept:
                out += [kept, ""]
    if not done_extra:
        for title, lines in extra:
            out += [f"## {title}", "", *lines, ""]
    return "\n".join(out).rstrip() + "\n"


def make_pr(
    paths,
    out: Path,
    docs: Path,
    ci_dir: Path,
    readme: Path,
) -> None:
    from tools import PROJECT_ROOT, git
    from tools.check import tree_problems

    problems = tree_problems(paths)
    if problems:
        raise ToolError(
            "the tree is not what would be submitted:\n" + "\n".join(problems)
        )
    repo = git.Repo(paths.build)
    patches = write_series(repo, out)
    head = git.head_commit(PROJECT_ROOT)
    text = make_description(paths, docs, ci_dir, readme, project_head=head)
    (out / DESCRIPTION).write_text(text)
    print(f"pr: {len(patches)} patch(es) and {DESCRIPTION} in {out}")
    for patch in patches:
        print(f"  {patch.name}")
    print(
        "pr: apply them with `git am --keep-non-patch` (plain git am drops the "
        "[Model]-style prefix of the subjects)"
    )
