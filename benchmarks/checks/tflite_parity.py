"""Does the TFLite export keep the model? fp32 and int8 .tflite against PyTorch on the garbage26 test split.

    PYTHONPATH=src .venv-litert/bin/python benchmarks/checks/tflite_parity.py --model runs/garbage26/model.safetensors

Needs a Python with the ``tflite-export`` extra (litert-torch, which brings LiteRT). Exports the
model to fp32 and int8 TFLite as ``binwise export`` does (int8 calibrated on 300 training photos),
runs all three on every test photo and reports the fp32 logits' relative L2 distance to PyTorch
(target <= 1e-4), how often int8's top-1 agrees with fp32's (target >= 99%), each one's top-1
accuracy (int8 drop target <= 1 point) and the export times. With a model file that has reference
features (the unknown score), also the statuses (ok / unsure / unknown) of each file against the
model file's on the test photos and on ``unsure_unknown.py``'s non-garbage images, and the
similarity's largest change. Speed is ``binwise bench`` on the written files (see
docs/benchmarks.md).
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
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from binwise.export.tflite_file import export_tflite
from binwise.images import is_image_file, load_crop
from binwise.model.file import load_model
from binwise.paths import resolve_data
from binwise.inference.classifier import Classifier
from binwise.preprocessing import with_pixel_input

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

REPO = Path(__file__).resolve().parents[2]


def test_photos(model_file, data: Path | None = None) -> tuple[list[Path], np.ndarray]:
    """The test split's photos (of garbage26, or of ``data``) and their class indices (folders are
    the English class names)."""
    index = {name: i for i, name in enumerate(model_file.taxonomy.classes_en)}
    test = (data or resolve_data()) / "test"
    pairs = [(p, index[d.name]) for d in sorted(test.iterdir()) if d.is_dir()
             for p in sorted(d.iterdir()) if is_image_file(p)]
    return [p for p, _ in pairs], np.array([label for _, label in pairs])


def relative_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per photo: |a - b| / |b|."""
    return np.linalg.norm(a - b, axis=1) / np.linalg.norm(b, axis=1)


def statuses_against(model: str, files: dict[str, Path], test: list[Path]) -> dict:
    """Per exported file, on the test photos and on unsure_unknown.py's non-garbage images: how many
    statuses are the model file's, which changed, and the similarity's largest change."""
    from studies.unsure_unknown import real_photos, rendered_images

    with tempfile.TemporaryDirectory() as tmp:
        sets = {"garbage26_test": test, "not_garbage": real_photos([]) + [p for p, _ in rendered_images(Path(tmp))]}
        want = {name: Classifier.load(model).predict(paths) for name, paths in sets.items()}
        results = {}
        for precision, path in files.items():
            classifier = Classifier.load(path)
            results[precision] = {}
            for name, paths in sets.items():
                got = classifier.predict(paths)
                results[precision][name] = {
                    "photos": len(paths), "same_status": sum(g.status == w.status for g, w in zip(got, want[name])),
                    "statuses": dict(Counter(g.status for g in got)),
                    "model_file_statuses": dict(Counter(w.status for w in want[name])),
                    "changed": [f"{Path(g.source).name}: {w.status} -> {g.status}"
                                for g, w in zip(got, want[name]) if g.status != w.status],
                    "similarity_max_change": max(abs(g.similarity - w.similarity) for g, w in zip(got, want[name]))}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a binwise .safetensors model trained on garbage26")
    parser.add_argument("--out-dir", default="/tmp/binwise-tflite-parity", help="where the .tflite files go")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "tflite_parity" /
                                              f"tflite_parity_{datetime.date.today()}.json"))
    args = parser.parse_args()

    model_file = load_model(args.model)
    photos, labels = test_photos(model_file)
    pixels = np.stack([load_crop(p, model_file.preprocessing) for p in photos])
    with torch.no_grad():
        torch_logits = with_pixel_input(model_file.model, model_file.preprocessing)(torch.from_numpy(pixels)).numpy()

    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files, seconds, logits = {}, {}, {}
    for precision in ("fp32", "int8"):
        start = time.perf_counter()
        files[precision] = export_tflite(args.model, out_dir / f"model.{precision}.tflite", int8=precision == "int8")
        seconds[precision] = time.perf_counter() - start
        runner = Classifier.load(files[precision]).runner
        outputs = [runner(pixels[i:i + 32]) for i in range(0, len(pixels), 32)]
        logits[precision] = np.concatenate([o[0] if isinstance(o, tuple) else o for o in outputs])

    distance = relative_l2(logits["fp32"], torch_logits)
    top1 = {name: value.argmax(1) for name, value in (("torch", torch_logits), *logits.items())}
    accuracy = {name: float((predicted == labels).mean()) for name, predicted in top1.items()}
    results = {
        "model": str(args.model), "photos": len(photos), "date": str(datetime.date.today()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                   f"torch {torch.__version__}",
        "fp32_relative_l2": {"overall": float(np.linalg.norm(logits["fp32"] - torch_logits)
                                              / np.linalg.norm(torch_logits)),
                             "max_photo": float(distance.max()), "median_photo": float(np.median(distance))},
        "fp32_same_top1_as_torch": float((top1["fp32"] == top1["torch"]).mean()),
        "int8_same_top1_as_fp32": float((top1["int8"] == top1["fp32"]).mean()),
        "int8_relative_l2_to_fp32": float(np.linalg.norm(logits["int8"] - logits["fp32"]) / np.linalg.norm(logits["fp32"])),
        "top1_accuracy": accuracy,
        "int8_accuracy_drop_points": 100 * (accuracy["fp32"] - accuracy["int8"]),
        "export_seconds": seconds,
        "file_mb": {name: path.stat().st_size / 1e6 for name, path in files.items()},
        "files": {name: str(path) for name, path in files.items()},
    }
    if model_file.reference_features is not None:
        results["statuses_against_model_file"] = statuses_against(args.model, files, photos)
    print(json.dumps(results, indent=2))
    Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
