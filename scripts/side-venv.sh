#!/usr/bin/env bash
# A venv of its own for a tool that cannot share .venv: side-venv.sh VENV MODULE PIP_ARGS...
# creates VENV, installs PIP_ARGS into it and checks that MODULE imports. Safe to run again:
# returns at once when MODULE already imports there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$1 MODULE=$2
shift 2
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import $MODULE" >/dev/null 2>&1; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "$@"
"$VENV/bin/python" -c "import $MODULE; print('$MODULE', $MODULE.__version__, 'in $VENV')"
