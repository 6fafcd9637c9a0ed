"""``binwise bench MODEL``: inference speed of torch eager, onnxruntime fp32 and int8, side by side."""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="measure one-photo latency and folder throughput (decode "
                              "included) for torch, onnxruntime fp32 and int8")
    p.add_argument("model", help="a binwise .safetensors model file (measured against its ONNX exports), "
                   "or an .onnx or .tflite file (measured alone)")
    p.add_argument("--onnx", help="its fp32 .onnx export (default: exported to a temporary file)")
    p.add_argument("--int8", help="its int8 .onnx export (default: exported to a temporary file)")
    p.add_argument("--data", help="dataset whose test (then train) photos make the folder "
                   "(default: $BINWISE_DATA or ../shared/data/garbage26)")
    p.add_argument("--photos", type=int, default=500, help="photos in the folder run (default 500)")
    p.add_argument("--runs", type=int, default=100, help="timed one-photo calls (default 100)")
    p.add_argument("--threads", type=int, help="model threads (default: all CPUs)")
    p.add_argument("--workers", type=int, help="batches in flight in the folder run, each decoded and run "
                   "by its own thread (default: --threads)")
    p.add_argument("--batch-size", type=int, default=32, help="folder batch size (default 32)")
    p.add_argument("--backends", help="comma-separated subset of torch,onnx-fp32,onnx-int8 (default: all "
                   "three for a .safetensors model)")
    p.add_argument("--repeat", type=int, default=1, help="rounds of every backend, interleaved; the "
                   "table gives each backend's median and range over them (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers and settings as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.bench import format_table, run_bench
    from ..errors import BinwiseError
    from ..inference.classifier import EXPORTED_SUFFIXES
    from .process import own_the_process

    if args.model.lower().endswith(EXPORTED_SUFFIXES) and (args.onnx or args.int8 or args.backends):
        raise BinwiseError("an exported model is measured alone; --onnx, --int8 and --backends go with a "
                           ".safetensors model", args.model)
    backends = tuple(b.strip() for b in (args.backends or "torch,onnx-fp32,onnx-int8").split(",") if b.strip())
    unknown = set(backends) - {"torch", "onnx-fp32", "onnx-int8"}
    if unknown or not backends:
        raise BinwiseError(f"unknown backends {sorted(unknown)}; choose from torch, onnx-fp32, onnx-int8")
    if args.repeat < 1 or args.runs < 1 or args.photos < 1:
        raise BinwiseError("--repeat, --runs and --photos must be at least 1")
    own_the_process(args.threads)
    results = run_bench(args.model, args.onnx, args.int8, args.data, args.photos, args.runs,
                        args.threads, args.batch_size, args.workers, backends, args.repeat,
                        log=lambda line: print(line, file=sys.stderr))
    print(format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
