#!/usr/bin/env bash
# A venv of its own for a tool that cannot share .venv: side-venv.sh VENV MODULE PIP_ARGS...
# creates VENV, installs PIP_ARGS into it and checks that MODULE imports. Safe to run again: pip
# installs only what is missing (a few seconds when nothing is), so a dependency binwise gained
# since the venv was made (pillow-heif, 2026-12-07) reaches an old checkout's side venv too.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1 MODULE=$2
shift 2
if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
"$VENV/bin/python" -m pip install --quiet "$@"
"$VENV/bin/python" -c "import $MODULE; print('$MODULE', $MODULE.__version__, 'in $VENV')"
