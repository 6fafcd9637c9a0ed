"""``binwise runs compare RUN_A RUN_B``: what changed between two training runs.

A run directory records its settings (``config.yaml``), every photo of every split by SHA-256
(``splits.json``), its metrics (``metrics.json``) and each test photo's answer
(``test_predictions.csv``), so two runs can be told apart by data, settings and results, and
a model traced to its photos. Photos are matched by content (SHA-256), not by path.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ..errors import BinwiseError
from .evaluate import mcnemar_one_sided, wilson_interval

SPLITS = ("train", "val", "test", "extra")
METRICS = ("test_top1", "test_bin_accuracy", "smallest_class_recall", "val_acc", "chosen", "wall_seconds")


def read_run(run_dir: Path) -> dict:
    """A run directory's settings, photos, metrics and test answers; one error naming what is missing."""
    import yaml

    files = {name: run_dir / name for name in ("config.yaml", "splits.json", "metrics.json", "test_predictions.csv")}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise BinwiseError(f"not a finished binwise run directory (no {', '.join(missing)}; runs before "
                           "2026-12-07 did not record their photos)", run_dir)
    try:
        photos = json.loads(files["splits.json"].read_text(encoding="utf-8"))
        metrics = json.loads(files["metrics.json"].read_text(encoding="utf-8"))
        with open(files["test_predictions.csv"], newline="", encoding="utf-8") as f:
            answers = {row["sha256"]: row for row in csv.DictReader(f)}
        config = yaml.safe_load(files["config.yaml"].read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, yaml.YAMLError) as e:
        raise BinwiseError(f"unreadable run record ({str(e).splitlines()[0]})", run_dir) from None
    return {"config": config if isinstance(config, dict) else {}, "photos": photos, "metrics": metrics,
            "answers": answers}


def flat(config: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def compare_runs(a: Path, b: Path, most: int = 20) -> dict:
    """Settings that differ, photos per split added and removed, metrics side by side with their
    intervals, and the test photos both runs scored that one gets right and the other wrong
    (McNemar's exact test on them)."""
    run_a, run_b = read_run(a), read_run(b)
    config_a, config_b = flat(run_a["config"]), flat(run_b["config"])
    settings = {key: [config_a.get(key), config_b.get(key)] for key in sorted(set(config_a) | set(config_b))
                if config_a.get(key) != config_b.get(key)}
    data = {}
    for split in SPLITS:
        in_a = {row["sha256"] for row in run_a["photos"] if row["split"] == split}
        in_b = {row["sha256"] for row in run_b["photos"] if row["split"] == split}
        if in_a or in_b:
            data[split] = {"a": len(in_a), "b": len(in_b), "only_in_a": len(in_a - in_b), "only_in_b": len(in_b - in_a)}
    metrics = {key: [run_a["metrics"].get(key), run_b["metrics"].get(key)] for key in METRICS}
    shared = sorted(set(run_a["answers"]) & set(run_b["answers"]))
    right = {sha: (run_a["answers"][sha]["right"] == "1", run_b["answers"][sha]["right"] == "1") for sha in shared}
    only_a = [sha for sha in shared if right[sha] == (True, False)]
    only_b = [sha for sha in shared if right[sha] == (False, True)]
    both = sum(1 for r in right.values() if r == (True, True))
    return {
        "runs": [str(a), str(b)], "settings": settings, "data": data, "metrics": metrics,
        "shared_test_photos": len(shared),
        "shared_top1": [wilson_summary(both + len(only_a), len(shared)), wilson_summary(both + len(only_b), len(shared))],
        "right_only_in_a": [photo_row(run_a["answers"][sha], run_b["answers"][sha]) for sha in only_a[:most]],
        "right_only_in_b": [photo_row(run_a["answers"][sha], run_b["answers"][sha]) for sha in only_b[:most]],
        "counts": {"right_only_in_a": len(only_a), "right_only_in_b": len(only_b)},
        # one-sided in the direction the difference points: how likely a split this uneven is by chance
        "p_value": mcnemar_one_sided(max(len(only_a), len(only_b)), min(len(only_a), len(only_b))),
    }


def wilson_summary(correct: int, count: int) -> dict:
    return {"top1": correct / count if count else None, "ci95": wilson_interval(correct, count)}


def photo_row(in_a: dict, in_b: dict) -> dict:
    return {"path": in_a["path"], "class": in_a["class"], "a_says": in_a["predicted"], "b_says": in_b["predicted"]}
