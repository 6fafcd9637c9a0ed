"""Choose the fine-tune recipe on validation splits of proxy datasets (never a test split).

Every candidate is ``--mode finetune``: the probe as head warm start, then the last blocks trained
on cached activations, keeping the best epoch by validation. Each run is on a flat proxy folder
(``benchmarks/studies/proxies.py``), so binwise makes its own seeded 80/10/10 split; only the validation
accuracies are recorded (the probe's and fine-tuning's best), never the test split's. Results are
merged into ``--out`` after every run, keyed by dataset and candidate.

    python benchmarks/studies/proxies.py && python benchmarks/tuning/tune_finetune.py [--only NAME,...] [--datasets a,b]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

from studies.proxies import default_out

from binwise.paths import resolve_pretrained
from binwise.training.schedules import ScheduleConfig
from binwise.training.config import FINETUNE
from binwise.training.run import train
from binwise.training.run_spec import RunSpec

# every tuned field is set by each candidate, so the results do not depend on the preset's values
BASE = dict(optimizer="adamw", lr_max=3e-4, weight_decay=0.05, trainable_blocks=5, class_balance="none", epochs=8)
CANDIDATES = {
    "adamw-3e-4-last5": {},
    "adamw-1e-3-last5": dict(lr_max=1e-3),
    "adamw-1e-4-last5": dict(lr_max=1e-4),
    "sgd-0.002-last5": dict(optimizer="sgd", lr_max=0.002, weight_decay=1e-4),
    "adamw-3e-4-last8": dict(trainable_blocks=8),
    "adamw-3e-4-last5-balanced": dict(class_balance="loss"),
}


def candidate_config(setting: dict):
    s = {**BASE, **setting}
    return replace(FINETUNE, optimizer=s["optimizer"], weight_decay=s["weight_decay"],
                   trainable_blocks=s["trainable_blocks"], class_balance=s["class_balance"], epochs=s["epochs"],
                   val_fraction=0.1, retrain_on_all=False, keep_best=True,
                   schedule=ScheduleConfig(name="cosine", lr_max=s["lr_max"], warmup_epochs=1)).validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="materials,fewshot,imbalanced")
    parser.add_argument("--pretrained")
    parser.add_argument("--cache-dir", help="shared by the runs (default: binwise's)")
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "results" / "tune_finetune" / "tune_finetune.json"))
    args = parser.parse_args()

    pretrained = resolve_pretrained(args.pretrained)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results.setdefault("runs", {})
    results["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    for dataset in args.datasets.split(","):
        for name in names:
            started = time.perf_counter()
            with tempfile.TemporaryDirectory() as tmp:
                train(RunSpec(candidate_config(CANDIDATES[name]), default_out() / dataset, Path(tmp) / "run",
                              pretrained, Path(args.cache_dir) if args.cache_dir else None))
                log = list(csv.DictReader(open(Path(tmp) / "run" / "log.csv")))
            probe = [r for r in log if r["phase"].startswith("head")]
            tuned = [r for r in log if r["phase"].startswith("finetune")]
            results["runs"].setdefault(dataset, {})[name] = {
                **BASE, **CANDIDATES[name],
                "probe_val_acc": float(probe[-1]["val_acc"]),
                "finetune_val_acc_by_epoch": [round(float(r["val_acc"]), 4) for r in tuned],
                "finetune_train_acc_by_epoch": [round(float(r["train_acc"]), 4) for r in tuned],
                "best_val_acc": max(float(r["val_acc"]) for r in tuned),
                "wall_seconds": round(time.perf_counter() - started, 1),
            }
            print(dataset, name, json.dumps(results["runs"][dataset][name]), flush=True)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
