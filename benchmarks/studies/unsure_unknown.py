"""Statuses on garbage26's test split and on photos that are not garbage: what the thresholds give.

    python benchmarks/studies/unsure_unknown.py MODEL [--data DIR] [--extra-photos DIR ...] [--exported FILE ...] [--name NAME]

MODEL is a model file from ``binwise train`` (its temperature and thresholds were chosen on
held-out training photos; nothing here chooses anything). Reports, into
benchmarks/results/<name>.json:

- garbage26 test: ECE (15 bins) at temperature 1 and at the model's, and coverage (status ok) and
  accuracy of the answered photos at the model's thresholds;
- not garbage: the share called unknown, and unknown or unsure, per kind; and, for each candidate
  unknown score (nearest-training-photo similarity, max softmax probability, max logit, energy),
  AUROC and FPR at 95% TPR of garbage26 test against these photos;
- with ``--exported`` (files ``binwise export`` made from MODEL: .onnx, .tflite): on the test
  photos and on the non-garbage ones, how many statuses and top-1 classes differ from MODEL's, and the largest difference in
  similarity.

The non-garbage photos are assembled from what is at hand: the ImageNet sample photos in
../shared/images/imagenet, matplotlib's sample photo, any folder given with --extra-photos (e.g.
scikit-image's ``skimage/data``), and rendered images (plain colours, noise, gradients,
checkerboards, text), written to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from binwise.model import status
from binwise.data.dataset import load_dataset
from binwise.images import is_image_file, load_crop, open_image
from binwise.model.file import load_model
from binwise.model.novelty import with_similarity
from binwise.paths import resolve_data
from binwise.inference.classifier import Classifier
from binwise.preprocessing import with_pixel_input

RENDERED_PER_KIND = 20


def real_photos(extra: list[Path]) -> list[Path]:
    import matplotlib

    here = Path(__file__).resolve().parents[2]
    folders = [here.parent / "shared" / "images" / "imagenet", Path(matplotlib.get_data_path()) / "sample_data", *extra]
    found = []
    for folder in folders:
        for path in sorted(folder.glob("*")) if folder.is_dir() else []:
            try:
                if is_image_file(path) and min(open_image(path).size) >= 64:  # icons and 8x8 test patterns are not photos
                    found.append(path)
            except Exception:  # noqa: BLE001  a sample file that is not a readable photo is not one of ours
                continue
    return found


def rendered_images(folder: Path, seed: int = 0) -> list[tuple[Path, str]]:
    rng = np.random.default_rng(seed)
    made = []

    def save(kind: str, i: int, image: Image.Image) -> None:
        path = folder / f"{kind}_{i}.png"
        image.save(path)
        made.append((path, kind))

    for i in range(RENDERED_PER_KIND):
        c1, c2 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        save("plain", i, Image.new("RGB", (320, 320), tuple(int(v) for v in c1)))
        save("noise", i, Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)))
        t = np.linspace(0, 1, 320)[None, :, None]
        save("gradient", i, Image.fromarray((c1 * (1 - t) + c2 * t).repeat(320, 0).astype(np.uint8)))
        cell = int(rng.integers(8, 80))
        board = ((np.arange(320)[:, None] // cell + np.arange(320)[None, :] // cell) % 2)[..., None]
        save("checkerboard", i, Image.fromarray(np.where(board, c1, c2).astype(np.uint8)))
        text = Image.new("RGB", (320, 320), tuple(int(v) for v in rng.integers(150, 256, 3)))
        draw = ImageDraw.Draw(text)
        for line in range(7):
            words = "".join(rng.choice(list("abcdefghijk LMNOPQRS 0123456789")) for _ in range(22))
            draw.text((8, 12 + 42 * line), words, fill=(0, 0, 0), font_size=int(rng.integers(14, 30)))
        save("text", i, text)
    return made


def scores(model_path: Path, photos: list[Path]) -> dict[str, np.ndarray]:
    """Logits and similarity of each photo through the model file in torch."""
    model_file = load_model(model_path)
    if model_file.reference_features is None:
        sys.exit(f"{model_path} has no reference features: train it with this binwise")
    scored = with_similarity(with_pixel_input(model_file.model, model_file.preprocessing), model_file.model,
                             model_file.reference_features)
    logits, similarity = [], []
    with torch.inference_mode():
        for start in range(0, len(photos), 32):
            pixels = np.stack([load_crop(p, model_file.preprocessing) for p in photos[start:start + 32]])
            out = scored(torch.from_numpy(pixels))
            logits.append(out[0].numpy())
            similarity.append(out[1].numpy())
    return {"logits": np.concatenate(logits), "similarity": np.concatenate(similarity)}


def auroc(garbage: np.ndarray, other: np.ndarray) -> float:
    """P(a non-garbage photo scores as less garbage-like than a garbage photo); ties count half."""
    return float((other[:, None] < garbage[None, :]).mean() + 0.5 * (other[:, None] == garbage[None, :]).mean())


def fpr_at_95_tpr(garbage: np.ndarray, other: np.ndarray) -> float:
    """Share of non-garbage photos above the score that keeps 95% of garbage photos."""
    return float((other >= np.quantile(garbage, 0.05)).mean())


def candidate_scores(out: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Higher = more like garbage, for every candidate unknown score."""
    logits = out["logits"].astype(np.float64)
    top = logits.max(1)
    return {"nearest_training_photo_similarity": out["similarity"],
            "max_softmax_probability": status.softmax(logits).max(1),
            "max_logit": top,
            "negative_energy": top + np.log(np.exp(logits - top[:, None]).sum(1))}


def agreement(reference: list, exported: list) -> dict:
    """How far an exported file's predictions are from the model file's, photo by photo."""
    def differ(attribute):
        return sum(getattr(a, attribute) != getattr(b, attribute) for a, b in zip(reference, exported))
    gaps = [abs(a.similarity - b.similarity) for a, b in zip(reference, exported)
            if a.similarity is not None and b.similarity is not None]
    return {"photos": len(reference), "statuses_differ": differ("status"),
            "statuses": dict(Counter(b.status for b in exported)),
            "top1_differs": sum(a.top[0].index != b.top[0].index for a, b in zip(reference, exported)),
            "similarity_max_abs_difference": max(gaps) if gaps else None,
            "similarity_missing": sum(b.similarity is None for b in exported)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("--data")
    parser.add_argument("--extra-photos", type=Path, nargs="*", default=[], metavar="DIR")
    parser.add_argument("--exported", type=Path, nargs="*", default=[], metavar="FILE",
                        help="exported files of MODEL (.onnx, .tflite) to compare with it")
    parser.add_argument("--name", default="unsure_unknown")
    args = parser.parse_args()

    dataset = load_dataset(resolve_data(args.data))
    test = [s.path for s in dataset.test]
    labels = np.array([s.label for s in dataset.test])
    clf = Classifier.load(args.model)
    cal = clf.calibration
    with tempfile.TemporaryDirectory() as tmp:
        others = [(p, "real photo") for p in real_photos(args.extra_photos)] + rendered_images(Path(tmp))
        paths = [p for p, _ in others]
        kinds = np.array([k for _, k in others])
        garbage_out, other_out = scores(args.model, test), scores(args.model, paths)
        predictions = clf.predict(paths)
        test_predictions = clf.predict(test)
        exported = {}
        for path in args.exported:
            other = Classifier.load(path)
            exported[str(path)] = {"garbage26_test": agreement(test_predictions, other.predict(test)),
                                   "not_garbage": agreement(predictions, other.predict(paths))}

    probabilities = np.array([[s.probability for s in sorted(p.top, key=lambda s: s.index)]
                              for p in clf.predict(test, top_k=clf.taxonomy.num_classes)])
    raw = status.softmax(garbage_out["logits"])
    test_summary = status.answered_summary(probabilities, labels, garbage_out["similarity"], cal.thresholds)
    assert [p.status for p in test_predictions] == list(status.statuses(probabilities, garbage_out["similarity"],
                                                                        cal.thresholds))
    other_status = np.array([p.status for p in predictions])
    per_kind = {}
    for kind in dict.fromkeys(kinds.tolist()):
        here = kinds == kind
        per_kind[kind] = {"photos": int(here.sum()), "unknown": float((other_status[here] == "unknown").mean()),
                          "unknown_or_unsure": float((other_status[here] != "ok").mean()),
                          "ok": [Path(p).name for p, s in zip(np.array(paths, dtype=object)[here], other_status[here])
                                 if s == "ok"]}
    garbage_scores, other_scores = candidate_scores(garbage_out), candidate_scores(other_out)
    real = kinds == "real photo"
    comparison = {name: {"auroc_all": auroc(garbage_scores[name], other_scores[name]),
                         "fpr_at_95_tpr_all": fpr_at_95_tpr(garbage_scores[name], other_scores[name]),
                         "auroc_real_photos": auroc(garbage_scores[name], other_scores[name][real]),
                         "fpr_at_95_tpr_real_photos": fpr_at_95_tpr(garbage_scores[name], other_scores[name][real])}
                  for name in garbage_scores}
    result = {
        "command": " ".join(["python", *sys.argv]),
        "machine": f"2-core development VM, no GPU ({platform.processor() or platform.machine()})",
        "model": str(args.model),
        "calibration": {k: v for k, v in clf.meta.calibration.items()},
        "garbage26_test": {"photos": len(test), "ece_15_bins_before": status.expected_calibration_error(raw, labels),
                           "ece_15_bins_after": status.expected_calibration_error(probabilities, labels),
                           **test_summary},
        "not_garbage": {"photos": len(paths), "unknown": float((other_status == "unknown").mean()),
                        "unknown_or_unsure": float((other_status != "ok").mean()), "per_kind": per_kind,
                        "real_photos": [Path(p).name for p, k in others if k == "real photo"]},
        "unknown_score_candidates": comparison,
        "exported_files": exported,
    }
    out = Path(__file__).resolve().parents[1] / "results" / "unsure_unknown" / f"{args.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps({k: result[k] for k in ("garbage26_test", "unknown_score_candidates", "exported_files")},
                     indent=1))
    print(json.dumps({k: v for k, v in result["not_garbage"].items() if k != "real_photos"}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
