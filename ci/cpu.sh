#!/usr/bin/env bash
# CI on a CPU host (2 cores, no GPU, PyPI only), run from a clean clone.
# Installs everything itself (make setup), builds the patched tree (make apply),
# checks the series like upstream's CI would (make verify), runs the pre-submit gate
# on the tree (make check), then runs the README's test command (make test), all on the
# default release of pin.toml (0.5.17). Then, for every other pinned release (0.5.23):
# its own venv (make setup PIN=...), its tree (make apply PIN=...), make verify PIN=...
# and its model tests (make test PIN=..., the Makefile's MODEL_TESTS and MODEL_SELECT).
# The other releases' setup, apply and verify run in the background beside the default
# release's tests (they touch only .venv-<release> and build/sglang-<release>; their
# output is printed when the tests end); their tests run after.
# Prints the time of every stage; any failure is fatal, including pytest's exit 5 (no
# tests collected).
# Records the run in build/ci/ (read by make pr): last-run.json (commit, times,
# result of every stage) and pytest.xml (pytest's JUnit report of make test;
# pytest-<release>.xml for another release).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

declare -a SUMMARY=()
declare -a STAGES=()
T_START=$SECONDS
CI_DIR=$PWD/build/ci
mkdir -p "$CI_DIR"
rm -f "$CI_DIR"/last-run.json "$CI_DIR"/pytest*.xml
STARTED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
DIRTY=false
if [[ -n "$(git status --porcelain 2>/dev/null)" ]]; then DIRTY=true; fi

# record a stage's result (a note is added to the summary line); a failure is fatal
record() {
    local name=$1 rc=$2 dt=$3 note=${4:-}
    if [[ $rc -ne 0 ]]; then
        SUMMARY+=("${name}: FAILED (exit ${rc}) after ${dt}s${note}")
        STAGES+=("{\"name\": \"${name}\", \"status\": \"failed\", \"exit\": ${rc}, \"seconds\": ${dt}}")
        report failed
        echo "::: CI failed in stage '${name}' (exit ${rc})" >&2
        exit "$rc"
    fi
    SUMMARY+=("${name}: ok in ${dt}s${note}")
    STAGES+=("{\"name\": \"${name}\", \"status\": \"ok\", \"exit\": 0, \"seconds\": ${dt}}")
}

stage() {
    local name=$1
    shift
    local t0=$SECONDS rc=0
    echo "::: ${name}: $*"
    "$@" || rc=$?
    local dt=$((SECONDS - t0))
    record "$name" "$rc" "$dt"
    echo "::: ${name}: ok in ${dt}s"
}

report() {
    echo "::: stage times"
    local line
    for line in "${SUMMARY[@]}"; do
        echo ":::   ${line}"
    done
    echo ":::   total: $((SECONDS - T_START))s"
    local IFS=,
    printf '{"commit": "%s", "dirty": %s, "started": "%s", "finished": "%s", "result": "%s", "total_seconds": %d, "stages": [%s], "junit": "pytest.xml"}\n' \
        "$COMMIT" "$DIRTY" "$STARTED" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$1" \
        "$((SECONDS - T_START))" "${STAGES[*]}" > "$CI_DIR/last-run.json"
}

run_tests() {
    # make fails whenever pytest does, including exit 5 (no tests collected)
    make test PYTEST_ARGS="${PYTEST_ARGS:--ra}" JUNIT="$CI_DIR/pytest.xml"
}

run_release_tests() {
    make test PIN="$1" PYTEST_ARGS="${PYTEST_ARGS:--ra}" JUNIT="$CI_DIR/pytest-$1.xml"
}

# the pinned releases other than the default one (pin.toml: default = "...",
# [releases."<version>"] tables)
other_releases() {
    [[ -f pin.toml ]] || return 0
    local default
    default=$(sed -n 's/^default *= *"\(.*\)"/\1/p' pin.toml)
    sed -n 's/^\[releases\."\([^"]*\)"\]$/\1/p' pin.toml | grep -vxF "$default" || true
}

# setup, apply and verify of every other release, one after the other, each step's
# result as "<stage> <exit> <seconds>" in $CI_DIR/prepare.tsv; stops at a failure
prepare_other_releases() {
    local release step t0 rc
    for release in $(other_releases); do
        for step in setup apply verify; do
            t0=$SECONDS
            rc=0
            echo "::: ${step}-${release}: make ${step} PIN=${release}"
            make "$step" PIN="$release" || rc=$?
            echo "${step}-${release} ${rc} $((SECONDS - t0))" >> "$CI_DIR/prepare.tsv"
            [[ $rc -eq 0 ]] || return "$rc"
        done
    done
}

# the background stages' results, as if they had run here (a failure is fatal)
collect_prepared() {
    local rc=0 name status seconds
    wait "$PREP_PID" || rc=$?
    PREP_PID=
    echo "::: the other releases' setup, apply and verify (run beside the tests):"
    cat "$CI_DIR/prepare.log"
    while read -r name status seconds; do
        record "$name" "$status" "$seconds" " (beside the tests)"
    done < "$CI_DIR/prepare.tsv"
    if [[ $rc -ne 0 ]]; then  # died without a record of its step
        report failed
        echo "::: CI failed preparing the other releases (exit ${rc})" >&2
        exit "$rc"
    fi
}

stage "setup" make setup
stage "apply" make apply
stage "verify" make verify
stage "check" make check
: > "$CI_DIR/prepare.tsv"
PREP_PID=
if [[ -n "$(other_releases)" ]]; then
    # its own process group (job control), so that a failing test stage stops it all
    set -m
    prepare_other_releases > "$CI_DIR/prepare.log" 2>&1 < /dev/null &
    PREP_PID=$!
    set +m
    trap '[[ -z $PREP_PID ]] || kill -- -"$PREP_PID" 2> /dev/null || true' EXIT
fi
stage "test" run_tests
[[ -z $PREP_PID ]] || collect_prepared
for release in $(other_releases); do
    stage "test-$release" run_release_tests "$release"
done
report passed
