#!/usr/bin/env bash
# The main job's set-up: .venv with binwise and what training, evaluation, prediction, export and
# serving need (the 'train' extra: torch, torchvision, kornia, tflite), and a CJK font so
# figures can show the Chinese class and bin names. No test tools: scripts/setup-dev.sh adds those.
# Safe to run again: each step skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
# torch's build here fills about 5.6 GB of .venv. Say so up front rather than let pip stop half-way
# with "No space left on device".
if [ ! -x .venv/bin/python ]; then
    free_gib=$(( $(df -Pk . | awk 'NR == 2 {print $4}') / 1024 / 1024 ))
    if [ "$free_gib" -lt 7 ]; then
        echo "setup: only ${free_gib} GiB free on the disk holding $(pwd); .venv needs about 7 GiB" \
             "(torch is 5.6 GB). Free some space and run scripts/setup.sh again." >&2
        exit 1
    fi
    python3.11 -m venv .venv 2>/dev/null || python3 -m venv .venv
fi
# torch and torchvision are pinned in pyproject.toml; on these machines pip takes them from local disk.
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[train]'
if [ -f scripts/setup-fonts.sh ]; then
    bash scripts/setup-fonts.sh
fi
