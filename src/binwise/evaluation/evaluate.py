"""``binwise eval``: how good a model is on labelled photos.

Photos go through binwise's one eval path (``images`` resize + centre crop, then the model's own
normalisation) in a ``Classifier``, so every model format is evaluated alike: a .safetensors file
in PyTorch, an .onnx export in onnxruntime without torch. The report
has top-1, top-5, per-class precision / recall / F1, bin accuracy (when the taxonomy has bins) and
the class- and bin-level confusion matrices, names every misclassified photo, and scores the
statuses (``binwise.model.status``): ECE before and after the temperature, the risk-coverage curve, and
coverage and accuracy of the answered photos at the model's thresholds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..model import status
from ..data.dataset import Sample, load_dataset, warn_skipped
from ..errors import BinwiseError
from ..fileio import atomic_write
from ..model.status import Calibration
from ..taxonomy.classes import Taxonomy


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


def mcnemar_one_sided(fixed: int, broken: int) -> float:
    """P(at least ``fixed`` of the ``fixed + broken`` disagreements go fine-tuning's way) if each
    went either way with probability 1/2: McNemar's exact test, one-sided."""
    n = fixed + broken
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2 ** n


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, n: int) -> np.ndarray:
    """Rows: true class, columns: predicted class."""
    return np.bincount(truth * n + predicted, minlength=n * n).reshape(n, n)


def classification_report(scores, labels, taxonomy: Taxonomy) -> dict:
    """Accuracy, per-class precision/recall/F1, bin accuracy and confusion matrices, as plain JSON data.

    ``scores`` (N, classes): logits or probabilities, any array type numpy reads (torch tensors too).
    """
    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    n = taxonomy.num_classes
    count = len(labels)
    if count == 0:
        raise BinwiseError("no readable labelled photos to evaluate")
    predicted = scores.argmax(1)
    top5 = np.argsort(-scores, axis=1, kind="stable")[:, :min(5, n)]
    matrix = confusion_matrix(labels, predicted, n)
    per_class = []
    for i, name in enumerate(taxonomy.classes_en):
        tp = int(matrix[i, i])
        precision, recall = _ratio(tp, int(matrix[:, i].sum())), _ratio(tp, int(matrix[i].sum()))
        per_class.append({"class": name, "support": int(matrix[i].sum()), "precision": precision,
                          "recall": recall, "f1": _ratio(2 * precision * recall, precision + recall)})
    correct = int((predicted == labels).sum())
    report = {
        "count": count,
        "top1": correct / count,
        "top1_ci95": wilson_interval(correct, count),
        "top5": float((top5 == labels[:, None]).any(1).mean()),
        "macro_f1": sum(c["f1"] for c in per_class) / n,
        "per_class": per_class,
        "classes": list(taxonomy.classes_en),
        "confusion": matrix.tolist(),
    }
    if taxonomy.class_bins:
        bin_of = np.array(taxonomy.bin_index_of_classes())
        true_bins, predicted_bins = bin_of[labels], bin_of[predicted]
        right_bin = int((true_bins == predicted_bins).sum())
        report["bins"] = [b.id for b in taxonomy.bins]
        report["bin_accuracy"] = right_bin / count
        report["bin_accuracy_ci95"] = wilson_interval(right_bin, count)
        report["bin_confusion"] = confusion_matrix(true_bins, predicted_bins, len(taxonomy.bins)).tolist()
    return report


def cost_report(bin_confusion: np.ndarray, taxonomy: Taxonomy) -> dict:
    """What the mistakes cost (``taxonomy.costs``, with the ones the taxonomy states itself): the
    mean cost per photo, the bin confusion weighted by cost, and the share of hazardous items sent
    to another bin, with its interval."""
    from ..taxonomy.classes import costs_mapping
    from ..taxonomy.costs import bin_costs, hazardous_bins

    confusion = np.asarray(bin_confusion)
    costs = bin_costs(taxonomy)
    weighted = confusion * costs
    report = {"costs": costs.tolist(), "stated_costs": costs_mapping(taxonomy.costs),
              "cost_per_photo": float(weighted.sum() / max(confusion.sum(), 1)), "cost_confusion": weighted.tolist()}
    hazardous = hazardous_bins(taxonomy)
    if hazardous:
        items = int(confusion[hazardous].sum())
        missed = items - int(sum(confusion[h, h] for h in hazardous))
        report.update(hazardous_items=items, hazardous_missed=missed,
                      hazardous_miss_rate=missed / items if items else None,
                      hazardous_miss_rate_ci95=wilson_interval(missed, items))
    return report


def hazardous_answered_wrong(probabilities: np.ndarray, labels: np.ndarray, similarity: np.ndarray | None,
                             calibration: Calibration, taxonomy: Taxonomy) -> int:
    """Hazardous items answered ``ok`` in another bin: the mistakes a user acts on without doubt."""
    from ..taxonomy.costs import hazardous_bins

    hazardous = set(hazardous_bins(taxonomy))
    bin_of = np.array(taxonomy.bin_index_of_classes())
    statuses, _ = status.decide_rows(probabilities, similarity, calibration.thresholds, status.BinCosts.of(taxonomy))
    true_bins, answered_bins = bin_of[labels], bin_of[probabilities.argmax(1)]
    return int(sum(1 for s, t, a in zip(statuses, true_bins, answered_bins) if s == "ok" and t in hazardous and a != t))


def status_report(raw: np.ndarray, calibrated: np.ndarray, labels: np.ndarray, similarity: np.ndarray | None,
                  calibration: Calibration, taxonomy: Taxonomy | None = None) -> dict:
    """Calibration and selective accuracy of labelled photos: ECE (``status.ECE_BINS`` bins) and
    reliability rows before (``raw`` probabilities, temperature 1) and after (``calibrated``)
    temperature scaling, the risk-coverage curve of the calibrated confidence, and coverage and
    accuracy of the answered (status ok) photos at the model's thresholds; with a ``taxonomy`` that
    has bins, the answered bins too (``status.answered_summary``)."""
    _, coverage, accuracy = status.risk_coverage(calibrated.max(1), calibrated.argmax(1) == labels)
    points = np.unique(np.linspace(0, len(coverage) - 1, min(len(coverage), 200)).round().astype(int))
    return {
        "temperature": calibration.temperature,
        "calibrated": calibration.fitted,
        "thresholds": calibration.thresholds.to_dict(),
        "ece_bins": status.ECE_BINS,
        "ece_before": status.expected_calibration_error(raw, labels),
        "ece_after": status.expected_calibration_error(calibrated, labels),
        "reliability_before": status.reliability(raw, labels),
        "reliability_after": status.reliability(calibrated, labels),
        "risk_coverage": {"coverage": coverage[points].tolist(), "accuracy": accuracy[points].tolist()},
        "at_thresholds": status.answered_summary(
            calibrated, labels, similarity, calibration.thresholds,
            taxonomy.bin_index_of_classes() if taxonomy is not None and taxonomy.class_bins else None,
            status.BinCosts.of(taxonomy) if taxonomy is not None else None),
    }


def select_split(dataset, split: str, recorded: list[dict] | None, data) -> tuple[list[Sample], int]:
    """The photos of ``split`` and how many were left out because the model trained on them.

    A dataset with a test folder: its folders decide. A flat folder: ``test`` is every photo the
    model did not train or validate on, by SHA-256 against the split recorded in the model file (its
    own test split, and any photo it never saw); ``all`` is every photo.
    """
    from ..fileio import sha256_of_file

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
    seen = {row.get("sha256") for row in recorded if row.get("split") in ("train", "val", "extra")}
    samples = [s for s in dataset.train if sha256_of_file(s.path) not in seen]
    if not samples:
        raise BinwiseError("every photo here trained or validated the model; no unseen photo to test on", data)
    return samples, len(dataset.train) - len(samples)


def classify_samples(classifier, samples: list[Sample], batch_size: int, workers: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Class probabilities (in class order) and labels of the readable photos, their positions in
    ``samples``, the errors naming the unreadable ones, and their similarities to the nearest
    training photo (None when the model cannot tell)."""
    n = classifier.taxonomy.num_classes
    rows, labels, indices, skipped, similarity = [], [], [], [], []
    stream = classifier.predict_stream([s.path for s in samples], top_k=n, batch_size=batch_size,
                                       workers=max(1, workers))
    for i, (sample, (_, result)) in enumerate(zip(samples, stream)):
        if isinstance(result, BinwiseError):
            skipped.append(str(result))
            continue
        row = np.empty(n)
        row[[s.index for s in result.top]] = [s.probability for s in result.top]
        rows.append(row)
        labels.append(sample.label)
        indices.append(i)
        similarity.append(result.similarity)
    scored = bool(similarity) and all(s is not None for s in similarity)
    return (np.array(rows).reshape(-1, n), np.array(labels, dtype=np.int64), np.array(indices, dtype=np.int64),
            skipped, np.array(similarity, dtype=np.float64) if scored else None)


def evaluate(model_path: str | Path, data: str | Path, out_dir: str | Path | None = None,
             batch_size: int = 32, workers: int = 2, device: str = "cpu", split: str = "test",
             region: str | None = None) -> dict:
    """Evaluate a model file (.safetensors or .onnx) on a dataset's ``split`` ('test', 'train' or
    'all'; see ``select_split``); with ``out_dir`` write report.json, confusion.png,
    bin_confusion.png, misclassified.png, reliability.png and risk_coverage.png. ``workers``:
    threads decoding photos. ``report["status"]`` (``status_report``) has the calibration and the
    coverage and accuracy at the model's thresholds. ``region``: a region's rules (a shipped name
    or a file, ``taxonomy.files.read_region``) whose bins and costs replace the model file's."""
    from ..inference.classifier import Classifier

    classifier = Classifier.load(model_path, device=device)
    if region:
        from ..taxonomy.files import read_region

        classifier = classifier.with_bins(read_region(region, classifier.taxonomy).taxonomy)
    dataset = load_dataset(data)
    samples, excluded = select_split(dataset, split, classifier.meta.provenance.get("splits"), data)
    model_classes = list(classifier.taxonomy.classes_en)
    unknown = sorted(set(dataset.taxonomy.classes_en) - set(model_classes))
    if unknown:
        raise BinwiseError(f"dataset classes the model does not know: {unknown}", data)
    # relabel to the model's class order, which may differ from the dataset's
    to_model = {i: model_classes.index(name) for i, name in enumerate(dataset.taxonomy.classes_en)}
    samples = [Sample(s.path, to_model[s.label]) for s in samples]
    probabilities, labels, indices, skipped, similarity = classify_samples(classifier, samples, batch_size, workers)
    warn_skipped(skipped)
    report = classification_report(probabilities, labels, classifier.taxonomy)
    report["status"] = status_report(classifier.uncalibrated(probabilities), probabilities, labels, similarity,
                                     classifier.calibration, classifier.taxonomy)
    if classifier.taxonomy.class_bins:
        report["cost"] = cost_report(np.asarray(report["bin_confusion"]), classifier.taxonomy)
        report["cost"]["hazardous_answered_ok_in_another_bin"] = hazardous_answered_wrong(
            probabilities, labels, similarity, classifier.calibration, classifier.taxonomy)
    predicted = probabilities.argmax(1)
    report["misclassified"] = [
        {"path": str(samples[i].path), "true": model_classes[t], "predicted": model_classes[p],
         "confidence": float(probabilities[row, p])}
        for row, (i, t, p) in enumerate(zip(indices.tolist(), labels.tolist(), predicted.tolist())) if t != p]
    report["unreadable"] = skipped
    report["model"] = str(model_path)
    report["data"] = str(data)
    report["split"] = split
    report["region"] = classifier.taxonomy.name
    report["excluded_as_seen"] = excluded
    if out_dir:
        from . import plots
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write(out_dir / "report.json", lambda tmp: Path(tmp).write_text(
            json.dumps(report, indent=2, ensure_ascii=False)))
        plots.confusion(report, classifier.taxonomy, out_dir / "confusion.png")
        if "bin_confusion" in report:
            plots.bin_confusion(report, classifier.taxonomy, out_dir / "bin_confusion.png")
        plots.misclassified_grid(report["misclassified"], out_dir / "misclassified.png", taxonomy=classifier.taxonomy)
        plots.reliability_diagram(report["status"], out_dir / "reliability.png")
        plots.risk_coverage(report["status"], out_dir / "risk_coverage.png")
    return report
