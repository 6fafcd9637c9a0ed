"""Small generated models for the inference tests, built once per test process.

A 0.35-width MobileNetV2 with TF 'SAME' padding (the padding ONNX export must get right), batch-norm
statistics from real photos and a random head (trained-head scale), so its classes get clearly
different probabilities and a wrong class order or a lost tensor would show.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

_DIR = Path(tempfile.mkdtemp(prefix="binwise-inference-tests-"))
atexit.register(shutil.rmtree, _DIR, ignore_errors=True)


@functools.cache
def tiny_model() -> Path:
    import numpy as np
    import torch

    from binwise.images import load_for_model
    from binwise.model.network import MobileNetV2
    from binwise.model.file import ModelFile, save_model
    from binwise.preprocessing import MINUS_ONE_TO_ONE
    from binwise.paths import resolve_data
    from binwise.taxonomy.classes import GARBAGE26

    torch.manual_seed(0)
    model = MobileNetV2(num_classes=26, width_mult=0.35, padding="tf_same")
    photos = sorted((resolve_data() / "train").rglob("*.jpg"))[::70]
    pixels = torch.from_numpy(np.stack([load_for_model(p, MINUS_ONE_TO_ONE) for p in photos]))
    with torch.no_grad():
        # batch-norm statistics from real photos (cumulative average), else random-init features
        # vanish; then a random head centred on the mean feature, so photos get different classes
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None
        model.train()(pixels)
        model.eval()
        head = model.head.classifier
        head.weight.normal_(0, 0.1)
        head.bias.copy_(-head.weight @ model.backbone(pixels).mean((0, 2, 3)))
    path = _DIR / "tiny.safetensors"
    save_model(path, ModelFile(model, GARBAGE26, MINUS_ONE_TO_ONE, provenance={"source": "test"}))
    return path


@functools.cache
def tiny_onnx() -> Path:
    from binwise.export import export_onnx

    return export_onnx(tiny_model(), _DIR / "tiny.onnx")


@functools.cache
def tiny_onnx_int8(int8_format: str = "qdq") -> Path:
    from binwise.export import export_onnx

    return export_onnx(tiny_model(), _DIR / f"tiny.int8-{int8_format}.onnx", int8=True, calibration_count=26,
                       int8_format=int8_format)


def garbage26_test_photos(count: int | None = None) -> list[Path]:
    from binwise.paths import resolve_data

    photos = sorted((resolve_data() / "test").rglob("*.jpg"))
    return photos[:count] if count else photos
