"""``binwise train``: a MobileNetV2 classifier from pretrained weights and an ImageFolder dataset.

``train`` reads the dataset, makes the splits (``splits``), builds the model from the pretrained
backbone, runs the mode (``head``, ``finetune`` or ``auto``), scores the test split once and
writes the run directory:

``config.yaml``, ``run.json`` (where data and weights came from), ``splits.json`` (every photo of
every split by SHA-256, ``--extra`` ones as "extra"), ``test_predictions.csv`` (each test photo's
answer), ``log.csv`` (one row per epoch), ``metrics.json``,
``model.safetensors``, ``curves.png``, ``confusion.png`` and, per phase, ``checkpoints/``:
safetensors files written atomically each epoch (and on Ctrl-C), from which ``--resume`` continues.
"""

from __future__ import annotations

import csv
import os
import json
import logging
import time
from pathlib import Path

import torch

from . import distributed
from ..evaluation import evaluate
from ..data.dataset import extra_samples, load_dataset, warn_skipped
from ..errors import BinwiseError
from ..model.network import MobileNetV2, MobileNetV2Config
from ..model.file import ModelFile, save_model
from ..fileio import atomic_write, sha256_of_file
from ..model.novelty import nearest_similarity
from ..progress import SILENT, Progress
from ..model.status import Calibration, softmax
from ..taxonomy.classes import Taxonomy
from .auto import train_auto
from .calibration import calibrate, model_outputs
from .run_spec import RunSpec
from .context import RunContext, TrainingOutcome
from .finetune import train_finetune
from .head import train_head
from .splits import make_splits, manifest, with_extra

log = logging.getLogger(__name__)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_pretrained(path: Path) -> ModelFile:
    """Any weights file binwise can import (TFLite, MindSpore, torchvision, binwise)."""
    from ..weights import import_weights

    return import_weights(path)


def build_model(pretrained: ModelFile, taxonomy: Taxonomy, dropout: float) -> MobileNetV2:
    """The pretrained backbone under a fresh head with one output per class."""
    base = pretrained.model.config.to_dict()
    model = MobileNetV2(MobileNetV2Config.from_dict({**base, "num_classes": taxonomy.num_classes,
                                                     "dropout": dropout}))
    model.backbone.load_state_dict(pretrained.model.backbone.state_dict())
    return model


MODES = {"head": train_head, "finetune": train_finetune, "auto": train_auto}


def write_test_predictions(path: Path, test, dataset, photos: list[dict]) -> None:
    """Each test photo (relative path, SHA-256 from ``photos``, the run's ``manifest``), its class
    and the model's top class, for ``binwise runs compare``."""
    digests = {row["path"]: row["sha256"] for row in photos}
    predicted = test.logits.argmax(1)
    names = dataset.taxonomy.classes_en

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "sha256", "class", "predicted", "right"])
            for sample, label, guess in zip(test.samples, test.labels.tolist(), predicted.tolist()):
                relative = os.path.relpath(sample.path, dataset.root)
                writer.writerow([relative, digests[relative], names[label], names[guess], int(label == guess)])
    atomic_write(path, write)


def write_log(path: Path, outcome: TrainingOutcome) -> None:
    rows = [{"phase": phase.name, **row} for phase in outcome.phases for row in phase.history]
    columns = ["phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def train(spec: RunSpec, progress: Progress = SILENT, started: float | None = None) -> dict:
    """Train per ``spec`` and write the run directory; returns the metrics written to metrics.json.

    If the run directory holds checkpoints of an unfinished run with the same config, training
    resumes. ``spec.extra`` photos join the training split only and are recorded in the provenance.
    Under torchrun (or ``distributed.launch``) each process trains its part of every batch and only
    rank 0 writes the run directory (see ``distributed``). ``started``: when the run began
    (``time.perf_counter()``; default now), from which ``time_budget`` counts: the CLI passes its
    process's start, so that the budget covers Python's start-up and imports too.
    """
    config, data, run_dir, pretrained = spec.config, spec.data, spec.run_dir, spec.pretrained
    cache_dir, taxonomy, extra = spec.cache_dir, spec.taxonomy, spec.extra
    started = time.perf_counter() if started is None else started
    rank, device = distributed.join(pick_device(config.device))
    distributed.check_config(config, rank.world_size)
    dataset = load_dataset(data, taxonomy)  # before the run directory: a bad taxonomy file leaves none
    extra_photos = extra_samples(list(extra), dataset.taxonomy)
    spec.save()
    torch.manual_seed(config.seed)
    splits, extra_left_out = with_extra(make_splits(dataset, config), extra_photos)
    if not splits.test:
        raise BinwiseError("no photo left for a test split (each class needs at least 2 photos)", data)
    base = load_pretrained(pretrained)
    ctx = RunContext(config, base.preprocessing, run_dir, cache_dir, device, progress, started=started)
    model = build_model(base, dataset.taxonomy, config.dropout)
    outcome = MODES[config.mode](model, ctx, splits)
    test = model_outputs(model, ctx, splits.test, outcome.choice)
    calibration, reference = calibrate(model, ctx, splits, outcome, dataset.taxonomy) if rank.is_main else ({}, None)
    skipped = distributed.union_over_ranks(sorted(ctx.skipped))
    warn_skipped(skipped)
    model.cpu().eval()

    report = evaluate.classification_report(test.logits, test.labels, dataset.taxonomy)
    if calibration:
        report["status"] = evaluate.status_report(
            softmax(test.logits), softmax(test.logits, calibration["temperature"]), test.labels,
            nearest_similarity(test.features, reference.numpy()), Calibration.from_metadata({"calibration": calibration}),
            dataset.taxonomy)
    metrics = {
        "test_top1": report["top1"], "test_top1_ci95": report["top1_ci95"], "test_top5": report["top5"],
        "test_bin_accuracy": report.get("bin_accuracy"), "test_bin_accuracy_ci95": report.get("bin_accuracy_ci95"),
        "test_photos": report["count"],
        "test_split": "seeded from the folder" if splits.seeded else "the dataset's test folder",
        "photos": {"train": len(splits.train), "val": len(splits.val), "test": len(splits.test),
                   **({"extra_in_train": len(extra_photos) - extra_left_out} if extra_photos else {})},
        "mode": config.mode, "chosen": outcome.choice, "reason": outcome.reason,
        "val_acc": outcome.val_acc,
        "smallest_class_recall": min(c["recall"] for c in report["per_class"] if c["support"]),
        "calibration": calibration or None,
        "test_status": report["status"]["at_thresholds"] if calibration else None,
        "unreadable_photos": skipped,
        "wall_seconds": time.perf_counter() - started,
        **outcome.details,
    }
    if not rank.is_main:
        return metrics
    provenance = {"pretrained": str(pretrained), "pretrained_sha256": sha256_of_file(pretrained),
                  "pretrained_provenance": base.provenance, "dataset": str(data), "mode": config.mode,
                  "chosen": outcome.choice, "reason": outcome.reason, "config": config.to_dict(),
                  "train_photos": len(splits.train) + len(splits.val)}
    if extra:
        provenance["extra"] = {"folders": [str(e) for e in extra], "photos": len(extra_photos) - extra_left_out,
                               "left_out_as_already_in_the_dataset": extra_left_out}
    rows = manifest(splits, dataset, extra_photos)
    if splits.seeded:  # eval then scores only the photos this model never saw
        provenance["splits"] = rows
    atomic_write(run_dir / "splits.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    write_test_predictions(run_dir / "test_predictions.csv", test, dataset, rows)
    save_model(run_dir / "model.safetensors", ModelFile(model, dataset.taxonomy, ctx.pre, provenance, metrics,
                                                             calibration, reference))
    write_log(run_dir / "log.csv", outcome)
    atomic_write(run_dir / "metrics.json", lambda tmp: Path(tmp).write_text(
        json.dumps({**metrics, "report": report}, indent=2, ensure_ascii=False)))
    progress.result(metrics, report)
    from ..evaluation import plots
    plots.training_curves([p.name for p in outcome.phases], [p.history for p in outcome.phases],
                          run_dir / "curves.png")
    plots.confusion(report, dataset.taxonomy, run_dir / "confusion.png")
    return metrics
