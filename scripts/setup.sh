#!/usr/bin/env bash
# Create .venv (once) and install binwise with its test extras into it; then the test-only pieces:
# MindSpore in its own venv (it needs numpy < 2) and Debian's Chromium for the page test.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# A first setup fills about 9 GB (torch's build here is 6 GB in .venv, MindSpore 3 GB in
# .venv-mindspore). Say so up front rather than let pip stop half-way with "No space left on device".
if [ ! -x .venv/bin/python ] || [ ! -x .venv-mindspore/bin/python ]; then
    free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1024 / 1024 ))
    if [ "$free_gib" -lt 10 ]; then
        echo "setup: only ${free_gib} GiB free on the disk holding $(pwd); a first setup needs about 10 GiB" \
             "(.venv 6 GB with torch, .venv-mindspore 3 GB). Free some space and run scripts/setup.sh again." >&2
        exit 1
    fi
fi
if [ ! -x .venv/bin/python ]; then
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# torch and torchvision are pinned in pyproject.toml; on these machines pip takes them from local disk.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'
bash scripts/setup-mindspore.sh
bash scripts/setup-browser.sh
