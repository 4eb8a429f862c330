#!/bin/sh
# Install the offline wheelhouse (make wheelhouse) on a GPU host whose torch is
# preinstalled.  No network: every wheel is in wheels/ next to this script.
#
#   sh install.sh [TARGET]        (default TARGET: ./site next to this script)
#   export PYTHONPATH=TARGET      (printed at the end; put it first on the path)
#   python3 check_imports.py --site TARGET
#
# PYTHON=python3.12 picks the interpreter (default: python3).  The wheels are for
# CPython 3.12 on x86_64 Linux; another interpreter is refused unless FORCE=1.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
TARGET=${1:-$HERE/site}
PY=${PYTHON:-python3}

ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$ver" != "3.12" ] && [ "${FORCE:-0}" != "1" ]; then
    echo "install.sh: $PY is Python $ver; these wheels are for 3.12 (FORCE=1 to try anyway)" >&2
    exit 2
fi

echo "install.sh: checking sha256 of $(ls "$HERE"/wheels/*.whl | wc -l) wheels"
(cd "$HERE/wheels" && sha256sum --check --quiet --strict ../SHA256SUMS)

start=$(date +%s)
"$PY" -m pip install --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --upgrade --target "$TARGET" "$HERE"/wheels/*.whl
echo "install.sh: installed into $TARGET in $(( $(date +%s) - start ))s"
echo "install.sh: now run"
echo "export PYTHONPATH=$TARGET\${PYTHONPATH:+:\$PYTHONPATH}"
