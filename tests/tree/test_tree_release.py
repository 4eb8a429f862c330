"""Two pinned releases: per-release variants of the series, the 0.5.23 tree, export
round trips of both, and porting a patch (make port).

Trees of 0.5.23 are copies of one pristine 0.5.23 tree built once per session (its
base is the pinned 0.5.23 wheel); the inputs are temp copies, as in the other tree
tests.
"""

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers.project import PROJECT_ROOT, Workspace, build_pristine, git
from tests.helpers.tree import commit_in_tree, subjects
from tools import ToolError
from tools.tree import Paths, read_manifest, release_inputs
from tools.tree.export import _subject_of_patch

RELEASE = "0.5.23"
IDEFICS2 = "python/sglang/srt/models/idefics2.py"
CONFIGS_INIT = "python/sglang/srt/configs/__init__.py"
REGISTER = "0002-Config-Register-QuicksviewerConfig.patch"
FPS_PATCH = "0008-OpenAI-video_url-parts-carry-fps-and-max_frames-for-.patch"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def patch_id(path: Path) -> str:
    proc = subprocess.run(
        ["git", "patch-id", "--stable"],
        input=path.read_bytes(),
        capture_output=True,
        check=True,
    )
    return proc.stdout.split()[0].decode()


def drop_rejects(tree: Path) -> None:
    git(tree, "checkout", "--", ".")
    for rej in tree.rglob("*.rej"):
        rej.unlink()


# ------------------------------------------------- variant resolution (no git)


def write_series(directory: Path, names, body="x"):
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text(f"{body} {name}\n")
    (directory / "series").write_text("".join(f"{n}\n" for n in names))


def manifest_text(**entries):
    """[kind."key"] tables: key=(kind, ported_from, why)."""
    out = []
    for key, (kind, ported_from, why) in entries.items():
        out.append(f'[{kind}."{key}"]\nported_from = "{ported_from}"\nwhy = "{why}"\n')
    return "\n".join(out)


@pytest.fixture
def inputs(tmp_path):
    patches = tmp_path / "patches"
    write_series(patches, ["0001-a.patch", "0002-b.patch", "0003-c.patch"])
    write_series(patches / "cpu", ["0001-x.patch", "0002-y.patch"])
    variants = patches / "9.9"
    (variants / "cpu").mkdir(parents=True)
    (variants / "0002-b.patch").write_text("b, ported\n")
    (variants / "cpu" / "0001-x.patch").write_text("x, ported\n")
    (variants / "variants.toml").write_text(
        manifest_text(
            **{
                "0002-b.patch": ("variant", sha256(patches / "0002-b.patch"), "ctx"),
                "0003-c.patch": ("skip", sha256(patches / "0003-c.patch"), "in it"),
                "cpu/0001-x.patch": (
                    "variant",
                    sha256(patches / "cpu" / "0001-x.patch"),
                    "moved",
                ),
            }
        )
    )
    return Paths(patches=patches, release="9.9")


def test_a_release_applies_its_variants_and_skips_in_series_order(inputs):
    release = release_inputs(inputs)
    applied = [
        (e.key, e.path and e.path.relative_to(inputs.patches).as_posix())
        for e in release.series + release.cpu
    ]
    assert applied == [
        ("0001-a.patch", "0001-a.patch"),
        ("0002-b.patch", "9.9/0002-b.patch"),
        ("0003-c.patch", None),
        ("cpu/0001-x.patch", "9.9/cpu/0001-x.patch"),
        ("cpu/0002-y.patch", "cpu/0002-y.patch"),
    ]
    assert [e.variant for e in release.series] == [False, True, False]
    assert release.stale() == [] and release.problems() == []
    # the default release (no release) applies patches/ as it is
    default = release_inputs(Paths(patches=inputs.patches))
    assert all(e.path == e.default for e in default.series + default.cpu)


def test_a_changed_default_patch_makes_its_port_stale(inputs):
    (inputs.patches / "0003-c.patch").write_text("c, changed upstream of the port\n")
    (inputs.patches / "cpu" / "0001-x.patch").write_text("x, changed\n")
    release = release_inputs(inputs)
    assert release.stale() == ["0003-c.patch", "cpu/0001-x.patch"]
    problems = "\n".join(release.problems())
    assert "patches/0003-c.patch changed since its skip" in problems
    assert "make port PIN=<release> PATCH=cpu/0001-x.patch" in problems


def test_a_port_without_a_reason_is_reported(inputs):
    manifest = inputs.variants / "variants.toml"
    manifest.write_text(manifest.read_text().replace('why = "ctx"', 'why = ""'))
    assert any("has no why" in p for p in release_inputs(inputs).problems())


@pytest.mark.parametrize(
    "breakage, message",
    [
        ("unlisted_file", "is not listed as a variant"),
        ("unknown_entry_file", "is no entry of patches/series"),
        ("missing_file", "has no file"),
        ("unknown_key", "is no entry of the series"),
        ("both", "is both a variant and a skip"),
    ],
)
def test_inconsistent_variants_are_refused(inputs, breakage, message):
    variants = inputs.variants
    manifest = variants / "variants.toml"
    if breakage == "unlisted_file":
        (variants / "0001-a.patch").write_text("a, ported but not listed\n")
    elif breakage == "unknown_entry_file":
        (variants / "0009-new.patch").write_text("not in the series\n")
    elif breakage == "missing_file":
        (variants / "0002-b.patch").unlink()
    elif breakage == "unknown_key":
        manifest.write_text(
            manifest.read_text() + manifest_text(**{"0009-z.patch": ("skip", "0", "")})
        )
    else:
        manifest.write_text(
            manifest.read_text() + manifest_text(**{"0002-b.patch": ("skip", "0", "")})
        )
    with pytest.raises(ToolError, match=message):
        release_inputs(inputs)


def test_the_projects_variants_are_ported_from_the_current_series():
    """What make verify PIN=0.5.23 requires of patches/0.5.23/."""
    release = release_inputs(Paths(release=RELEASE))
    assert release.problems() == []
    variants = {e.key for e in release.series + release.cpu if e.variant}
    skips = {e.key for e in release.series + release.cpu if e.path is None}
    assert REGISTER in variants and FPS_PATCH in skips
    # every variant really differs from the patch it replaces
    for entry in release.series + release.cpu:
        if entry.variant:
            assert entry.path.read_bytes() != entry.default.read_bytes(), entry.key


# --------------------------------------------------------- the 0.5.23 tree


@pytest.fixture(scope="session")
def pristine_0523(tmp_path_factory):
    """A pristine 0.5.23 tree (no patches, no overlay), built once per session."""
    root = tmp_path_factory.mktemp("pristine-0523")
    return build_pristine(root, "--release", RELEASE)


@pytest.fixture
def ws23(tmp_path, pristine_0523):
    """A workspace (copies of pin.toml, the project's patches/ and overlay/) whose
    build dir is a copy of the pristine 0.5.23 tree; ``tools`` passes --release."""
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    shutil.copy(PROJECT_ROOT / "pin.toml", ws.pin)
    shutil.copytree(PROJECT_ROOT / "patches", ws.patches)
    shutil.copytree(PROJECT_ROOT / "overlay", ws.overlay)
    ws.start(pristine_0523[0])
    plain = ws.tools
    ws.tools = lambda command, *extra, **kw: plain(
        command, "--release", RELEASE, *extra, **kw
    )
    yield ws
    shutil.rmtree(ws.build, ignore_errors=True)  # 160 MB each: keep /tmp small


def assert_inputs_unchanged(ws):
    git(ws.root, "diff", "--exit-code")
    assert git(ws.root, "status", "--porcelain") == "", "export left new files"


def test_the_0_5_23_tree_is_built_from_its_wheel_and_variants(ws23, pristine_0523):
    assert "laid out from sglang-0.5.23-cp311" in pristine_0523[1].stdout
    ws23.tools("apply", check=True)
    tree = ws23.build
    assert "sglang-0.5.23-cp311" in git(tree, "log", "-1", "--format=%B", "qsv/base")
    release = release_inputs(Paths(patches=ws23.patches, release=RELEASE))
    # the same series minus the skips, same subjects, in order; then the overlay
    expected = [
        _subject_of_patch(e.default.read_text())
        for e in release.series
        if e.path is not None
    ]
    assert 0 < len(expected) < len(release.series)
    assert subjects(tree, "qsv/base..qsv/upstream") == expected + [
        "Add the Quicksviewer model files"
    ]
    # the variant's change is in the tree: the replicated MLP of 0.5.23's layers
    assert (
        'parallel_group = "replicated" if use_data_parallel'
        in (tree / IDEFICS2).read_text()
    )
    # a skipped patch is not: 0.5.23's own VideoData forwarding
    assert (
        "sampling or None"
        not in (tree / "python/sglang/srt/parser/conversation.py").read_text()
    )
    assert len(subjects(tree, "qsv/upstream..qsv/cpu")) == sum(
        e.path is not None for e in release.cpu
    )


def test_round_trip_of_the_project_inputs_on_0_5_23_is_clean(ws23):
    ws23.tools("apply", check=True)
    proc = ws23.tools("export", check=True)
    assert "patches/ and patches/0.5.23/ as they are" in proc.stdout
    assert_inputs_unchanged(ws23)
    # an overlay edit made in the 0.5.23 tree goes to the shared overlay/
    model = ws23.build / "python/sglang/srt/models/quicksviewer.py"
    model.write_text(model.read_text() + "# edited on 0.5.23\n")
    commit_in_tree(ws23.build, "Edit the model on 0.5.23")
    ws23.tools("export", check=True)
    assert (
        (ws23.overlay / "python/sglang/srt/models/quicksviewer.py")
        .read_text()
        .endswith("# edited on 0.5.23\n")
    )
    assert git(ws23.root, "status", "--porcelain", "patches") == ""


def test_a_change_to_sglang_files_in_the_0_5_23_tree_is_refused(ws23):
    ws23.tools("apply", check=True)
    path = ws23.build / CONFIGS_INIT
    path.write_text(path.read_text() + "# local\n")
    commit_in_tree(ws23.build, "[Config] a change made on 0.5.23")
    proc = ws23.tools("export", check=2)
    assert "starts as a patch on the default release" in proc.stderr
    assert "a change made on 0.5.23" in proc.stderr
    assert_inputs_unchanged(ws23)


# ----------------------------------------------------------------- porting


def only_register(ws):
    """The series is the project's 0002 (which does not apply to 0.5.23 as it is),
    with no variants yet; no CPU group and no overlay (fast trees)."""
    shutil.rmtree(ws.patches / RELEASE)
    shutil.rmtree(ws.patches / "cpu")
    for patch in ws.patches.glob("*.patch"):
        if patch.name != REGISTER:
            patch.unlink()
    (ws.patches / "series").write_text(REGISTER + "\n")
    shutil.rmtree(ws.overlay)
    ws.overlay.mkdir()
    ws.commit_inputs("only the config registry patch")


def test_porting_a_patch_that_does_not_apply(ws23):
    only_register(ws23)
    proc = ws23.tools("apply", check=2)
    assert f"make port PIN={RELEASE} PATCH={REGISTER}" in proc.stderr

    proc = ws23.tools("apply", "--port", REGISTER, check=True)
    assert "does not apply to SGLang 0.5.23 as it is" in proc.stdout
    assert f"{CONFIGS_INIT}.rej" in proc.stdout
    tree = ws23.build
    # resolve: the project's own 0.5.23 variant is the resolution
    drop_rejects(tree)
    variant = PROJECT_ROOT / "patches" / RELEASE / REGISTER
    subprocess.run(["git", "apply", str(variant)], cwd=tree, check=True)
    git(tree, "add", "-A")
    git(tree, "-c", "user.name=t", "-c", "user.email=t@t", "am", "--continue")

    # make apply refuses the port until it is exported
    assert "commit(s) not made by the tools" in ws23.tools("apply", check=2).stderr
    proc = ws23.tools("export", check=True)
    assert "say why in" in proc.stdout
    written = ws23.patches / RELEASE / REGISTER
    assert written.is_file()
    # the written variant makes the same change as the project's
    assert patch_id(written) == patch_id(variant)
    manifest = read_manifest(ws23.patches / RELEASE / "variants.toml")
    assert manifest == {
        REGISTER: {
            "kind": "variant",
            "ported_from": sha256(ws23.patches / REGISTER),
            "why": "",
        }
    }
    problems = release_inputs(Paths(patches=ws23.patches, release=RELEASE)).problems()
    assert problems and "has no why" in problems[0]

    # the next apply uses it and completes; the default patch is untouched
    ws23.tools("apply", check=True)
    assert "QuicksviewerConfig" in (tree / CONFIGS_INIT).read_text()
    assert git(ws23.root, "diff", "--name-only", "--", f"patches/{REGISTER}") == ""
    # and the port round-trips
    ws23.commit_inputs("ported")
    ws23.tools("export", check=True)
    assert_inputs_unchanged(ws23)


def test_a_port_that_drops_the_patch_is_a_skip(ws23):
    only_register(ws23)
    ws23.tools("apply", "--port", REGISTER, check=True)
    tree = ws23.build
    drop_rejects(tree)
    git(tree, "am", "--skip")
    ws23.tools("export", check=True)
    assert not (ws23.patches / RELEASE / REGISTER).exists()
    manifest = read_manifest(ws23.patches / RELEASE / "variants.toml")
    assert manifest[REGISTER]["kind"] == "skip"
    proc = ws23.tools("apply", check=True)
    assert f"skips {REGISTER}" in proc.stdout
    assert subjects(tree, "qsv/base..qsv/upstream") == []


def test_a_port_equal_to_the_default_patch_needs_no_variant(ws23):
    """A patch that applies as it is: the port commit is the default patch, so
    export writes no variant (and removes a stale one)."""
    only_register(ws23)
    default = ws23.patches / REGISTER
    # a default patch that applies to 0.5.23: the project's variant, as the series
    shutil.copy(PROJECT_ROOT / "patches" / RELEASE / REGISTER, default)
    # and a leftover variant of an older port
    (ws23.patches / RELEASE).mkdir()
    shutil.copy(PROJECT_ROOT / "patches" / REGISTER, ws23.patches / RELEASE / REGISTER)
    (ws23.patches / RELEASE / "variants.toml").write_text(
        manifest_text(**{REGISTER: ("variant", "0" * 64, "old context")})
    )
    ws23.commit_inputs("the default applies now")
    proc = ws23.tools("apply", "--port", REGISTER, check=True)
    assert "WARNING" in proc.stdout and "changed since its variant" in proc.stdout
    # the port starts from the (old) variant, which no longer applies: take the
    # default's change instead
    tree = ws23.build
    drop_rejects(tree)
    git(tree, "am", "--abort")
    git(tree, "am", "--keep-non-patch", str(default))
    ws23.tools("export", check=True)
    assert not (ws23.patches / RELEASE).exists(), "no variant, no manifest"
    ws23.tools("apply", check=True)
    assert "QuicksviewerConfig" in (tree / CONFIGS_INIT).read_text()


def test_a_port_keeps_the_subject(ws23):
    # a port's first steps, as in the tests above: each test reads as one whole port
    only_register(ws23)
    ws23.tools("apply", "--port", REGISTER, check=True)
    tree = ws23.build
    drop_rejects(tree)
    git(tree, "am", "--abort")
    path = tree / CONFIGS_INIT
    path.write_text(path.read_text() + "# something else\n")
    commit_in_tree(tree, "Another subject")
    proc = ws23.tools("export", check=2)
    assert "must keep its subject '[Config] Register QuicksviewerConfig'" in proc.stderr


# ------------------------------------------------------ pins and the Makefile


def test_an_unpinned_release_is_refused(workspace):
    proc = workspace.tools("apply", "--release", "0.5.99", check=2)
    assert "SGLang 0.5.99 is not pinned" in proc.stderr and "0.5.17, 0.5.23" in (
        proc.stderr
    )


def test_the_default_build_dir_follows_the_release():
    from tools.cli import _paths, build_parser

    default = _paths(build_parser().parse_args(["check"]))
    assert default.build == PROJECT_ROOT / "build" / "sglang"
    assert default.release is None
    named = _paths(build_parser().parse_args(["check", "--release", "0.5.17"]))
    assert named == default
    other = _paths(build_parser().parse_args(["check", "--release", RELEASE]))
    assert other.build == PROJECT_ROOT / "build" / f"sglang-{RELEASE}"
    assert other.release == RELEASE
    assert other.variants == PROJECT_ROOT / "patches" / RELEASE


def make_n(*args):
    # without the variables of a make that runs these tests (make test TESTS=...
    # exports TESTS to them)
    inherited = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PIN", "VENV"}
    inherited |= {"BUILD", "REQUIREMENTS", "TESTS", "TEST_SELECT", "PYTEST_ARGS"}
    env = {k: v for k, v in os.environ.items() if k not in inherited | {"JUNIT"}}
    proc = subprocess.run(
        ["make", "-n", *args],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("pin", ["", "0.5.17"])
def test_make_without_pin_or_with_the_default_is_the_default_release(pin):
    args = [f"PIN={pin}"] if pin else []
    out = make_n("test", *args)
    assert "--requirements tools/requirements-cpu.txt" in out
    assert "-m tools apply --build-dir build/sglang " in out
    assert "--link-venv .venv " in out
    assert ".venv/bin/python -m pytest tests " in out
    assert " -k " not in out


def test_make_pin_picks_the_release_venv_tree_and_model_tests():
    out = make_n("test", f"PIN={RELEASE}")
    requirements = f"tools/requirements-cpu-{RELEASE}.txt"
    assert f"--venv .venv-{RELEASE} --requirements {requirements}" in out
    assert (PROJECT_ROOT / requirements).is_file()
    assert (
        f"-m tools apply --build-dir build/sglang-{RELEASE} --release {RELEASE} "
        f"--link-venv .venv-{RELEASE}" in out
    )
    pytest_line = next(line for line in out.splitlines() if " -m pytest " in line)
    assert pytest_line.startswith(f".venv-{RELEASE}/bin/python -m pytest tests/")
    for name in ("model_config", "engine_smoke", "model_parity", "model_server"):
        assert f"tests/model/test_{name}.py" in pytest_line
    assert "tests/model/test_model_segments.py" in pytest_line
    # the parity in fp32 only there (CI's time budget)
    assert '-k "not bf16"' in pytest_line
    assert " tests " not in pytest_line + " "
    port = make_n("port", f"PIN={RELEASE}", f"PATCH={REGISTER}")
    assert f"--release {RELEASE}" in port and f"--port {REGISTER}" in port


def test_each_release_requirements_pin_every_package_exactly():
    from tools.pin import pinned_releases

    default, releases = pinned_releases(PROJECT_ROOT / "pin.toml")
    for release in releases:
        suffix = "" if release == default else f"-{release}"
        lines = (PROJECT_ROOT / "tools" / f"requirements-cpu{suffix}.txt").read_text()
        packages = [
            line for line in lines.splitlines() if line and not line.startswith("#")
        ]
        assert packages and all("==" in line for line in packages), release
    reqs = (PROJECT_ROOT / "tools" / f"requirements-cpu-{RELEASE}.txt").read_text()
    for exact in ("torch==2.14.1", "transformers==5.19.0", "tokenizers==0.23.2"):
        assert exact in reqs.splitlines()
