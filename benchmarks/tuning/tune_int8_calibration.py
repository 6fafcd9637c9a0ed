"""Choose the int8 calibration on training photos outside the calibration set (never test).

For each model and each calibration in ``binwise.export.onnx_file.CALIBRATIONS``, export int8 ONNX
(calibrated on the usual ``--calibration-count`` training photos) and compare its class
probabilities with the fp32 ONNX export on ``--photos`` other training photos: mean KL divergence
from fp32 (the choice: lower is closer), mean L1 distance of the probabilities, and top-1
agreement. The models were trained on these photos, so agreement is near 100% for every
candidate; the KL divergence still tells how far int8 strays.

    python benchmarks/tuning/tune_int8_calibration.py MODEL [MODEL ...] [--data DIR] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from binwise.export.onnx_file import CALIBRATIONS, DEFAULT_CALIBRATION_COUNT, calibration_photos, export_onnx
from binwise.images import is_image_file, load_crop
from binwise.paths import resolve_data
from binwise.inference.classifier import Classifier


def held_out_photos(data_dir: Path, calibration: list[Path], count: int, seed: int = 1) -> list[Path]:
    used = set(calibration)
    rest = [p for p in sorted((data_dir / "train").rglob("*")) if is_image_file(p) and p not in used]
    random.Random(seed).shuffle(rest)
    return rest[:count]


def closeness(probabilities: np.ndarray, reference: np.ndarray) -> dict:
    kl = np.sum(reference * (np.log(reference + 1e-12) - np.log(probabilities + 1e-12)), axis=1)
    return {"kl_from_fp32": float(kl.mean()), "prob_l1": float(np.abs(probabilities - reference).sum(1).mean()),
            "top1_agreement": float((probabilities.argmax(1) == reference.argmax(1)).mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", help="binwise .safetensors models")
    parser.add_argument("--data", help="the dataset (default: binwise.paths.resolve_data)")
    parser.add_argument("--photos", type=int, default=520, help="held-out training photos to compare on")
    parser.add_argument("--out", help="write the results as JSON here too")
    args = parser.parse_args(argv)

    data_dir = resolve_data(args.data)
    held_out = held_out_photos(data_dir, calibration_photos(data_dir, DEFAULT_CALIBRATION_COUNT), args.photos)
    results = {"machine": f"{platform.processor() or platform.machine()}", "held_out_photos": len(held_out),
               "calibration_photos": DEFAULT_CALIBRATION_COUNT, "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            fp32 = Classifier.load(export_onnx(model, Path(tmp) / "fp32.onnx"))
            pixels = np.stack([load_crop(p, fp32.preprocessing) for p in held_out])
            reference = fp32.predict_arrays(pixels)
            rows = results["models"][str(model)] = {}
            for calibration in CALIBRATIONS:
                start = time.time()
                int8 = export_onnx(model, Path(tmp) / "int8.onnx", int8=True, calibration_dir=data_dir,
                                   calibration=calibration)
                rows[calibration] = closeness(Classifier.load(int8).predict_arrays(pixels), reference)
                rows[calibration]["export_s"] = round(time.time() - start, 1)
                print(model, calibration, json.dumps(rows[calibration]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
