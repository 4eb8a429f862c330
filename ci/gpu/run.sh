#!/usr/bin/env bash
# The GPU CI: ci/gpu/run.sh STAGE... with STAGE in checkpoint parity server tp bench.
# Run from the repository root on the GPU host with the bundle and qwen.tiktoken
# carried in gpu_carry/ (see docs/gpu-runs.md). Each stage logs to $OUT/<stage>.log
# and writes $OUT/<stage>.json; a failed stage does not stop the next one, the
# exit status counts the failures.
set -uo pipefail
export OUT=${OUT:-/tmp/qsv-gpu/out}
mkdir -p "$OUT"
export QSV_CACHE_DIR=${QSV_CACHE_DIR:-$PWD/gpu_carry}
t0=$(date +%s)
eval "$(bash ci/gpu/setup.sh)" 2> "$OUT/setup.log" || { tail -50 "$OUT/setup.log"; exit 1; }
echo "setup: $(( $(date +%s) - t0 )) s"
failures=0
for stage in "$@"; do
  t=$(date +%s)
  case $stage in
    bench) script=benchmarks/bench_quicksviewer.py; args=(--gpu-suite --resume) ;;
    *) script=ci/gpu/$stage.py; args=() ;;
  esac
  if PYTHONPATH="$PYTHONPATH:$PWD/ci/gpu" python3 "$script" "${args[@]}" > "$OUT/$stage.log" 2>&1; then
    status=ok
  else
    status=FAILED; failures=$((failures + 1)); tail -40 "$OUT/$stage.log"
  fi
  echo "$stage: $status in $(( $(date +%s) - t )) s"
done
python3 - "$OUT" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
summary = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json")) if p.stem != "summary"}
(out / "summary.json").write_text(json.dumps(summary, indent=1))
PY
exit $failures
