"""Where one photo's time goes in ``Classifier.predict``, and what the ONNX model alone costs.

    python benchmarks/speed/inference_profile.py MODEL.onnx [--data DIR] [--calls 1000] [--json out.json]

Prints (and writes as JSON):
- the time of ``predict`` on the bench's 500x375 JPEG split by ``cProfile`` into onnxruntime,
  Pillow's resize, JPEG decoding and the rest (the profiler itself inflates the Python part);
- the model alone: batch 1 on two threads, and photos per second on one thread at batch sizes 1
  to 32 (what each folder worker gets);
- the model's costliest nodes on one thread at batch 1, by onnxruntime's profiler, with their
  share of the model's time.
Each measurement uses one onnxruntime session at a time: a second two-threaded session in the
same process keeps spinning between its runs and slows the first.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from binwise.evaluation.bench import bench_photos, image_library, sample_jpeg
from binwise.inference.onnx_runner import onnx_session
from binwise.paths import resolve_data
from binwise.inference.classifier import Classifier

# cProfile entries -> the part of predict they belong to
PARTS = {"onnxruntime": "onnxruntime_pybind11_state.run", "resize": "'resize' of 'ImagingCore'",
         "decode": "'decode' of 'ImagingDecoder'"}


def predict_breakdown(model: str, jpeg: bytes, calls: int) -> dict:
    classifier = Classifier.load(model, threads=2)
    for _ in range(50):
        classifier.predict(jpeg)
    profile = cProfile.Profile()
    profile.enable()
    for _ in range(calls):
        classifier.predict(jpeg)
    profile.disable()
    stats = pstats.Stats(profile).stats
    total = sum(entry[2] for entry in stats.values())  # own time of every function
    ms = {part: 0.0 for part in PARTS}
    for (filename, line, name), entry in stats.items():
        for part, key in PARTS.items():
            if key in f"{filename}:{name}":
                ms[part] += entry[2]
    result = {part: 1000 * seconds / calls for part, seconds in ms.items()}
    result["rest"] = 1000 * total / calls - sum(result.values())
    result["total"] = 1000 * total / calls
    return result


def model_alone(model: str) -> dict:
    pixels = np.random.default_rng(0).integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
    session = onnx_session(model, model, threads=2)
    name = session.get_inputs()[0].name
    for _ in range(30):
        session.run(None, {name: pixels[:1]})
    times = []
    for _ in range(300):
        start = time.perf_counter()
        session.run(None, {name: pixels[:1]})
        times.append(time.perf_counter() - start)
    del session
    single = onnx_session(model, model, threads=1)
    per_batch = defaultdict(list)
    for _ in range(4):
        for batch in (1, 2, 4, 8, 16, 32):
            runs = max(1, 64 // batch)
            start = time.perf_counter()
            for _ in range(runs):
                single.run(None, {name: pixels[:batch]})
            per_batch[batch].append(runs * batch / (time.perf_counter() - start))
    return {"batch1_two_threads_p50_ms": 1000 * float(np.median(times)),
            "one_thread_images_per_s": {b: float(np.median(v)) for b, v in per_batch.items()}}


def costliest_nodes(model: str, top: int = 8) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        session = onnx_session(model, model, threads=1, profile_prefix=os.path.join(tmp, "profile"))
        name = session.get_inputs()[0].name
        pixels = np.random.default_rng(0).integers(0, 256, (1, 224, 224, 3), dtype=np.uint8)
        for _ in range(200):
            session.run(None, {name: pixels})
        with open(session.end_profiling()) as f:
            events = json.load(f)
    per_node = defaultdict(list)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            per_node[(event["name"][:-len("_kernel_time")], event["args"]["op_name"])].append(event["dur"])
    medians = {node: float(np.median(durations[20:])) for node, durations in per_node.items()}
    total = sum(medians.values())
    ranked = sorted(medians.items(), key=lambda item: -item[1])[:top]
    return [{"node": node, "op": op, "us": us, "share": us / total} for (node, op), us in ranked]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="an .onnx model from binwise export")
    parser.add_argument("--data", help="dataset for the sample photo (default: binwise.paths.resolve_data)")
    parser.add_argument("--calls", type=int, default=1000, help="profiled predict calls")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args(argv)

    jpeg = sample_jpeg(bench_photos(resolve_data(args.data), 1)[0])
    results = {"image_library": image_library(), "predict_ms_under_cprofile": predict_breakdown(args.model, jpeg, args.calls),
               **model_alone(args.model), "costliest_nodes_one_thread_batch1": costliest_nodes(args.model)}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
