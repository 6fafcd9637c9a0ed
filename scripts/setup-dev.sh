#!/usr/bin/env bash
# The developer's set-up: the main job's (scripts/setup.sh), then the test tools (pytest, httpx,
# LiteRT, Playwright), MindSpore in its own .venv-mindspore (the checkpoint and MINDIR tests; it
# needs numpy < 2), the TFLite converter in its own .venv-litert (the TFLite export tests) and
# Debian's Chromium (the page tests) and PostgreSQL server (the shared feedback store's tests). About
# 10 GB more than scripts/setup.sh.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv-mindspore/bin/python ] || [ ! -x .venv-litert/bin/python ]; then
    need_gib=$([ -x .venv/bin/python ] && echo 11 || echo 17)  # .venv-mindspore 3 GB, .venv-litert 7 GB, .venv 6 GB
    free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1024 / 1024 ))
    if [ "$free_gib" -lt "$need_gib" ]; then
        echo "setup-dev: only ${free_gib} GiB free on the disk holding $(pwd); this set-up needs about" \
             "${need_gib} GiB (.venv 6 GB with torch, .venv-mindspore 3 GB, .venv-litert 7 GB). Free some space and run it again." >&2
        exit 1
    fi
fi
bash scripts/setup.sh
.venv/bin/python -m pip install --quiet -e '.[train,test]'
bash scripts/setup-mindspore.sh
bash scripts/setup-litert.sh
bash scripts/setup-browser.sh
bash scripts/setup-postgres.sh
