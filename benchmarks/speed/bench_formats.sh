#!/usr/bin/env bash
# Speed of every export of one model, each file measured alone with `binwise bench` (decode,
# preprocess and model; one-photo latency and a folder run), rounds interleaved by --repeat.
# Run it on an idle machine: two jobs on the cores distort every number.
#
#   bash benchmarks/speed/bench_formats.sh [MODEL] [OUT_DIR]
#
# MODEL defaults to the quickstart's runs/garbage26/model.safetensors; the exports and one JSON
# per file go to OUT_DIR (default /tmp/binwise-bench-formats). The TFLite exports need the
# tflite-export extra in .venv-litert (scripts/setup-litert.sh); without it they are skipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
model=${1:-runs/garbage26/model.safetensors}
out=${2:-/tmp/binwise-bench-formats}
mkdir -p "$out"

export_to() {  # BINWISE FILE [export options...]: export once, reuse on reruns
    local binwise=$1 file=$2; shift 2
    [ -f "$out/$file" ] || "$binwise" export "$model" --out "$out/$file" "$@"
    files+=("$file")
}
files=()
export_to .venv/bin/binwise fp32.onnx
export_to .venv/bin/binwise int8.onnx --int8
export_to .venv/bin/binwise int8-reduced.onnx --int8 --int8-weights reduced
export_to .venv/bin/binwise int8-qoperator.onnx --int8 --int8-format qoperator
if [ -x .venv-litert/bin/binwise ]; then  # the TFLite converter lives in its own venv
    export_to .venv-litert/bin/binwise fp32.tflite --format tflite
    export_to .venv-litert/bin/binwise int8.tflite --format tflite --int8
else
    echo "no .venv-litert: skipping the TFLite files (bash scripts/setup-litert.sh)" >&2
fi
for file in "${files[@]}"; do
    .venv/bin/binwise bench "$out/$file" --photos 300 --runs 100 --repeat 3 --json "$out/$file.json"
done
