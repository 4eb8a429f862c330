#!/usr/bin/env bash
# CI on a CPU host (2 cores, no GPU, PyPI only), run from a clean clone.
# Installs everything itself (make setup), builds the patched tree (make apply),
# checks the series like upstream's CI would (make verify), runs the pre-submit gate
# on the tree (make check), then runs the README's test command (make test), all on the
# default release of pin.toml (0.5.17). Then, for every other pinned release (0.5.23):
# its own venv (make setup PIN=...), its tree (make apply PIN=...), make verify PIN=...
# and its model tests (make test PIN=..., the Makefile's MODEL_TESTS and MODEL_SELECT).
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

stage() {
    local name=$1
    shift
    local t0=$SECONDS rc=0
    echo "::: ${name}: $*"
    "$@" || rc=$?
    local dt=$((SECONDS - t0))
    if [[ $rc -ne 0 ]]; then
        SUMMARY+=("${name}: FAILED (exit ${rc}) after ${dt}s")
        STAGES+=("{\"name\": \"${name}\", \"status\": \"failed\", \"exit\": ${rc}, \"seconds\": ${dt}}")
        report failed
        echo "::: CI failed in stage '${name}' (exit ${rc})" >&2
        exit "$rc"
    fi
    SUMMARY+=("${name}: ok in ${dt}s")
    STAGES+=("{\"name\": \"${name}\", \"status\": \"ok\", \"exit\": 0, \"seconds\": ${dt}}")
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

stage "setup" make setup
stage "apply" make apply
stage "verify" make verify
stage "check" make check
stage "test" run_tests
for release in $(other_releases); do
    stage "setup-$release" make setup PIN="$release"
    stage "apply-$release" make apply PIN="$release"
    stage "verify-$release" make verify PIN="$release"
    stage "test-$release" run_release_tests "$release"
done
report passed
