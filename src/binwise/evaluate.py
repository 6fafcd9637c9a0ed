"""``binwise eval``: how good a model is on labelled photos.

Photos go through binwise's one eval path (``images`` resize + centre crop + normalise). The report
has top-1, top-5, per-class precision / recall / F1, bin accuracy (when the taxonomy has bins) and
the class- and bin-level confusion matrices, and names every misclassified photo.
"""

from __future__ import annotations

import json
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
        report["bin_confusion"] = confusion_matrix(true_bins, predicted_bins, len(taxonomy.bins)).tolist()
    return report


def evaluate(model_path: str | Path, data: str | Path, out_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 2, device: str = "cpu", split: str = "test") -> dict:
    """Evaluate a model file on a dataset's ``split`` ('test', or 'train' / 'all' for a tree without
    test/); with ``out_dir`` write report.json, confusion.png, bin_confusion.png and misclassified.png."""
    model_file = load_model(model_path, device)
    dataset = load_dataset(data)
    samples = {"test": dataset.test, "train": dataset.train, "all": dataset.train + dataset.test}[split]
    if not samples:
        raise BinwiseError(f"no photos in the {split!r} split (a test split needs DIR/test/<class>/)", data)
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
