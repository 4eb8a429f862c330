#!/usr/bin/env python3
"""Import every module the GPU path needs and list EVERY missing one in one run.

Ships inside the offline wheelhouse (make wheelhouse); run it on the GPU host after
install.sh, with the PYTHONPATH that install.sh prints:

    PYTHONPATH=$SITE python3 check_imports.py [--site $SITE] [--expect-sm sm90]

An ordinary import stops at the first missing module, which hides the next one.  So
the check runs in rounds, each in a fresh interpreter: round 1 imports the modules
as they are; every later round stands in an empty stub for each module found missing
so far (and for each module that a real error broke in round 1) and imports again, until no new missing module turns up.  The
report lists all missing modules with the file and line that wanted each, the
modules that failed for another reason, and the version checks.  Exit status 0 only
when round 1 imported everything and every version check passed.

Standard library only; runs on Python 3.8+ (the bundle itself is for 3.12).
"""

import argparse
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import subprocess
import sys
import time
import traceback
import types

# the GPU path: Engine, HTTP server, the Quicksviewer model and processor, and the
# backends the GPU host runs with (triton attention, pytorch sampling, sdpa/triton
# vision attention); then the third-party packages they rely on
SGLANG_MODULES = [
    "sglang",
    "sglang.srt.entrypoints.engine",
    "sglang.srt.entrypoints.http_server",
    "sglang.srt.entrypoints.openai.serving_chat",
    "sglang.srt.configs.quicksviewer",
    "sglang.srt.models.quicksviewer",
    "sglang.srt.multimodal.processors.quicksviewer",
    "sglang.srt.managers.scheduler",
    "sglang.srt.managers.tokenizer_manager",
    "sglang.srt.managers.detokenizer_manager",
    "sglang.srt.model_executor.model_runner",
    "sglang.srt.layers.attention.attention_registry",
    "sglang.srt.layers.attention.triton_backend",
    "sglang.srt.layers.attention.vision",
    "sglang.srt.layers.layernorm",
    "sglang.srt.layers.activation",
    "sglang.srt.layers.sampler",
    "sglang.srt.layers.quantization.fp8_utils",
    "sglang.srt.function_call.function_call_parser",
    "sglang.srt.constrained.xgrammar_backend",
    "sglang.srt.utils.video_decoder",
    "sglang.srt.models.qwen2",
    "sglang.srt.models.idefics2",
]
THIRD_PARTY_MODULES = [
    "torch",
    "triton",
    "sgl_kernel",
    "flashinfer",
    "xgrammar",
    "tvm_ffi",
    "transformers",
    "tokenizers",
    "cv2",
    "PIL",
    "numpy",
    "safetensors",
    "huggingface_hub",
    "fastapi",
    "starlette",
    "uvicorn",
    "uvloop",
    "python_multipart",
    "pydantic",
    "openai",
    "orjson",
    "pybase64",
    "msgspec",
    "zmq",
    "setproctitle",
    "dill",
    "partial_json_parser",
    "compressed_tensors",
    "gguf",
    "jsonschema",
    "soundfile",
    "interegular",
    "IPython",
    "psutil",
    "requests",
    "aiohttp",
    "sentencepiece",
    "einops",
]
DEFAULT_MODULES = SGLANG_MODULES + THIRD_PARTY_MODULES

# distribution -> required version (exact) or prefix (ending in "*")
VERSIONS = {
    "transformers": "5.12.1",
    "tokenizers": "0.22.2",
    "sglang": "0.5.17+qsv.*",
    "xgrammar": "0.2.1",
    "flashinfer-python": "0.6.15.post1",
    "sglang-kernel": "0.4.5",
    "apache-tvm-ffi": "0.1.11",
    "openai": "2.6.1",
}
# modules that must come from the bundle (--site), not from the host's site-packages
FROM_SITE = [
    "sglang",
    "transformers",
    "tokenizers",
    "sgl_kernel",
    "flashinfer",
    "xgrammar",
]


# ----------------------------------------------------------------------- worker


class _StubMeta(type):
    """A stand-in class: any attribute, call, subscript or union gives a stub back."""

    def __getattr__(cls, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _stub_class(cls.__qualname__ + "." + attr)

    def __call__(cls, *args, **kwargs):
        return cls

    def __getitem__(cls, key):
        return cls

    def __or__(cls, other):
        return cls

    __ror__ = __or__

    def __iter__(cls):
        return iter(())

    def __bool__(cls):
        return False


def _stub_class(name):
    return _StubMeta(name.rsplit(".", 1)[-1], (), {"__qualname__": name})


class _StubModule(types.ModuleType):
    def __getattr__(self, attr):
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        return _stub_class(self.__name__ + "." + attr)


class _StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = _StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class _StubFinder(importlib.abc.MetaPathFinder):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == n or fullname.startswith(n + ".") for n in self.names):
            return importlib.machinery.ModuleSpec(
                fullname, _StubLoader(), is_package=True
            )
        return None


def _where(exc):
    """file:line of the import statement (outside importlib) that raised ``exc``."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if "importlib" not in f.filename and not f.filename.startswith("<frozen")
    ]
    if not frames:
        return "?"
    frame = frames[-1]
    return "%s:%s" % (frame.filename, frame.lineno)


def _broken_module(exc):
    """The innermost module whose top-level code raised ``exc`` (its name)."""
    name = None
    tb = exc.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if frame.f_code.co_name == "<module>":
            candidate = frame.f_globals.get("__name__")
            if candidate and candidate != "__main__":
                name = candidate
        tb = tb.tb_next
    return name


def _error(exc):
    """The result fields of a module whose import raised ``exc``."""
    return dict(
        ok=False,
        kind="error",
        error="%s: %s" % (type(exc).__name__, exc),
        where=_where(exc),
        broken=_broken_module(exc),
    )


def worker(modules, stubs):
    if stubs:
        sys.meta_path.insert(0, _StubFinder(stubs))
    results = []
    failed = set()
    for name in modules:
        start = time.time()
        entry = {"module": name}
        parents = [name.rsplit(".", i)[0] for i in range(name.count("."), 0, -1)]
        failed_parent = next((p for p in parents if p in failed), None)
        if failed_parent:
            # importing it would only repeat (or garble) the parent's failure
            entry.update(ok=False, kind="skipped", parent=failed_parent, seconds=0.0)
            results.append(entry)
            failed.add(name)
            continue
        try:
            importlib.import_module(name)
            entry["ok"] = True
        except ModuleNotFoundError as exc:
            if exc.name:
                entry.update(
                    ok=False,
                    kind="missing",
                    missing=exc.name,
                    where=_where(exc),
                    message=str(exc),
                )
            else:  # raised by hand (transformers' lazy objects): an error
                entry.update(_error(exc))
        except BaseException as exc:  # noqa: B902 -- SystemExit, OSError from .so, ...
            entry.update(_error(exc))
        entry["seconds"] = round(time.time() - start, 2)
        if not entry["ok"]:
            failed.add(name)
        results.append(entry)
    print("@@RESULT@@" + json.dumps(results))


# ------------------------------------------------------------------------ driver


def run_round(modules, stubs, timeout):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker"]
    cmd += ["--modules", ",".join(modules), "--stub", ",".join(sorted(stubs))]
    proc = subprocess.run(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout
    )
    out = proc.stdout.decode(errors="replace")
    for line in out.splitlines():
        if line.startswith("@@RESULT@@"):
            return json.loads(line[len("@@RESULT@@") :]), None
    return None, "worker exited %s without a result:\n%s%s" % (
        proc.returncode,
        out[-4000:],
        proc.stderr.decode(errors="replace")[-4000:],
    )


def _version(dist):
    try:
        from importlib import metadata
    except ImportError:  # pragma: no cover
        return None
    try:
        return metadata.version(dist)
    except Exception:
        return None


def check_versions(site):
    problems, lines = [], []
    for dist, want in VERSIONS.items():
        have = _version(dist)
        if want.endswith("*"):
            ok = have is not None and have.startswith(want[:-1])
        else:
            ok = have == want
        lines.append(
            "  %-20s %-22s want %s%s" % (dist, have, want, "" if ok else "  <-- WRONG")
        )
        if not ok:
            problems.append("%s is %s, want %s" % (dist, have, want))
    if site:
        site = os.path.realpath(site)
        for name in FROM_SITE:
            spec = importlib.util.find_spec(name)
            origin = os.path.realpath(spec.origin) if spec and spec.origin else None
            ok = origin is not None and origin.startswith(site + os.sep)
            lines.append(
                "  %-20s from %s%s"
                % (name, origin, "" if ok else "  <-- NOT FROM --site")
            )
            if not ok:
                problems.append(
                    "%s is imported from %s, not from %s" % (name, origin, site)
                )
    return problems, lines


def gpu_lines(expect_sm):
    lines, problems = [], []
    try:
        import torch
    except Exception as exc:
        return ["  torch: %s" % exc], ["torch does not import"]
    lines.append("  torch %s, CUDA %s" % (torch.__version__, torch.version.cuda))
    if not torch.cuda.is_available():
        lines.append("  no CUDA device visible (sgl_kernel loads its sm100 ops then)")
        return lines, problems
    major, minor = torch.cuda.get_device_capability(0)
    lines.append(
        "  %s, compute capability %d.%d" % (torch.cuda.get_device_name(0), major, minor)
    )
    if expect_sm:
        # sgl_kernel's loader: sm90 for capability 9.0, sm100 for everything else
        needs = "sm90" if (major, minor) == (9, 0) else "sm100"
        if needs != expect_sm:
            problems.append(
                "this GPU needs sgl_kernel/%s but the bundle has %s "
                "(rebuild: make wheelhouse SM=%s)" % (needs, expect_sm, needs)
            )
    return lines, problems


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--modules", default=None, help="comma-separated; replaces the default list"
    )
    parser.add_argument(
        "--add", default="", help="comma-separated modules to check as well"
    )
    parser.add_argument(
        "--site",
        default=None,
        help="the install.sh target; checks where modules come from",
    )
    parser.add_argument(
        "--expect-sm", default=None, help="the bundle's sgl_kernel SM directory (sm90)"
    )
    parser.add_argument(
        "--no-versions", action="store_true", help="skip the version checks"
    )
    parser.add_argument(
        "--no-device", action="store_true", help="skip the torch/GPU report"
    )
    parser.add_argument("--max-rounds", type=int, default=12)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per round")
    parser.add_argument(
        "--json", default=None, help="write the findings to this file too"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--stub", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    modules = args.modules.split(",") if args.modules else list(DEFAULT_MODULES)
    modules += [m for m in args.add.split(",") if m]
    modules = [m.strip() for m in modules if m.strip()]
    if args.worker:
        worker(modules, [s for s in args.stub.split(",") if s])
        return 0

    print("check_imports: Python %s at %s" % (sys.version.split()[0], sys.executable))
    print("check_imports: PYTHONPATH=%s" % os.environ.get("PYTHONPATH", ""))
    start = time.time()
    stubs = set()
    missing = {}  # module -> (wanted where, first round)
    errors = {}  # target module -> error (round 1 only)
    later_errors = {}
    first = None
    for round_no in range(1, args.max_rounds + 1):
        results, failure = run_round(modules, stubs, args.timeout)
        if results is None:
            print("check_imports: round %d crashed: %s" % (round_no, failure))
            errors["<round %d>" % round_no] = failure
            break
        if first is None:
            first = results
        new = set()
        for entry in results:
            if entry["ok"] or entry["kind"] == "skipped":
                continue
            if entry["kind"] == "missing" and entry.get("missing"):
                name = entry["missing"]
                if name not in missing:
                    missing[name] = (entry["where"], round_no)
                if name not in stubs:
                    new.add(name)
            else:
                target = errors if round_no == 1 else later_errors
                target.setdefault(entry["module"], entry)
                # a module broken by a real error (round 1: an .so that does not
                # load, say) is stubbed to look past it; breakage seen only with
                # stubs in place is likely their doing, so it is reported, not chased
                broken = entry.get("broken")
                if round_no == 1 and broken and broken not in stubs:
                    new.add(broken)
        print(
            "check_imports: round %d: %d/%d imported, %d new missing or broken%s"
            % (
                round_no,
                sum(e["ok"] for e in results),
                len(results),
                len(new),
                (": " + ", ".join(sorted(new))) if new else "",
            )
        )
        if not new:
            break
        stubs |= new

    print("\n== round 1 (the real imports)")
    for entry in first or []:
        if entry["ok"]:
            status = "ok"
        elif entry["kind"] == "skipped":
            status = "skipped: %s failed" % entry["parent"]
        elif entry["kind"] == "missing":
            status = "MISSING %s (%s)" % (entry["missing"], entry["where"])
        else:
            status = "ERROR %s (%s)" % (entry["error"], entry["where"])
        print("  %-55s %6.2fs  %s" % (entry["module"], entry["seconds"], status))

    problems = []
    if missing:
        print(
            "\n== missing modules: %d (every one, found in %d round(s))"
            % (len(missing), round_no)
        )
        for name, (where, rnd) in sorted(missing.items()):
            print(
                "  %-40s wanted by %s%s"
                % (name, where, "" if rnd == 1 else "  [round %d]" % rnd)
            )
        problems += ["missing module %s" % n for n in sorted(missing)]
    if errors:
        print("\n== modules that failed for another reason (round 1)")
        for name, entry in errors.items():
            text = (
                entry
                if isinstance(entry, str)
                else "%s (%s)" % (entry["error"], entry["where"])
            )
            print("  %s: %s" % (name, text))
        problems += ["%s failed to import" % n for n in errors]
    if later_errors:
        print("\n== errors seen only with stubs in place (may be caused by the stubs)")
        for name, entry in later_errors.items():
            print("  %s: %s (%s)" % (name, entry["error"], entry["where"]))

    if not args.no_versions:
        version_problems, lines = check_versions(args.site)
        print("\n== versions and origins")
        print("\n".join(lines))
        problems += version_problems
    if not args.no_device:
        gpu, gpu_problems = gpu_lines(args.expect_sm)
        print("\n== device")
        print("\n".join(gpu))
        problems += gpu_problems

    print("\ncheck_imports: %.1fs" % (time.time() - start))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "problems": problems,
                    "missing": {k: v[0] for k, v in missing.items()},
                    "round1": first,
                },
                f,
                indent=2,
            )
    if problems:
        print("check_imports: FAILED (%d problem(s)):" % len(problems))
        for p in problems:
            print("  - " + p)
        return 1
    print("check_imports: OK, every module imported")
    return 0


if __name__ == "__main__":
    sys.exit(main())
