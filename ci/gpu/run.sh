#!/usr/bin/env bash
# The GPU CI: ci/gpu/run.sh STAGE... | ci [--part N]
#   ci      every stage the CI promises, then the gates (ci/gpu/gates.py CI_STAGES:
#           install make_checkpoint parity image_stages server serving), as
#           .github/workflows/gpu.yml runs it (about 700 s on an H200)
#   ci --part 1, then ci --part 2
#           the same in two calls on one host with the same $OUT (for a caller whose
#           calls are limited in time; about 300 s and 450 s on an H200): part 1 =
#           install make_checkpoint parity image_stages, part 2 = server serving
#           gates (gates.py CI_PARTS); the gates judge everything in $OUT
#   STAGE   install make_checkpoint parity image_stages server serving bench tp
#           visual_path gates (gates.py STAGES; the gates judge everything in $OUT;
#           give it last)
# Run from the repository root on the GPU host with the bundle in dist/ and
# qwen.tiktoken in gpu_carry/ (make gpu-inputs; docs/gpu.md). Each stage logs to
# $OUT/<stage>.log and writes its JSON (serving: ttft, stall, decode, serving-bench,
# soak and serving.json); a failed stage does not stop the next one. A stage whose
# script does not exist yet is "absent" (the gates say whether that fails); an
# unknown stage name stops the run before anything runs (exit 2). stages.json
# records every stage's status and time and every call's command, and accumulates
# over calls with the same $OUT (start a new run in an empty $OUT); summary.json
# holds every JSON. Exit status: the number of failed stages, the gates included.
set -uo pipefail
export OUT=${OUT:-/tmp/qsv-gpu/out}
mkdir -p "$OUT"
export QSV_CACHE_DIR=${QSV_CACHE_DIR:-$PWD/gpu_carry}
gates=ci/gpu/gates.py
if [ "${1:-}" = ci ]; then
  shift  # ci [--part N]: gates.py says which stages, and where the gates go
  stages=$(python3 "$gates" stages --gates "$@") || exit 2
  # shellcheck disable=SC2086
  set -- $stages
fi
case " $* " in *" install "*) export QSV_REINSTALL=1 ;; esac
python3 "$gates" note --out "$OUT" --begin "$@" || exit 2
t0=$(date +%s)
if ! setup_env=$(bash ci/gpu/setup.sh 2> "$OUT/setup.log"); then
  tail -50 "$OUT/setup.log"
  python3 "$gates" note --out "$OUT" --stage install --status FAILED --exit 1 \
    --seconds $(( $(date +%s) - t0 ))
  exit 1
fi
eval "$setup_env"
export QSV_SETUP_S=$(( $(date +%s) - t0 ))
echo "setup: $QSV_SETUP_S s"
failures=0
for stage in "$@"; do
  t=$(date +%s)
  case $stage in
    # no --resume: phase results kept on a warm host could come from other code
    bench) script=benchmarks/bench_quicksviewer.py; args=(--gpu-suite) ;;
    gates) script=$gates; args=(check --run "$OUT") ;;
    *) script=ci/gpu/$stage.py; args=() ;;
  esac
  rc=0
  if [ ! -f "$script" ]; then
    status=absent
  else
    [ "$stage" = gates ] || python3 "$gates" note --out "$OUT" --stage "$stage" --status running
    if PYTHONPATH="$PYTHONPATH:$PWD/ci/gpu" python3 "$script" "${args[@]}" > "$OUT/$stage.log" 2>&1; then
      status=ok
    else
      rc=$?; status=FAILED; failures=$((failures + 1))
      [ "$stage" = gates ] || tail -40 "$OUT/$stage.log"
    fi
  fi
  dt=$(( $(date +%s) - t ))
  if [ "$stage" = gates ]; then
    cat "$OUT/gates.log"
  else
    python3 "$gates" note --out "$OUT" --stage "$stage" --status "$status" --seconds "$dt" --exit "$rc"
  fi
  echo "$stage: $status in $dt s$([ "$status" = absent ] && echo " (no $script)")"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "summary"}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
PY
exit $failures
