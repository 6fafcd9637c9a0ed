"""Choose the head-mode hyper-parameters on validation splits of garbage26's train set (never test).

Extracts cached features (eval view + up to 2 augmented views), then trains a head per setting on
train - val and reports mean validation accuracy over two seeded stratified splits.

    python benchmarks/tuning/tune_head.py [--data DIR] [--cache-dir DIR] [--out benchmarks/results/tune_head/tune_head.json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

from binwise.training import feature_cache as features
from binwise.training.config import HEAD
from binwise.data.dataset import load_dataset, stratified_split
from binwise.paths import resolve_data, resolve_pretrained
from binwise.training.head import head_phase
from binwise.training.loop import fit
from binwise.training.run import build_model, load_pretrained


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data")
    parser.add_argument("--pretrained")
    parser.add_argument("--cache-dir")
    parser.add_argument("--out", default="benchmarks/results/tune_head/tune_head.json")
    args = parser.parse_args()

    dataset = load_dataset(resolve_data(args.data))
    base = load_pretrained(resolve_pretrained(args.pretrained))
    model = build_model(base, dataset.taxonomy, 0.0)
    started = time.perf_counter()
    f = features.extract_features(model, base.preprocessing, dataset.train, views=2, seed=0,
                                  cache_dir=Path(args.cache_dir) if args.cache_dir else None)
    print(f"features: {time.perf_counter() - started:.1f} s ({f.computed} computed, {f.reused} reused)")
    grid = {"views": [0, 1, 2], "epochs": [10, 30, 60], "lr_max": [0.02, 0.05, 0.1],
            "label_smoothing": [0.0, 0.1], "batch_size": [64]}
    torch.set_num_threads(1)  # as binwise.train does for the head
    results = []
    for values in itertools.product(*grid.values()):
        setting = dict(zip(grid, values))
        config = replace(HEAD, epochs=setting["epochs"], batch_size=setting["batch_size"],
                         label_smoothing=setting["label_smoothing"],
                         schedule=replace(HEAD.schedule, lr_max=setting["lr_max"]))
        accuracies = []
        for split_seed in (0, 1):
            train, val = stratified_split(f.samples, 0.1, split_seed)
            val_paths = {s.path for s in val}
            in_val = torch.tensor([s.path in val_paths for s in f.samples])
            x = f.features[:, :1 + setting["views"]]
            with tempfile.TemporaryDirectory() as tmp:
                phase = head_phase("tune", model, x[~in_val], f.labels[~in_val],
                                   (x[in_val, 0], f.labels[in_val]), config, Path(tmp), torch.device("cpu"))
                torch.manual_seed(0)
                model.reset_head()
                history = fit(phase, config)
            accuracies.append(history[-1]["val_acc"])
        results.append({**setting, "val_acc": sum(accuracies) / len(accuracies), "val_acc_per_split": accuracies})
        print(json.dumps(results[-1]))
    results.sort(key=lambda r: -r["val_acc"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"grid": grid, "results": results}, indent=2))
    print("best:", json.dumps(results[:5], indent=1))


if __name__ == "__main__":
    main()
