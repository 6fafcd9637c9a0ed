"""``binwise train``: a MobileNetV2 classifier from pretrained weights and an ImageFolder dataset.

``train`` reads the dataset, makes the splits (``splits``), builds the model from the pretrained
backbone, runs the mode (``head``, ``finetune`` or ``auto``), scores the test split once and
writes the run directory:

``config.yaml``, ``run.json`` (where data and weights came from), ``splits.json`` (a flat folder's
seeded split, photo by photo), ``log.csv`` (one row per epoch), ``metrics.json``,
``model.safetensors``, ``curves.png``, ``confusion.png`` and, per phase, ``checkpoints/``:
safetensors files written atomically each epoch (and on Ctrl-C), from which ``--resume`` continues.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import torch

from .. import distributed, evaluate
from ..data import extra_samples, load_dataset, warn_skipped
from ..errors import BinwiseError
from ..model import MobileNetV2, MobileNetV2Config
from ..modelfile import ModelFile, atomic_write, save_model, sha256_of_file
from ..novelty import nearest_similarity
from ..progress import SILENT, Progress
from ..status import Calibration, softmax
from ..taxonomy import Taxonomy
from .auto import train_auto
from .calibration import calibrate, model_outputs
from .config import TrainConfig, read_config_file, save_config
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
                                                     "dropout": dropout, "activation": None}))
    model.backbone.load_state_dict(pretrained.model.backbone.state_dict())
    return model


MODES = {"head": train_head, "finetune": train_finetune, "auto": train_auto}


def saved_run(run_dir: Path) -> tuple[TrainConfig, Path, Path, Path, Path | None, Path | None, tuple[Path, ...]]:
    """The (config, data, run_dir, pretrained, cache_dir, taxonomy, extra) a run directory was trained with."""
    if not (run_dir / "run.json").is_file() or not (run_dir / "config.yaml").is_file():
        raise BinwiseError("not a binwise run directory (no run.json / config.yaml)", run_dir)
    try:
        sources = json.loads((run_dir / "run.json").read_text())
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise BinwiseError(f"run.json is unreadable ({e})", run_dir) from None
    if not isinstance(sources, dict) or not all(isinstance(sources.get(k), str) for k in ("data", "pretrained")) \
            or not all(isinstance(sources.get(k), (str, type(None))) for k in ("cache_dir", "taxonomy")) \
            or not (isinstance(sources.get("extra", []), list) and all(isinstance(e, str) for e in sources.get("extra", []))):
        raise BinwiseError("run.json does not name the run's data and pretrained weights", run_dir)
    config = TrainConfig.from_dict(read_config_file(run_dir / "config.yaml")).validate()
    cache_dir = Path(sources["cache_dir"]) if sources.get("cache_dir") else None
    taxonomy = Path(sources["taxonomy"]) if sources.get("taxonomy") else None
    extra = tuple(Path(e) for e in sources.get("extra", []))
    return config, Path(sources["data"]), run_dir, Path(sources["pretrained"]), cache_dir, taxonomy, extra


def write_log(path: Path, outcome: TrainingOutcome) -> None:
    rows = [{"phase": phase.name, **row} for phase in outcome.phases for row in phase.history]
    columns = ["phase", "epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def start_run_dir(config: TrainConfig, data: Path, run_dir: Path, pretrained: Path, cache_dir: Path | None,
                  taxonomy: Path | None, extra: tuple[Path, ...] = ()) -> None:
    """Refuse a run directory of another config; write this run's config and sources (rank 0)."""
    config_path = run_dir / "config.yaml"
    if config_path.exists() and read_config_file(config_path) != json.loads(json.dumps(config.to_dict())):
        raise BinwiseError("run directory holds a run with a different config; use another --run-dir "
                           "or --resume it without changing settings", run_dir)
    distributed.barrier()  # every rank has read the old config before rank 0 writes the new one
    if distributed.current().is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, config_path)
        sources = {"data": str(data), "pretrained": str(pretrained), "cache_dir": str(cache_dir) if cache_dir else None,
                   "taxonomy": str(taxonomy) if taxonomy else None, "extra": [str(e) for e in extra]}
        atomic_write(run_dir / "run.json", lambda tmp: Path(tmp).write_text(json.dumps(sources, indent=2)))


def train(config: TrainConfig, data: Path, run_dir: Path, pretrained: Path, cache_dir: Path | None = None,
          taxonomy: Path | None = None, extra: tuple[Path, ...] = (), progress: Progress = SILENT) -> dict:
    """Train per ``config`` and write the run directory; returns the metrics written to metrics.json.

    If ``run_dir`` holds checkpoints of an unfinished run with the same config, training resumes.
    ``taxonomy``: a taxonomy file (classes and bins, see ``taxonomy_file``). ``extra``: ImageFolder
    trees of more photos of the dataset's classes (``binwise feedback export``), added to the
    training split only; recorded in the provenance. Under torchrun (or
    ``distributed.launch``) each process trains its part of every batch and only rank 0 writes
    the run directory (see ``distributed``).
    """
    started = time.perf_counter()
    rank, device = distributed.join(pick_device(config.device))
    distributed.check_config(config, rank.world_size)
    dataset = load_dataset(data, taxonomy)  # before the run directory: a bad taxonomy file leaves none
    extra_photos = extra_samples(list(extra), dataset.taxonomy)
    start_run_dir(config, data, run_dir, pretrained, cache_dir, taxonomy, extra)
    torch.manual_seed(config.seed)
    splits, extra_left_out = with_extra(make_splits(dataset, config), extra_photos)
    if not splits.test:
        raise BinwiseError("no photo left for a test split (each class needs at least 2 photos)", data)
    base = load_pretrained(pretrained)
    ctx = RunContext(config, base.preprocessing, run_dir, cache_dir, device, progress, started=started)
    model = build_model(base, dataset.taxonomy, config.dropout)
    outcome = MODES[config.mode](model, ctx, splits)
    test = model_outputs(model, ctx, splits.test, outcome.choice)
    calibration, reference = calibrate(model, ctx, splits, outcome) if rank.is_main else ({}, None)
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
    if splits.seeded:
        rows = manifest(splits, dataset)
        provenance["splits"] = rows
        atomic_write(run_dir / "splits.json", lambda tmp: Path(tmp).write_text(json.dumps(rows, indent=1)))
    save_model(run_dir / "model.safetensors", ModelFile(model, dataset.taxonomy, ctx.pre, provenance, metrics,
                                                             calibration, reference))
    write_log(run_dir / "log.csv", outcome)
    atomic_write(run_dir / "metrics.json", lambda tmp: Path(tmp).write_text(
        json.dumps({**metrics, "report": report}, indent=2, ensure_ascii=False)))
    from .. import plots
    plots.training_curves([p.name for p in outcome.phases], [p.history for p in outcome.phases],
                          run_dir / "curves.png")
    plots.confusion(report, dataset.taxonomy, run_dir / "confusion.png")
    return metrics
