#!/usr/bin/env bash
# Speed of every export of one model, each file measured alone with `binwise bench` (decode,
# preprocess and model; one-photo latency and a folder run), rounds interleaved by --repeat.
# Run it on an idle machine: two jobs on the cores distort every number.
#
#   bash benchmarks/bench_formats.sh [MODEL] [OUT_DIR]
#
# MODEL defaults to the quickstart's runs/garbage26/model.safetensors; the exports and one JSON
# per file go to OUT_DIR (default /tmp/binwise-bench-formats). The TFLite exports need the
# tflite-export extra in .venv-litert (scripts/setup-litert.sh); without it they are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-runs/garbage26/model.safetensors}
out=${2:-/tmp/binwise-bench-formats}
mkdir -p "$out"

export_to() {  # FILE [export options...]: export once, reuse on reruns
    local file=$1; shift
    [ -f "$out/$file" ] || .venv/bin/binwise export "$model" --out "$out/$file" "$@"
}
export_to fp32.onnx
export_to int8.onnx --int8
export_to int8-reduced.onnx --int8 --int8-weights reduced
export_to int8-qoperator.onnx --int8 --int8-format qoperator
files=(fp32.onnx int8.onnx int8-reduced.onnx int8-qoperator.onnx)
if [ -x .venv-litert/bin/binwise ]; then
    [ -f "$out/fp32.tflite" ] || .venv-litert/bin/binwise export "$model" --format tflite --out "$out/fp32.tflite"
    [ -f "$out/int8.tflite" ] || .venv-litert/bin/binwise export "$model" --format tflite --int8 --out "$out/int8.tflite"
    files+=(fp32.tflite int8.tflite)
else
    echo "no .venv-litert: skipping the TFLite files (bash scripts/setup-litert.sh)" >&2
fi
for file in "${files[@]}"; do
    .venv/bin/binwise bench "$out/$file" --photos 300 --runs 100 --repeat 3 --json "$out/$file.json"
done
