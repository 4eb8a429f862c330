"""``python -m tools``: the project's command line (the Makefile targets call it).

Commands:
  setup       create or refresh .venv from tools/requirements-cpu.txt (standard
              library only)
  pins        re-resolve tools/requirements-cpu.in into the exact pins of
              tools/requirements-cpu.txt (review the diff, then make setup)
  fetch       download the pinned wheel into the cache and check its sha256
  apply       build the patched SGLang tree (build/sglang): base + series + overlay + CPU;
              --port ENTRY stops at one entry for porting it to a release (make port)
  export      write patches/, patches/cpu/ and overlay/ back from the tree
  verify      check the series on a fresh pinned tree: applies, compiles, formatted,
              guards; and that the GitHub workflows lint clean
  check       the pre-submit gate on the tree itself: clean, compiles, formatted,
              spelled, guards
  pr          write the upstream PR kit into out/pr/: the series as mail + DESCRIPTION.md
  guard       run the implicit-string-concatenation guard on given Python files
  workflows   lint the GitHub workflows alone
  wheel       the patched SGLang wheels (dist/, docs/gpu.md section 1)
  wheelhouse  the offline GPU bundle: build, check, lock (docs/gpu.md section 2)
  convert     convert an original Quicksviewer checkpoint for SGLang
  tiny        write a seeded tiny (or full-size random) original-format checkpoint
  tokenizer   write the Qwen2.5 / Quicksviewer tokenizer
  demo        serve a tiny Quicksviewer on CPU and ask it about a generated video

The tree commands take --release <version> (make PIN=<version>): a pinned release of
pin.toml other than the default one, whose tree is build/sglang-<version> and whose
series are patches/ with the variants of patches/<version>/ (docs/design.md, "Two
releases").

Every failure the tools foresee is a ToolError: printed as ``error: ...`` without a
traceback, exit status 2. Commands import what they need only when they run, so
``setup`` works before any third-party package is installed.
"""

import argparse
import os
import shutil
import sys
from pathlib import Path

from tools import PROJECT_ROOT, ToolError

# the inputs and outputs every tree command takes: option -> (default under the
# project root, help)
PATH_OPTIONS = {
    "--pin": ("pin.toml", "pin file"),
    "--patches-dir": (
        "patches",
        "the series (series + *.patch; CPU group in its cpu/ subdirectory)",
    ),
    "--overlay-dir": (
        "overlay",
        "files copied into the tree at the same relative paths",
    ),
    "--build-dir": (
        None,
        "the patched tree (a git repository; default: build/sglang, "
        "build/sglang-<release> for a release other than the default)",
    ),
    "--cache-dir": ("build/cache", "hash-checked downloads"),
}


def _add_paths(parser: argparse.ArgumentParser, options: dict) -> None:
    for flag, (default, help) in options.items():
        default = None if default is None else PROJECT_ROOT / default
        parser.add_argument(flag, type=Path, default=default, help=help)


def _add_path_options(parser: argparse.ArgumentParser) -> None:
    _add_paths(parser, PATH_OPTIONS)
    parser.add_argument(
        "--release",
        default=None,
        help="the pinned SGLang release (make PIN=...; default: pin.toml's default); "
        "its patches are patches/ with the variants of patches/<release>/",
    )


def _add_src_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--sglang-src",
        type=Path,
        default=os.environ.get("SGLANG_SRC") or None,
        help="build the base from this git checkout at the pinned tag instead of "
        "the wheel (default: $SGLANG_SRC)",
    )


def _paths(args):
    from tools.pin import load_pin, release_build_dir
    from tools.tree import Paths

    pin = load_pin(args.pin.resolve(), args.release)
    build = args.build_dir or release_build_dir(pin, PROJECT_ROOT / "build")
    return Paths(
        pin=args.pin.resolve(),
        patches=args.patches_dir.resolve(),
        overlay=args.overlay_dir.resolve(),
        build=build.resolve(),
        cache=args.cache_dir.resolve(),
        release=None if pin.is_default else pin.version,
    )


# ------------------------------------------------------------------ commands
# Each takes the parsed arguments; a ToolError (or a subclass) is the failure.


def _pick(args, names) -> dict:
    """The options ``names`` as keyword arguments (their dests are the names)."""
    return {name: getattr(args, name) for name in names}


def _setup(args):
    from tools.venv import setup

    setup(args.venv, args.requirements)


def _pins(args):
    from tools.venv import update_pins

    update_pins(args.requirements_in, args.requirements)


def _fetch(args):
    from tools.pin import fetch_wheel, load_pin

    pin = load_pin(args.pin, args.release)
    print(fetch_wheel(pin, args.cache_dir, tag=args.wheel))


def _apply(args):
    from tools.tree import apply

    apply(
        _paths(args),
        force=args.force,
        src=args.sglang_src,
        link_venv=args.link_venv,
        port=args.port,
    )


def _export(args):
    from tools.tree import export

    export(_paths(args), to_cpu=args.to_cpu)


def _verify(args):
    from tools.verify import verify

    verify(_paths(args), src=args.sglang_src)


def _check(args):
    from tools.check import check

    check(_paths(args))


def _pr(args):
    from tools.pr import make_pr

    # like _apply only in shape: each command forwards its own options
    make_pr(
        _paths(args),
        out=args.out,
        docs=args.docs_dir,
        ci_dir=args.ci_dir,
        readme=args.readme,
    )


def _guard(args):
    from tools.verify import check_files

    check_files(args.files)


def _workflows(args):
    from tools.workflows import WORKFLOWS, lint_workflows

    files, findings = lint_workflows(args.directory or WORKFLOWS)
    for finding in findings:
        print(finding)
    print(f"workflows: {len(files)} file(s), {len(findings)} finding(s)")
    if findings or not files:
        raise ToolError("the workflows do not lint clean")


def _wheel(args):
    from tools.wheel import build_wheels

    options = ("tags", "out_dir", "with_cpu_group", "local", "allow_stale")
    build_wheels(_paths(args), **_pick(args, options))


def _wheelhouse(args):
    from tools.gpu_bundle.bundle import MiB, build_bundle, check_bundle, default_bundle
    from tools.gpu_bundle.lock import load_lock, update_lock

    if args.action == "lock":
        changed = update_lock(load_lock(args.lock_path), args.cache_dir)
        print("\n".join(changed) if changed else "wheelhouse: the lock is up to date")
    elif args.action == "check":
        lock = load_lock(args.lock_path)
        bundle = args.bundle or default_bundle(args.sm or lock.default_sm)
        problems = check_bundle(bundle, lock, args.max_mib)
        if problems:
            raise ToolError(f"{bundle}:\n  " + "\n  ".join(problems))
        print(f"wheelhouse: {bundle} ok ({bundle.stat().st_size / MiB:.2f} MiB)")
    else:
        paths = _paths(args)
        if paths.release is not None:
            # its lock pins the GPU host's packages, which are the default release's
            raise ToolError(
                f"the GPU bundle is built from the default release only, not SGLang "
                f"{paths.release} (make wheelhouse without PIN=)"
            )
        options = ("sm", "out", "lock_path", "sglang_wheel", "xz_preset", "max_mib")
        options += ("allow_stale", "force")
        build_bundle(paths, **_pick(args, options))


def _convert(args):
    from tools.checkpoints.convert import convert_checkpoint

    result = convert_checkpoint(
        args.src, args.dst, args.vision_tower, model_base=args.model_base
    )
    print(
        f"converted {args.src} -> {result.dst} "
        f"(vision config from {result.vision_source})"
    )


def _tiny(args):
    from tools.checkpoints.tiny import make_tiny_checkpoint

    make_tiny_checkpoint(
        args.out,
        args.seed,
        args.dtype,
        tokenizer_cache_dir=args.cache_dir,
        shape=args.shape,
        device=args.device,
        variant=args.variant,
        tokenizer=args.tokenizer,
    )
    print(
        f"wrote {args.shape} Quicksviewer checkpoint (seed {args.seed}, {args.dtype}) "
        f"to {args.out}"
    )


def _tokenizer(args):
    from tools.checkpoints import tokenizer

    if args.base_only:
        tokenizer.build_qwen25_tokenizer(args.out, cache_dir=args.cache_dir)
        print(f"wrote Qwen2.5 tokenizer to {args.out}")
    elif args.ranks_only:
        args.out.mkdir(parents=True, exist_ok=True)
        print(shutil.copy(tokenizer.fetch_qwen_ranks(args.cache_dir), args.out))
    else:
        ids = tokenizer.build_quicksviewer_tokenizer(args.out, cache_dir=args.cache_dir)
        print(f"wrote Quicksviewer tokenizer to {args.out}: {ids}")


def _demo(args):
    from tools.demo import demo

    demo(args.workdir, args.question, prepare_only=args.prepare_only)


# -------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    def command(name, run, summary, paths=False, src=False):
        p = sub.add_parser(name, help=summary, description=summary)
        p.set_defaults(run=run)
        if paths:
            _add_path_options(p)
        if src:
            _add_src_option(p)
        return p

    requirements = PROJECT_ROOT / "tools" / "requirements-cpu.txt"
    p = command("setup", _setup, "create or refresh the virtual environment")
    p.add_argument("--venv", type=Path, default=PROJECT_ROOT / ".venv")
    p.add_argument("--requirements", type=Path, default=requirements)

    p = command("pins", _pins, "re-resolve the CPU environment's exact pins")
    p.add_argument(
        "--requirements-in",
        type=Path,
        default=requirements.with_suffix(".in"),
        help="the top-level requirements (names, and pins where they are deliberate)",
    )
    p.add_argument("--requirements", type=Path, default=requirements)

    p = command("fetch", _fetch, "download and hash-check the pinned wheel", True)
    p.add_argument("--wheel", default=None, help="wheel tag from pin.toml (cp311, ...)")

    p = command("apply", _apply, "build the patched tree", True, True)
    p.add_argument(
        "--force",
        action="store_true",
        help="discard uncommitted changes and foreign commits in the tree (they are "
        "listed first)",
    )
    p.add_argument(
        "--link-venv",
        type=Path,
        default=None,
        help="make this virtual environment import sglang from the tree (.pth file)",
    )
    p.add_argument(
        "--port",
        metavar="ENTRY",
        default=None,
        help="build the tree up to this series entry (cpu/<name> for the CPU group) "
        "and leave it applied for porting it to the release (make port)",
    )

    p = command(
        "export", _export, "write patches/ and overlay/ back from the tree", True
    )
    p.add_argument(
        "--to-cpu",
        action="store_true",
        help="append your commits on top of the tree to the CPU group (patches/cpu/) "
        "instead of the upstream series",
    )

    command("verify", _verify, "check the series on a fresh pinned tree", True, True)
    command("check", _check, "the pre-submit gate on the tree as it is", True)

    p = command("pr", _pr, "the upstream PR kit: patches + DESCRIPTION.md", True)
    _add_paths(
        p,
        {
            "--out": ("out/pr", "output folder"),
            "--docs-dir": (
                "docs",
                "recorded GPU results (gpu-runs.md, gpu-runs/, performance.md)",
            ),
            "--ci-dir": (
                "build/ci",
                "what the last CI run recorded (last-run.json, pytest.xml)",
            ),
            "--readme": (
                "README.md",
                "the README whose tables describe the environment variables",
            ),
        },
    )

    p = command("guard", _guard, "implicit string concatenation in collections")
    p.add_argument("files", nargs="+", type=Path)

    p = command("workflows", _workflows, "lint the GitHub workflows")
    p.add_argument("directory", nargs="?", type=Path, default=None)

    p = command("wheel", _wheel, "the patched SGLang wheel per pinned tag", True)
    p.add_argument(
        "--tag",
        action="append",
        dest="tags",
        help="CPython tag from pin.toml (repeatable; default: every pinned tag)",
    )
    p.add_argument("--out-dir", type=Path, default=PROJECT_ROOT / "dist")
    p.add_argument(
        "--with-cpu-group",
        action="store_true",
        help="build from qsv/cpu (series + overlay + CPU enablement) for CPU hosts; "
        "the default qsv/upstream is what GPU hosts and upstream get",
    )
    p.add_argument(
        "--local", default=None, help="override the local version label (qsv.<n>)"
    )
    p.add_argument(
        "--allow-stale",
        action="store_true",
        help="build even if patches/ or overlay/ changed since `make apply`",
    )

    p = command("wheelhouse", _wheelhouse, "the offline GPU bundle", True)
    p.add_argument(
        "action", nargs="?", default="build", choices=["build", "check", "lock"]
    )
    p.add_argument(
        "bundle", nargs="?", type=Path, default=None, help="check: the tar.xz"
    )
    p.add_argument(
        "--lock",
        dest="lock_path",
        type=Path,
        default=PROJECT_ROOT / "tools" / "gpu_bundle" / "requirements.txt",
        help="the bundle's requirements file (pip's hash-checking format)",
    )
    p.add_argument(
        "--sm",
        default=None,
        help="sgl_kernel SM directory: sm90 (H100/H200, default) or sm100 (any other GPU)",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: dist/qsv-wheelhouse-cp312-<sm>.tar.xz",
    )
    # options like the example server's in shape only: each its own names and help
    p.add_argument(
        "--sglang-wheel",
        type=Path,
        default=None,
        help="use this patched cp312 wheel instead of building one",
    )
    p.add_argument("--xz-preset", type=int, default=9)
    p.add_argument(
        "--max-mib",
        type=float,
        default=None,
        help="size limit (default: bundle.toml's, 64)",
    )
    p.add_argument("--allow-stale", action="store_true", help="see `wheel`")
    p.add_argument(
        "--force", action="store_true", help="rebuild even if the inputs did not change"
    )

    p = command("convert", _convert, "convert an original checkpoint for SGLang")
    p.add_argument("src", type=Path, help="original checkpoint directory")
    p.add_argument("dst", type=Path, help="output directory")
    p.add_argument(
        "--vision-tower",
        type=Path,
        default=None,
        help="SigLIP directory to use instead of the config's mm_vision_tower",
    )
    p.add_argument(
        "--model-base",
        type=Path,
        default=None,
        help="base LLM directory: SRC is then a stage folder (config.json + "
        "mm_projector.bin), loaded on top of it like the original's model_base",
    )

    p = command("tiny", _tiny, "a seeded random checkpoint in the original format")
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--seed", type=int, default=0)
    # tools/checkpoints/tiny.py's DTYPES and SHAPES (tests/tree/test_layout.py checks)
    p.add_argument("--dtype", choices=("bf16", "fp32"), default="bf16")
    p.add_argument("--shape", choices=("7b", "tiny"), default="tiny")
    p.add_argument("--cache-dir", type=Path, default=None)
    p.add_argument("--device", default="cpu", help="where to draw the weights")
    p.add_argument("--variant", choices=("qwen", "llama"), default="qwen")
    p.add_argument("--tokenizer", choices=("qwen", "bpe"), default="qwen")

    p = command("tokenizer", _tokenizer, "the Qwen2.5 / Quicksviewer tokenizer")
    what = p.add_mutually_exclusive_group()
    what.add_argument(
        "--base-only",
        action="store_true",
        help="write the plain Qwen2.5 tokenizer without the Quicksviewer markers",
    )
    what.add_argument(
        "--ranks-only",
        action="store_true",
        help="only copy the verified qwen.tiktoken (the BPE ranks) into --out",
    )
    p.add_argument("--out", required=True, type=Path, help="output directory")
    p.add_argument("--cache-dir", type=Path, default=None)

    p = command("demo", _demo, "serve a tiny Quicksviewer on CPU and ask it")
    p.add_argument("--workdir", type=Path, default=PROJECT_ROOT / "build" / "demo")
    p.add_argument("--question", default="What is happening in the video?")
    p.add_argument("--prepare-only", action="store_true", help="only write the files")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
