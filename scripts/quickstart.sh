#!/usr/bin/env bash
# The main job on a fresh machine: set up, train on garbage26, evaluate on its test split, then
# predict a few test photos. Data and weights come from ../shared (or $BINWISE_DATA /
# $BINWISE_PRETRAINED); see the README.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -c "import binwise" 2>/dev/null || bash scripts/setup.sh
RUN=${RUN:-runs/garbage26}
.venv/bin/binwise train --mode head --run-dir "$RUN"   # the fast path; plain `binwise train` is auto mode
.venv/bin/binwise eval "$RUN/model.safetensors" --out "$RUN/eval"
DATA=$(.venv/bin/python -c "from binwise.paths import resolve_data; print(resolve_data())")
.venv/bin/binwise predict "$RUN/model.safetensors" "$DATA/test/Battery" "$DATA/test/Banana Peel" \
    --grid "$RUN/predictions.png"
echo "model: $RUN/model.safetensors   report: $RUN/eval   figure: $RUN/predictions.png"
