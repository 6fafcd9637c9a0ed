"""How closely the imported TFLite MobileNetV2 follows the reference TFLite interpreter, and what
batch-norm un-folding does to train mode: the numbers quoted in tests/test_weights_tflite.py,
tests/test_batchnorm.py and the README.

    .venv/bin/python benchmarks/checks/tflite_reference.py [--garbage-photos 40]

Needs ai-edge-litert (the reference interpreter), the TFLite file and the photos under ../shared.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses

import numpy as np
import torch
import torch.nn.functional as F
from ai_edge_litert.interpreter import Interpreter, OpResolverType

from binwise.images import load_for_model
from binwise.model.network import MobileNetV2
from binwise.paths import resolve_data, resolve_imagenet_samples, resolve_pretrained
from binwise.preprocessing import MINUS_ONE_TO_ONE
from binwise.weights.batchnorm import unfold_batchnorm
from binwise.weights.tflite import TFLiteGraph, match_mobilenet_v2, read_tflite


class Reference:
    """The reference interpreter with every intermediate tensor kept (no delegate)."""

    def __init__(self, path):
        self.interpreter = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True, num_threads=1,
                                       experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        self.interpreter.allocate_tensors()
        self.details = {d["index"]: d for d in self.interpreter.get_tensor_details()}

    def run(self, image_chw: np.ndarray) -> np.ndarray:
        """Run on the image quantized to uint8; return the float input that both models should see."""
        detail = self.interpreter.get_input_details()[0]
        scale, zero_point = detail["quantization"]
        quantized = np.clip(np.round(image_chw / scale + zero_point), 0, 255).astype(np.uint8)
        self.interpreter.set_tensor(detail["index"], quantized.transpose(1, 2, 0)[None])
        self.interpreter.invoke()
        return ((quantized.astype(np.float32) - zero_point) * scale)[None]

    def tensor(self, index: int) -> tuple[torch.Tensor, float]:
        """A tensor dequantized, NHWC as NCHW, and its quantization step."""
        scale, zero_point = self.details[index]["quantization"]
        values = (self.interpreter.get_tensor(index).astype(np.float32) - zero_point) * scale
        return torch.from_numpy(np.ascontiguousarray(values.transpose(0, 3, 1, 2))), scale


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@torch.no_grad()
def compare(model, reference, matched, image) -> tuple[float, list[int], list[int], list[float]]:
    """Relative L2 error of the logits, both top-5s, and per-layer errors in quantization steps."""
    x = torch.from_numpy(reference.run(image))
    expected = reference.tensor(matched.logits)[0].flatten()[1:]
    logits = model(x)[0]
    steps, layer_input = [], x
    for layer, output in zip(model.backbone.features, matched.layer_outputs):
        out, step = reference.tensor(output)
        steps.append(float((layer(layer_input) - out).abs().max()) / step)
        layer_input = out
    return (relative(logits, expected), logits.topk(5).indices.tolist(),
            np.argsort(-expected.numpy(), kind="stable")[:5].tolist(), steps)


def reference_section(garbage_photos: int) -> None:
    path = resolve_pretrained()
    imported = read_tflite(path)
    model, names = imported.model, imported.taxonomy.classes_en
    reference = Reference(path)
    matched = match_mobilenet_v2(TFLiteGraph(path.read_bytes(), path), MobileNetV2(num_classes=1000, padding="tf_same"))

    print(f"== imported {path.name} against the reference interpreter (same uint8 pixels) ==")
    worst_steps = np.zeros(len(matched.layer_outputs))
    for resize in (imported.preprocessing.resize_size, 256):
        pre = dataclasses.replace(imported.preprocessing, resize_size=resize)
        print(f"-- resize shorter side to {resize}, centre crop {pre.input_size} --")
        for photo in sorted(resolve_imagenet_samples().glob("*.[bj][mp]*")):
            error, ours, theirs, steps = compare(model, reference, matched, load_for_model(photo, pre))
            worst_steps = np.maximum(worst_steps, steps)
            print(f"{photo.name}: relative L2 {error:.4f}\n  binwise   top-5 {[names[i] for i in ours]}"
                  f"\n  reference top-5 {[names[i] for i in theirs]}")
    print("per layer, worst over these photos, max |error| in reference quantization steps:")
    print("  " + " ".join(f"{i}:{s:.2f}" for i, s in enumerate(worst_steps)))

    test = sorted((resolve_data() / "test").glob("*/*.jpg"))
    chosen = test[::max(1, len(test) // garbage_photos)][:garbage_photos]
    results = [compare(model, reference, matched, load_for_model(p, imported.preprocessing)) for p in chosen]
    errors = np.array([r[0] for r in results])
    print(f"-- {len(chosen)} garbage26 test photos --")
    print(f"relative L2 of logits: min {errors.min():.4f} median {np.median(errors):.4f} max {errors.max():.4f}")
    print(f"same top-1: {np.mean([r[1][0] == r[2][0] for r in results]):.2%}, "
          f"same top-5 set: {np.mean([set(r[1]) == set(r[2]) for r in results]):.2%}, "
          f"same top-5 list: {np.mean([r[1] == r[2] for r in results]):.2%}")


@torch.no_grad()
def batchnorm_section() -> None:
    data = resolve_data()
    train, test = sorted((data / "train").glob("*/*.jpg")), sorted((data / "test").glob("*/*.jpg"))
    load = lambda paths: torch.from_numpy(np.stack([load_for_model(p, MINUS_ONE_TO_ONE) for p in paths]))  # noqa: E731
    calibration, check = load(train[::len(train) // 64][:64]), load(test[::len(test) // 32][:32])
    folded = read_tflite(resolve_pretrained()).model
    unfolded = copy.deepcopy(folded)
    unfold_batchnorm(unfolded, calibration.split(16))

    print("== batch norm: 64 calibration photos (garbage26/train), 32 check photos (garbage26/test) ==")
    features = {}
    for name, model in (("folded", folded), ("unfolded", unfolded)):
        maps = model.eval().backbone(check)
        train_maps = copy.deepcopy(model).train().backbone(check)
        features[name] = maps
        pooled, train_pooled = maps.mean((2, 3)), train_maps.mean((2, 3))
        cosine = F.cosine_similarity(train_pooled, pooled)
        agree = (model.head(pooled).argmax(1) == model.head(train_pooled).argmax(1)).float().mean()
        print(f"{name}: train vs eval mode, relative L2: feature maps {relative(train_maps, maps):.3f}, "
              f"pooled {relative(train_pooled, pooled):.3f}; pooled cosine min {cosine.min():.3f} "
              f"median {cosine.median():.3f}; feature norm train {train_maps.norm():.1f} / eval {maps.norm():.1f}; "
              f"same ImageNet top-1 {agree:.0%}")
    print(f"eval mode change by un-folding: feature maps {relative(features['unfolded'], features['folded']):.2e}, "
          f"logits {relative(unfolded.head(features['unfolded']), folded.head(features['folded'])):.2e}")
    subset = calibration[:32]
    print(f"train vs eval mode on 32 of the calibration photos (BN batch noise alone): feature maps "
          f"{relative(copy.deepcopy(unfolded).train().backbone(subset), unfolded.eval().backbone(subset)):.3f}")
    print(f"train vs eval mode on all 64 calibration photos in one batch (exact algebra): feature maps "
          f"{relative(copy.deepcopy(unfolded).train().backbone(calibration), unfolded.eval().backbone(calibration)):.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--garbage-photos", type=int, default=40, help="garbage26 test photos to compare on")
    args = parser.parse_args()
    reference_section(args.garbage_photos)
    batchnorm_section()


if __name__ == "__main__":
    main()
