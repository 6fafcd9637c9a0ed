"""``binwise eval``: how good a model is on labelled photos.

Photos go through binwise's one eval path (``images`` resize + centre crop + normalise). The report
has top-1, top-5, per-class precision / recall / F1, bin accuracy (when the taxonomy has bins) and
the class- and bin-level confusion matrices, and names every misclassified photo.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from .data import PhotoDataset, Sample, eval_transform, load_dataset, photo_loader, single_view, warn_skipped
from .errors import BinwiseError
from .modelfile import atomic_write, load_model
from .taxonomy import Taxonomy


def predict_logits(model, pre, samples: list[Sample], batch_size: int = 32, workers: int = 2,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Logits and labels of the readable photos, and the errors naming the unreadable ones."""
    logits, labels, _, skipped = predict_rows(model, pre, samples, batch_size, workers, device)
    return logits, labels, skipped


def predict_rows(model, pre, samples: list[Sample], batch_size: int, workers: int, device):
    """As ``predict_logits``, plus each row's position in ``samples``."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loader = photo_loader(PhotoDataset(samples, single_view(eval_transform(pre)), at_least=pre.resize_size), batch_size,
                          workers if len(samples) > batch_size else 0, pin_memory=device.type == "cuda")
    logits, labels, indices, skipped = [], [], [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for batch in loader:
            skipped += batch.skipped
            if len(batch.labels):
                logits.append(model(batch.images.to(device)).float().cpu())
                labels.append(batch.labels)
                indices.append(batch.indices)
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(logits), torch.cat(labels), torch.cat(indices), skipped


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def wilson_interval(successes: int, count: int, z: float = 1.96) -> list[float]:
    """The Wilson score interval of a proportion (95% for z = 1.96): sound for small counts and
    for proportions near 0 or 1, where the normal approximation is not."""
    if count == 0:
        return [0.0, 1.0]
    p = successes / count
    centre = (p + z * z / (2 * count)) / (1 + z * z / count)
    half = z * math.sqrt(p * (1 - p) / count + z * z / (4 * count * count)) / (1 + z * z / count)
    # at p = 0 or 1 one end is exactly 0 or 1; say so rather than leave float rounding there
    return [0.0 if successes == 0 else max(0.0, centre - half), 1.0 if successes == count else min(1.0, centre + half)]


def confusion_matrix(truth: torch.Tensor, predicted: torch.Tensor, n: int) -> torch.Tensor:
    """Rows: true class, columns: predicted class."""
    return torch.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)


def classification_report(logits: torch.Tensor, labels: torch.Tensor, taxonomy: Taxonomy) -> dict:
    """Accuracy, per-class precision/recall/F1, bin accuracy and confusion matrices, as plain JSON data."""
    n = taxonomy.num_classes
    count = len(labels)
    if count == 0:
        raise BinwiseError("no readable labelled photos to evaluate")
    predicted = logits.argmax(1)
    top5 = logits.topk(min(5, n), dim=1).indices
    matrix = confusion_matrix(labels, predicted, n)
    per_class = []
    for i, name in enumerate(taxonomy.classes_en):
        tp = matrix[i, i].item()
        precision, recall = _ratio(tp, matrix[:, i].sum().item()), _ratio(tp, matrix[i].sum().item())
        per_class.append({"class": name, "support": matrix[i].sum().item(), "precision": precision,
                          "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)})
    report = {
        "count": count,
        "top1": (predicted == labels).float().mean().item(),
        "top1_ci95": wilson_interval(int((predicted == labels).sum()), count),
        "top5": (top5 == labels[:, None]).any(1).float().mean().item(),
        "macro_f1": sum(c["f1"] for c in per_class) / n,
        "per_class": per_class,
        "classes": list(taxonomy.classes_en),
        "confusion": matrix.tolist(),
    }
    if taxonomy.class_bins:
        bin_of = torch.tensor(taxonomy.bin_index_of_classes())
        true_bins, predicted_bins = bin_of[labels], bin_of[predicted]
        report["bins"] = [b.id for b in taxonomy.bins]
        report["bin_accuracy"] = (true_bins == predicted_bins).float().mean().item()
        report["bin_accuracy_ci95"] = wilson_interval(int((true_bins == predicted_bins).sum()), count)
        report["bin_confusion"] = confusion_matrix(true_bins, predicted_bins, len(taxonomy.bins)).tolist()
    return report


def select_split(dataset, split: str, recorded: list[dict] | None, data) -> tuple[list[Sample], int]:
    """The photos of ``split`` and how many were left out because the model trained on them.

    A dataset with a test folder: its folders decide. A flat folder: ``test`` is every photo the
    model did not train or validate on, by SHA-256 against the split recorded in the model file (its
    own test split, and any photo it never saw); ``all`` is every photo.
    """
    from .modelfile import sha256_of_file

    if dataset.test or split == "train":
        samples = {"test": dataset.test, "train": dataset.train, "all": dataset.train + dataset.test}[split]
        if not samples:
            raise BinwiseError(f"no photos in the {split!r} split", data)
        return samples, 0
    if split == "all":
        return dataset.train, 0
    if recorded is None:
        raise BinwiseError("a flat folder (no test/ inside) and a model that records no split of it: "
                           "the test photos are unknown; use --split all for every photo", data)
    if not isinstance(recorded, list) or not all(isinstance(row, dict) for row in recorded):
        raise BinwiseError("the model file's recorded split is not a list of photos", data)
    seen = {row.get("sha256") for row in recorded if row.get("split") in ("train", "val")}
    samples = [s for s in dataset.train if sha256_of_file(s.path) not in seen]
    if not samples:
        raise BinwiseError("every photo here trained or validated the model; no unseen photo to test on", data)
    return samples, len(dataset.train) - len(samples)


def evaluate(model_path: str | Path, data: str | Path, out_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 2, device: str = "cpu", split: str = "test") -> dict:
    """Evaluate a model file on a dataset's ``split`` ('test', 'train' or 'all'; see ``select_split``);
    with ``out_dir`` write report.json, confusion.png, bin_confusion.png and misclassified.png."""
    model_file = load_model(model_path, device)
    dataset = load_dataset(data)
    samples, excluded = select_split(dataset, split, model_file.provenance.get("splits"), data)
    model_classes = list(model_file.taxonomy.classes_en)
    unknown = sorted(set(dataset.taxonomy.classes_en) - set(model_classes))
    if unknown:
        raise BinwiseError(f"dataset classes the model does not know: {unknown}", data)
    # relabel to the model's class order, which may differ from the dataset's
    to_model = {i: model_classes.index(name) for i, name in enumerate(dataset.taxonomy.classes_en)}
    samples = [Sample(s.path, to_model[s.label]) for s in samples]
    logits, labels, indices, skipped = predict_rows(model_file.model, model_file.preprocessing, samples,
                                                    batch_size, workers, device)
    warn_skipped(skipped)
    report = classification_report(logits, labels, model_file.taxonomy)
    predicted = logits.argmax(1)
    probabilities = logits.softmax(1).max(1).values
    report["misclassified"] = [
        {"path": str(samples[i].path), "true": model_classes[t], "predicted": model_classes[p], "confidence": c}
        for i, t, p, c in zip(indices.tolist(), labels.tolist(), predicted.tolist(), probabilities.tolist())
        if t != p]
    report["unreadable"] = skipped
    report["model"] = str(model_path)
    report["data"] = str(data)
    report["split"] = split
    report["excluded_as_seen"] = excluded
    if out_dir:
        from . import plots
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(
            json.dumps(report, indent=2, ensure_ascii=False)))
        plots.confusion(report, model_file.taxonomy, out_dir / "confusion.png")
        if "bin_confusion" in report:
            plots.bin_confusion(report, model_file.taxonomy, out_dir / "bin_confusion.png")
        plots.misclassified_grid(report["misclassified"], out_dir / "misclassified.png")
    return report
