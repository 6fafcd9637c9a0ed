"""Does int8 cost accuracy? fp32 PyTorch, fp32 ONNX and int8 ONNX on the garbage26 test split.

    .venv/bin/python benchmarks/checks/int8_accuracy.py [--model garbage26.safetensors] [--json out.json]

Without ``--model`` it first builds a real garbage26 model quickly, a linear probe: the ImageNet
TFLite backbone (``binwise.weights.tflite.read_tflite``) with a linear head fitted on its pooled
features of the training photos (kept in ``--probe``, reused when present). It then exports fp32
and int8 ONNX in each int8 format (QDQ and QOperator, calibrated on training photos) and reports
each one's top-1 accuracy on the test photos and how often int8 agrees with fp32. Targets: agreement >= 99%, drop <= 1 point.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from binwise.export import export_onnx
from binwise.export.onnx_file import INT8_FORMATS
from binwise.images import is_image_file, load_for_model
from binwise.model.file import ModelFile, save_model
from binwise.model.network import MobileNetV2
from binwise.paths import resolve_data, resolve_pretrained
from binwise.inference.classifier import Classifier
from binwise.taxonomy.classes import GARBAGE26


def labelled_photos(split_dir: Path) -> list[tuple[Path, int]]:
    """(photo, GARBAGE26 index) for an ImageFolder split whose folders are the English class names."""
    index = {name: i for i, name in enumerate(GARBAGE26.classes_en)}
    return [(p, index[d.name]) for d in sorted(split_dir.iterdir()) if d.is_dir()
            for p in sorted(d.iterdir()) if is_image_file(p)]


def linear_probe(out: Path, data_dir: Path, steps: int = 500) -> None:
    """ImageNet backbone + a softmax-regression head fitted on the training photos' pooled features."""
    from binwise.weights.tflite import read_tflite

    imagenet = read_tflite(resolve_pretrained())
    pre = imagenet.preprocessing
    train = labelled_photos(data_dir / "train")
    features = []
    with torch.inference_mode():
        for start in range(0, len(train), 64):
            batch = torch.from_numpy(np.stack([load_for_model(p, pre) for p, _ in train[start:start + 64]]))
            features.append(imagenet.model.backbone(batch).mean((2, 3)))
    x = torch.cat(features)
    y = torch.tensor([label for _, label in train])
    head = torch.nn.Linear(x.shape[1], GARBAGE26.num_classes)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2, weight_decay=1e-4)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x), y)
        loss.backward()
        optimizer.step()
    model = MobileNetV2(num_classes=GARBAGE26.num_classes, padding="tf_same")
    model.backbone.load_state_dict(imagenet.model.backbone.state_dict())
    model.head.classifier.load_state_dict(head.state_dict())
    provenance = {"source": "benchmarks/checks/int8_accuracy.py linear probe", "backbone": imagenet.provenance,
                  "head": f"softmax regression, Adam lr 1e-2 wd 1e-4, {steps} full-batch steps on "
                          f"{len(train)} training photos; final train loss {loss.item():.4f}"}
    save_model(out, ModelFile(model.eval(), GARBAGE26, pre, provenance))


def accuracy_and_predictions(classifier: Classifier, test: list[tuple[Path, int]]) -> tuple[float, np.ndarray]:
    predictions = np.array([p.top[0].index for p in classifier.predict([p for p, _ in test], top_k=1)])
    labels = np.array([label for _, label in test])
    return float((predictions == labels).mean()), predictions


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="a garbage26 .safetensors model (default: build the linear probe)")
    parser.add_argument("--probe", default=str(Path(tempfile.gettempdir()) / "binwise-garbage26-probe.safetensors"),
                        help="where the linear probe model is kept between runs")
    parser.add_argument("--data", help="the garbage26 dataset (default: binwise.paths.resolve_data)")
    parser.add_argument("--calibration-count", type=int, default=300)
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args(argv)

    data_dir = resolve_data(args.data)
    model = Path(args.model or args.probe)
    if not args.model and not model.exists():
        start = time.time()
        linear_probe(model, data_dir)
        print(f"built the linear probe {model} in {time.time() - start:.0f} s", file=sys.stderr)
    test = labelled_photos(data_dir / "test")
    results = {"model": str(model), "test_photos": len(test), "calibration_photos": args.calibration_count}
    with tempfile.TemporaryDirectory() as tmp:
        files = {"torch-fp32": model, "onnx-fp32": export_onnx(model, Path(tmp) / "fp32.onnx")}
        for int8_format in INT8_FORMATS:
            start = time.time()
            files[f"onnx-int8-{int8_format}"] = export_onnx(
                model, Path(tmp) / f"int8-{int8_format}.onnx", int8=True, calibration_dir=data_dir,
                calibration_count=args.calibration_count, int8_format=int8_format)
            results[f"int8_{int8_format}_export_s"] = round(time.time() - start, 1)
        predictions = {}
        for name, path in files.items():
            results[f"{name}_top1"], predictions[name] = accuracy_and_predictions(Classifier.load(path), test)
    results["onnx_fp32_agreement_with_torch"] = float((predictions["onnx-fp32"] == predictions["torch-fp32"]).mean())
    for int8_format in INT8_FORMATS:
        name = f"onnx-int8-{int8_format}"
        results[f"int8_{int8_format}_agreement_with_fp32"] = float((predictions[name] == predictions["onnx-fp32"]).mean())
        results[f"int8_{int8_format}_drop_points"] = 100 * (results["onnx-fp32_top1"] - results[f"{name}_top1"])
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
