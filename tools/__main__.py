"""``python -m tools``: the project's command line (the Makefile targets call it).

Commands:
  setup    create or refresh .venv from tools/requirements-cpu.txt (standard library only)
  fetch    download the pinned wheel into the cache and check its sha256
  apply    build the patched SGLang tree (build/sglang): base + series + overlay + CPU
  export   write patches/, patches/cpu/ and overlay/ back from the tree
  verify   check the series on a fresh pinned tree: applies, compiles, formatted,
           guards; and that the GitHub workflows lint clean
  check    the pre-submit gate on the tree itself: clean, compiles, formatted, spelled,
           guards
  pr       write the upstream PR kit into out/pr/: the series as mail + DESCRIPTION.md
  guard    run the implicit-string-concatenation guard on given Python files

A ToolError is printed as ``error: ...`` without a traceback; the exit status is 2.
"""

import argparse
import os
import sys
from pathlib import Path

from tools import PROJECT_ROOT, ToolError


def _add_path_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--pin", type=Path, default=PROJECT_ROOT / "pin.toml", help="pin file"
    )
    parser.add_argument(
        "--release",
        default=None,
        help="the pinned SGLang release (make PIN=...; default: pin.toml's default); "
        "its patches are patches/ with the variants of patches/<release>/",
    )
    parser.add_argument(
        "--patches-dir",
        type=Path,
        default=PROJECT_ROOT / "patches",
        help="the series (series + *.patch; CPU group in its cpu/ subdirectory)",
    )
    parser.add_argument(
        "--overlay-dir",
        type=Path,
        default=PROJECT_ROOT / "overlay",
        help="files copied into the tree at the same relative paths",
    )
    parser.add_argument(
        "--build-dir",
        type=Path,
        default=None,
        help="the patched tree (a git repository; default: build/sglang, "
        "build/sglang-<release> for a release other than the default)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=PROJECT_ROOT / "build" / "cache",
        help="hash-checked downloads",
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tools",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")

    p = sub.add_parser("setup", help="create or refresh the virtual environment")
    p.add_argument("--venv", type=Path, default=PROJECT_ROOT / ".venv")
    p.add_argument(
        "--requirements",
        type=Path,
        default=PROJECT_ROOT / "tools" / "requirements-cpu.txt",
    )

    p = sub.add_parser("fetch", help="download and hash-check the pinned wheel")
    _add_path_options(p)
    p.add_argument("--wheel", default=None, help="wheel tag from pin.toml (cp311, ...)")

    p = sub.add_parser("apply", help="build the patched tree")
    _add_path_options(p)
    _add_src_option(p)
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

    p = sub.add_parser("export", help="write patches/ and overlay/ back from the tree")
    _add_path_options(p)
    p.add_argument(
        "--to-cpu",
        action="store_true",
        help="append your commits on top of the tree to the CPU group (patches/cpu/) "
        "instead of the upstream series",
    )

    p = sub.add_parser("verify", help="check the series on a fresh pinned tree")
    _add_path_options(p)
    _add_src_option(p)

    p = sub.add_parser("check", help="the pre-submit gate on the tree as it is")
    _add_path_options(p)

    p = sub.add_parser("pr", help="the upstream PR kit: patches + DESCRIPTION.md")
    _add_path_options(p)
    p.add_argument(
        "--out", type=Path, default=PROJECT_ROOT / "out" / "pr", help="output folder"
    )
    p.add_argument(
        "--docs-dir",
        type=Path,
        default=PROJECT_ROOT / "docs",
        help="recorded GPU results (gpu-runs.md, gpu-runs/, performance.md)",
    )
    p.add_argument(
        "--ci-dir",
        type=Path,
        default=PROJECT_ROOT / "build" / "ci",
        help="what the last CI run recorded (last-run.json, pytest.xml)",
    )
    p.add_argument(
        "--readme",
        type=Path,
        default=PROJECT_ROOT / "README.md",
        help="the README whose tables describe the environment variables",
    )

    p = sub.add_parser("guard", help="implicit string concatenation in collections")
    p.add_argument("files", nargs="+", type=Path)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "setup":
            from tools.venv import setup

            setup(args.venv, args.requirements)
        elif args.command == "fetch":
            from tools.pin import fetch_wheel, load_pin

            pin = load_pin(args.pin, args.release)
            print(fetch_wheel(pin, args.cache_dir, tag=args.wheel))
        elif args.command == "apply":
            from tools.tree import apply

            apply(
                _paths(args),
                force=args.force,
                src=args.sglang_src,
                link_venv=args.link_venv,
                port=args.port,
            )
        elif args.command == "export":
            from tools.tree import export

            export(_paths(args), to_cpu=args.to_cpu)
        elif args.command == "verify":
            from tools.verify import verify

            verify(_paths(args), src=args.sglang_src)
        elif args.command == "check":
            from tools.check import check

            check(_paths(args))
        elif args.command == "pr":
            from tools.pr import make_pr

            make_pr(
                _paths(args),
                out=args.out,
                docs=args.docs_dir,
                ci_dir=args.ci_dir,
                readme=args.readme,
            )
        elif args.command == "guard":
            from tools.verify import check_files

            check_files(args.files)
    except ToolError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
