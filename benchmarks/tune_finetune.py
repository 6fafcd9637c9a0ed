"""Choose the fine-tune recipe on a validation split of garbage26's train set (never test).

Every candidate is "linear probe, then fine-tune": the head warm start (head mode's recipe on
cached features), then a few epochs of fine-tuning at a small learning rate. Each is trained by
``binwise.train.train`` on ``DATA/train`` alone, so the run has no test split at all: a seeded,
stratified 10% of train is held out (``val_fraction`` 0.1, no retraining on all of train) and is
what the run reports. Results are merged into ``--out`` after every candidate, keyed by name.

    python benchmarks/tune_finetune.py [--data DIR] [--only NAME,...] [--out benchmarks/results/tune_finetune.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from binwise.training.config import FINETUNE
from binwise.paths import resolve_data, resolve_pretrained
from binwise.training.run import train

# every tuned field is set by each candidate, so the results do not depend on the preset's values
CANDIDATES = {
    "last5-bnfrozen-lr0.0005": dict(trainable_blocks=5, batchnorm="frozen", lr_max=0.0005, epochs=2),
    "all-bnfrozen-lr0.0002": dict(trainable_blocks=None, batchnorm="frozen", lr_max=0.0002, epochs=2),
    "last5-bntrain-lr0.0005": dict(trainable_blocks=5, batchnorm="train", lr_max=0.0005, epochs=2),
}


def candidate_config(setting: dict):
    return replace(FINETUNE, warm_start_head=True, val_fraction=0.1, retrain_on_all=False, batch_size=32,
                   label_smoothing=0.1, trainable_blocks=setting["trainable_blocks"],
                   batchnorm=setting["batchnorm"], epochs=setting["epochs"],
                   schedule=replace(FINETUNE.schedule, name="cosine", lr_max=setting["lr_max"],
                                    warmup_epochs=0.0)).validate()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="garbage26 folder; only its train/ part is read")
    parser.add_argument("--pretrained")
    parser.add_argument("--cache-dir")
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--out", default="benchmarks/results/tune_finetune.json")
    args = parser.parse_args()

    train_only = resolve_data(args.data) / "train"
    pretrained = resolve_pretrained(args.pretrained)
    names = args.only.split(",") if args.only else list(CANDIDATES)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"candidates": {}}
    results["machine"] = {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    for name in names:
        config = candidate_config(CANDIDATES[name])
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            metrics = train(config, train_only, Path(tmp) / "run", pretrained,
                            Path(args.cache_dir) if args.cache_dir else None)
            log = list(csv.DictReader(open(Path(tmp) / "run" / "log.csv")))
        head = [r for r in log if r["phase"].startswith("head")]
        results["candidates"][name] = {
            **CANDIDATES[name],
            "val_acc": metrics["test_top1"],  # the run's only held-out photos are the validation split
            "val_photos": metrics["test_photos"],
            "head_warm_start_val_acc": float(head[-1]["val_acc"]),
            "finetune_epochs": [{k: float(r[k]) for k in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc",
                                                           "seconds")}
                                for r in log if r["phase"].startswith("finetune")],
            "wall_seconds": time.perf_counter() - started,
            "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        }
        print(name, json.dumps(results["candidates"][name]), flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    ranked = sorted(results["candidates"].items(), key=lambda item: -item[1]["val_acc"])
    print("by validation accuracy:", *(f"{n}: {r['val_acc']:.2%}" for n, r in ranked), sep="\n  ")


if __name__ == "__main__":
    main()
