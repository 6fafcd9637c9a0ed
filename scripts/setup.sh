#!/usr/bin/env bash
# Create .venv (once) and install binwise with its test extras into it; then the test-only pieces:
# MindSpore in its own venv (it needs numpy < 2) and Debian's Chromium for the page test.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# torch and torchvision are pinned in pyproject.toml; on these machines pip takes them from local disk.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
bash scripts/setup-mindspore.sh
bash scripts/setup-browser.sh
