#!/usr/bin/env bash
# CI on a CPU host (2 cores, no GPU, PyPI only), run from a clean clone.
# Installs everything itself (make setup), builds the patched tree (make apply),
# checks the series like upstream's CI would (make verify), then runs the README's
# test command (make test). Prints the time of every stage; any failure is fatal,
# including pytest's exit 5 (no tests collected).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -a SUMMARY=()
T_START=$SECONDS

stage() {
    local name=$1
    shift
    local t0=$SECONDS rc=0
    echo "::: ${name}: $*"
    "$@" || rc=$?
    local dt=$((SECONDS - t0))
    if [[ $rc -ne 0 ]]; then
        SUMMARY+=("${name}: FAILED (exit ${rc}) after ${dt}s")
        report
        echo "::: CI failed in stage '${name}' (exit ${rc})" >&2
        exit "$rc"
    fi
    SUMMARY+=("${name}: ok in ${dt}s")
    echo "::: ${name}: ok in ${dt}s"
}

report() {
    echo "::: stage times"
    local line
    for line in "${SUMMARY[@]}"; do
        echo ":::   ${line}"
    done
    echo ":::   total: $((SECONDS - T_START))s"
}

run_tests() {
    # make fails whenever pytest does, including exit 5 (no tests collected)
    make test PYTEST_ARGS="${PYTEST_ARGS:--ra}"
}

stage "setup" make setup
stage "apply" make apply
stage "verify" make verify
stage "test" run_tests
report
