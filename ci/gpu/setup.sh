#!/usr/bin/env bash
# On the GPU host, from the repository root: install the offline bundle once and
# print the environment to use. Usage: eval "$(bash ci/gpu/setup.sh BUNDLE)"
set -euo pipefail
# The site is reinstalled when the bundle changed (its sha256 is kept in the marker)
# or QSV_REINSTALL=1 (run.sh's install stage), so a warm host or a self-hosted
# runner never keeps an old bundle.
bundle=${1:-${QSV_BUNDLE:-dist/qsv-wheelhouse-cp312-sm90.tar.xz}}
site=${QSV_SITE:-/tmp/qsv-site}
sha=$(sha256sum "$bundle" | cut -d' ' -f1)
if [ "${QSV_REINSTALL:-0}" = 1 ] || [ "$(cat "$site/.qsv-installed" 2>/dev/null)" != "$sha" ]; then
  rm -rf /tmp/qsv-bundle && mkdir -p /tmp/qsv-bundle
  tar -xJf "$bundle" -C /tmp/qsv-bundle >&2
  sh /tmp/qsv-bundle/qsv-wheelhouse/install.sh "$site" >&2
  PYTHONPATH="$site" python3 /tmp/qsv-bundle/qsv-wheelhouse/check_imports.py --site "$site" --expect-sm sm90 --json "${OUT:-/tmp}/imports.json" >&2
  echo "$sha" > "$site/.qsv-installed"
fi
if [ "${QSV_OVERLAY_DEV:-0}" = 1 ]; then
  # development only: run the working tree's overlay over the bundled wheel
  cp -r overlay/python/sglang/. "$site/sglang/" >&2
  # and the series' changed upstream files, exported by
  # git -C build/sglang archive qsv/upstream $(git -C build/sglang diff --name-only
  # qsv/base qsv/upstream -- python/sglang) | tar -x -C gpu_carry/series
  if [ -d gpu_carry/series/python/sglang ]; then
    cp -r gpu_carry/series/python/sglang/. "$site/sglang/" >&2
  fi
  echo "setup: overlay (and gpu_carry/series) copied over the bundle (QSV_OVERLAY_DEV=1)" >&2
fi
echo "export PYTHONPATH=$site:$PWD"
