#!/usr/bin/env bash
# Create .venv-mindspore: MindSpore for the cross-check tests only (tests/test_weights_mindspore.py).
# binwise itself never imports MindSpore; it gets its own venv because it needs numpy < 2.
# Safe to run again: returns at once when MindSpore already imports there.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-mindspore
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import mindspore" >/dev/null 2>&1; then
    exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3.11 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
# MindSpore 2.10 imports only with numpy 1.x.
"$VENV/bin/python" -m pip install --quiet mindspore 'numpy<2'
"$VENV/bin/python" -c "import mindspore; print('MindSpore', mindspore.__version__, 'in $VENV')"
