"""Choosing the ONNX int8 weight range and calibration on validation photos, never on the test split.

    .venv/bin/python benchmarks/tuning/tune_int8_weights.py [--model runs/garbage26/model.safetensors] [--folds 5] [--json OUT]

Every combination of ``onnx_file.WEIGHT_RANGES``, ``onnx_file.CALIBRATIONS`` and
``onnx_file.CONV_PRECISIONS`` for the depthwise and the first convolutions (or those chosen with
--weights, --calibrations, --depthwise, --first-conv; --activations symmetric adds TensorRT's form,
with the symmetric weight ranges only, run as binwise runs it on the CPU; QDQ, calibrated
on 300 train photos as ``binwise export --int8`` does) is measured on the validation model of
``held_out.py`` (the quickstart's probe trained without 20% of each class; with ``--folds``, on
that many disjoint such splits, each with its own model, and over all) against its fp32 export
on those held-out photos and their mirror images (twice the photos, to tell variants apart: the
ones that differ are near ties): top-1 agreement, mean KL divergence from fp32, relative L2 of the logits.
With ``--model``, each is then applied to that model and measured on the test split (reported,
never used to choose).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from binwise.export import export_onnx
from binwise.model.status import softmax
from binwise.export.onnx_file import ACTIVATION_RANGES, CALIBRATIONS, CONV_PRECISIONS, WEIGHT_RANGES
from binwise.images import is_image_file
from binwise.inference.classifier import Classifier
from binwise.paths import resolve_data
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

from common import FOLDS, REPO, over_folds, validation_model, validation_trees


def photos_of(split: Path) -> list[Path]:
    return sorted(p for p in split.rglob("*") if is_image_file(p))


def closeness(int8_logits: np.ndarray, logits: np.ndarray) -> dict:
    p, q = softmax(logits), softmax(int8_logits)
    return {"top1_agreement": float((int8_logits.argmax(1) == logits.argmax(1)).mean()),
            "disagreements": int((int8_logits.argmax(1) != logits.argmax(1)).sum()),
            "kl_from_fp32": float(np.sum(p * (np.log(p + 1e-12) - np.log(q + 1e-12)), 1).mean()),
            "logits_relative_l2_median": float(np.median(np.linalg.norm(int8_logits - logits, axis=1)
                                                         / np.linalg.norm(logits, axis=1)))}


def measure(model: Path, calibration_dir: Path, photos: list[Path], tmp: Path, variants: list[tuple],
            mirrored: bool = False) -> dict:
    fp32 = Classifier.load(export_onnx(model, tmp / "fp32.onnx"))
    pixels = np.stack([fp32.load_image(p) for p in photos])
    if mirrored:
        pixels = np.concatenate([pixels, pixels[:, :, ::-1]])
    logits = fp32.runner(pixels)[0]
    rows = {}
    for weight_range, calibration, depthwise, first_conv, activations in variants:
        start = time.time()
        int8 = export_onnx(model, tmp / "int8.onnx", int8=True, calibration_dir=calibration_dir,
                           calibration=calibration, weight_range=weight_range, depthwise=depthwise,
                           first_conv=first_conv, activations=activations)
        name = (f"{weight_range}/{calibration}" + ("/depthwise-float" if depthwise == "float" else "")
                + ("/first-conv-float" if first_conv == "float" else "")
                + ("/symmetric-activations" if activations == "symmetric" else ""))
        row = rows[name] = closeness(Classifier.load(int8).runner(pixels)[0], logits)
        row["export_s"] = round(time.time() - start, 1)
        print(model.name, name, json.dumps(row), flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="also measure this garbage26 model on the test split")
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "binwise-held-out",
                        help="where the validation tree and model go (kept for reruns)")
    parser.add_argument("--folds", type=int, default=1,
                        help=f"measure on this many disjoint validation folds (1-{FOLDS}; each trains its own "
                             "validation model), and over all of them")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" /
                                              f"tune_int8_weights_{datetime.date.today()}.json"))
    parser.add_argument("--weights", nargs="*", default=list(WEIGHT_RANGES), choices=WEIGHT_RANGES)
    parser.add_argument("--calibrations", nargs="*", default=list(CALIBRATIONS), choices=CALIBRATIONS)
    parser.add_argument("--depthwise", nargs="*", default=list(CONV_PRECISIONS), choices=CONV_PRECISIONS)
    parser.add_argument("--first-conv", nargs="*", default=list(CONV_PRECISIONS), choices=CONV_PRECISIONS)
    parser.add_argument("--activations", nargs="*", default=["unsigned"], choices=ACTIVATION_RANGES)
    args = parser.parse_args()
    variants = [(w, c, d, f, a) for w in args.weights for c in args.calibrations for d in args.depthwise
                for f in args.first_conv for a in args.activations
                if not (a == "symmetric" and w == "unsigned")]  # symmetric activations need symmetric weights

    trees = validation_trees(args.tree, args.folds)
    results = {"command": " ".join(["python", *sys.argv]),
               "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared), Python {platform.python_version()}",
               "cpu_has_vnni": Path("/proc/cpuinfo").exists() and "vnni" in Path("/proc/cpuinfo").read_text(),
               "int8_format": "qdq"}
    with tempfile.TemporaryDirectory() as tmp:
        folds = []
        for tree in trees:
            held_out = photos_of(tree / "test")
            folds.append({"tree": str(tree), "photos": len(held_out), "with_mirror_images": 2 * len(held_out),
                          "variants": measure(validation_model(tree), tree, held_out, Path(tmp), variants,
                                              mirrored=True)})
        results["validation"] = folds[0]  # fold 0, the tree of earlier runs
        if len(folds) > 1:
            results["validation_folds"] = folds
            results["validation_over_folds"] = over_folds([f["variants"] for f in folds],
                                                          [f["with_mirror_images"] for f in folds])
            for name, row in results["validation_over_folds"].items():
                print("all folds", name, json.dumps(row), flush=True)
        if args.model:
            test = photos_of(resolve_data() / "test")
            results["test_reported_only"] = {"model": str(args.model), "photos": len(test),
                                             "variants": measure(args.model, resolve_data(), test, Path(tmp), variants)}
    Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
