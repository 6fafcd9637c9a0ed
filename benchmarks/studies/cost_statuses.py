"""Do cost-aware statuses keep hazardous items out of the wrong bin? Before and after ``max_cost``.

    .venv/bin/python benchmarks/studies/cost_statuses.py [--folds 5]

On each validation fold of garbage26's train split (``common.validation_trees``: 20% of each class
held out, the rest trains ``binwise train --mode head``; never the test split), the held-out photos
are scored once and their statuses decided twice: with the model's fitted thresholds less
``max_cost`` (before) and with them (after). For each: photos answered ``ok`` and their accuracy,
hazardous items among the held-out photos, those whose top class is in another bin, and those of
them answered ``ok`` (the mistakes a user acts on without doubt), with the mean cost of a photo.
trashnet's classes have no bins (and no hazardous class), so it has nothing to measure here.
Writes ``benchmarks/results/cost_statuses/<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders
from common import RESULTS, validation_model, validation_trees  # noqa: E402

from binwise.data.dataset import load_dataset
from binwise.evaluation.evaluate import classify_samples, hazardous_answered_wrong
from binwise.inference.classifier import Classifier
from binwise.model import status
from binwise.taxonomy.costs import hazardous_bins


def fold_rows(model: Path, tree: Path) -> dict:
    classifier = Classifier.load(model)
    taxonomy = classifier.taxonomy
    samples = load_dataset(tree).test
    probabilities, labels, _, _, similarity = classify_samples(classifier, samples, 32, 2)
    costs = status.BinCosts.of(taxonomy)
    bin_of = np.array(taxonomy.bin_index_of_classes())
    hazardous = np.isin(bin_of[labels], hazardous_bins(taxonomy))
    elsewhere = hazardous & (bin_of[probabilities.argmax(1)] != bin_of[labels])
    fitted = classifier.calibration
    rows = {}
    for name, thresholds in (("before", dataclasses.replace(fitted.thresholds, max_cost=None)),
                             ("after", fitted.thresholds)):
        calibration = dataclasses.replace(fitted, thresholds=thresholds)
        summary = status.answered_summary(probabilities, labels, similarity, thresholds, costs=costs)
        rows[name] = {"photos": len(labels), "answered_ok": summary["answered"],
                      "answered_correct": summary["answered_correct"],
                      "hazardous_items": int(hazardous.sum()), "hazardous_top1_in_another_bin": int(elsewhere.sum()),
                      "hazardous_ok_in_another_bin": hazardous_answered_wrong(probabilities, labels, similarity,
                                                                              calibration, taxonomy),
                      "mean_cost_per_photo": float(costs.realized(probabilities.argmax(1), labels).mean())}
    rows["max_cost"] = fitted.thresholds.max_cost
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5, help="validation folds of garbage26's train split (1-5)")
    parser.add_argument("--tree", type=Path, default=Path(tempfile.gettempdir()) / "binwise-held-out",
                        help="where the validation trees and their models go (kept for reruns)")
    parser.add_argument("--name", default=datetime.date.today().isoformat(), help="results file name")
    args = parser.parse_args(argv)
    trees = validation_trees(args.tree, args.folds)
    folds = [fold_rows(validation_model(tree), tree) for tree in trees]
    totals = {side: {k: sum(f[side][k] for f in folds) for k in folds[0][side] if k != "mean_cost_per_photo"}
              for side in ("before", "after")}
    result = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "machine": platform.machine(),
              "cpus": os.cpu_count(), "folds": folds, "totals": totals}
    out = RESULTS / "cost_statuses"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    lines = [f"# Cost-aware statuses on garbage26's validation folds ({result['date']}, {result['cpus']} CPUs)", "",
             "| fold | max_cost | statuses | answered ok (right) | hazardous items | top-1 in another bin | "
             "answered ok in another bin | mean cost per photo |", "|---|---|---|---|---|---|---|---|"]
    for k, fold in enumerate([*folds, {"max_cost": None, **totals}]):
        for side in ("before", "after"):
            row = fold[side]
            cost = f"{row['mean_cost_per_photo']:.3f}" if "mean_cost_per_photo" in row else "–"
            fitted = "–" if fold["max_cost"] is None else f"{fold['max_cost']:.2f}"
            lines.append(f"| {k if k < len(folds) else 'all'} | {fitted} | {side} | {row['answered_ok']} of "
                         f"{row['photos']} ({row['answered_correct']}) | {row['hazardous_items']} | "
                         f"{row['hazardous_top1_in_another_bin']} | {row['hazardous_ok_in_another_bin']} | {cost} |")
    (out / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
