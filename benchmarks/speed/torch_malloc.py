"""Why PyTorch eager CPU inference was up to 3x slower with glibc malloc than with tcmalloc.

    .venv/bin/python benchmarks/speed/torch_malloc.py MODEL.safetensors [--threads 2]

Runs the model at batch 1 and 32 in two fresh processes, with glibc's default settings and with
``binwise.inference.classifier.keep_freed_memory()`` (what the torch backend of ``Classifier`` calls), and
prints time, minor page faults and kernel time per call, and peak memory. With the defaults,
activations above glibc's mmap threshold are mmapped and unmapped on every call, so each call
faults them back in page by page.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time


def measure(model_path: str, threads: int, keep: bool) -> list[dict]:
    import torch

    from binwise.model.file import load_model
    from binwise.inference.classifier import keep_freed_memory

    if keep:
        keep_freed_memory()
    torch.set_num_threads(threads)
    model = load_model(model_path).model
    rows = []
    for batch, calls in ((1, 20), (32, 4)):
        x = torch.randn(batch, 3, 224, 224)
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for _ in range(calls):
                model(x)
            seconds, after = (time.perf_counter() - start) / calls, resource.getrusage(resource.RUSAGE_SELF)
        rows.append({"allocator": "glibc, keep_freed_memory()" if keep else "glibc defaults", "batch": batch,
                     "ms_per_call": round(seconds * 1000, 1),
                     "minor_faults_per_call": round((after.ru_minflt - before.ru_minflt) / calls),
                     "kernel_ms_per_call": round((after.ru_stime - before.ru_stime) / calls * 1000, 1),
                     "max_rss_mb": after.ru_maxrss // 1024})
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["default", "keep"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.model, args.threads, args.child == "keep")))
        return 0
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, __file__, args.model, "--threads", str(args.threads),
                              "--child", mode], check=True, capture_output=True, text=True).stdout
        for row in json.loads(out):
            print(f"{row['allocator']:<28} batch {row['batch']:>2}: {row['ms_per_call']:8.1f} ms/call "
                  f"{row['minor_faults_per_call']:>8} faults/call {row['kernel_ms_per_call']:7.1f} ms kernel/call "
                  f"peak RSS {row['max_rss_mb']} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
