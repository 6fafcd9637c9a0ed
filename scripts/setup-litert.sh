#!/usr/bin/env bash
# Create .venv-litert: binwise with the 'tflite-export' extra (litert-torch, the maintained
# PyTorch -> TFLite converter), for `binwise export --format tflite` and its tests
# (tests/test_tflite_export.py finds this venv by itself). Its own venv because litert-torch pins
# typing-extensions < 4.13, which would downgrade pydantic under the service in .venv.
# Safe to run again: returns at once when the converter already imports there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-litert
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import litert_torch" >/dev/null 2>&1; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[train,tflite-export]'
"$VENV/bin/python" -c "import litert_torch; print('litert-torch', litert_torch.__version__, 'in $VENV')"
