"""How the ``unsure`` threshold is chosen from a small validation split: the record behind
``status.choose_min_confidence`` (validation photos choose; a fold's held-out photos judge).

For a run of ``binwise train`` on a fold tree (``benchmarks/studies/train_own_data.py`` makes them, or
``held_out.validation_tree``), this scores the model's validation split (as training split it) and
the tree's test/ folder (photos of the dataset's train split that the run never saw), then compares
threshold rules fitted on validation by what they give on the held-out photos: the share answered
and its accuracy, against the most any threshold could answer there at the target.

    python benchmarks/tuning/tune_status_threshold.py RUN_DIR FOLD_TREE [--target 0.99]

Measured 2026-12-07 on the whole-network models of ``train_own_data.py``'s trashnet folds (162
validation photos, 404 held out; at 34f54b0):

| rule (fitted on validation, target 99%) | fold 0: answered, right | fold 1: answered, right |
|---|---|---|
| calibrated mean, vetoed by the count (binwise's) | 49.3%, 99.50% | 73.3%, 96.28% |
| the same for a 99.5% target | 29.7%, 100% | 60.4%, 98.36% |
| mistakes counted alone (binwise before) | 33.2%, 99.25% | 71.5%, 96.89% |
| counted, shrunk toward the calibrated mean by 400 photos | 46.0%, 99.46% | 71.5%, 96.89% |
| best possible on the held-out photos | 62.9% | 54.2% |

Binwise's rule answers most where the target holds and no rule holds it on fold 1: 162 validation
photos are too few to place a 99% threshold reliably. An earlier whole-network run on fold 0 (before
near-duplicates were grouped) had two confident mistakes among its 162 validation photos: counting
set the threshold at 0.998 and answered 4.2% of the held-out photos, the calibrated rule 50.0% at
99.5% (best possible 54.0%).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from binwise.model import status
from binwise.data.dataset import load_dataset
from binwise.data.loader import predict_logits
from binwise.model.file import load_model
from binwise.training.config import TrainConfig, read_config_file
from binwise.training.splits import make_splits


def counted(confidence: np.ndarray, right: np.ndarray, target: float, prior_photos: float) -> float:
    """The lowest threshold whose answered photos' accuracy, counted and shrunk toward their mean
    calibrated confidence by ``prior_photos`` photos' weight (0: counted alone), reaches ``target``."""
    thresholds, _, accuracy = status.risk_coverage(confidence, right)
    answered = np.arange(1, len(thresholds) + 1)
    estimate = (accuracy * answered + prior_photos * np.cumsum(thresholds) / answered) / (answered + prior_photos)
    ends = np.append(thresholds[1:] != thresholds[:-1], True)
    meets = np.flatnonzero(ends & (estimate >= target))
    return float(thresholds[meets[-1]]) if len(meets) else 1.0 + 1e-9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a binwise train run directory (model.safetensors, config.yaml)")
    parser.add_argument("tree", type=Path, help="the fold tree it trained on (train/ and test/)")
    parser.add_argument("--target", type=float, default=0.99)
    args = parser.parse_args()
    model_file = load_model(args.run / "model.safetensors")
    splits = make_splits(load_dataset(args.tree), TrainConfig.from_dict(read_config_file(args.run / "config.yaml")))
    scored = {}
    for name, samples in (("validation", splits.val), ("held out", splits.test)):
        logits, labels, _ = predict_logits(model_file.model.eval(), model_file.preprocessing, samples)
        scored[name] = (logits.numpy(), labels.numpy())
    temperature = status.fit_temperature(*scored["validation"])
    (val_logits, val_labels), (test_logits, test_labels) = scored["validation"], scored["held out"]
    val_p, test_p = status.softmax(val_logits, temperature), status.softmax(test_logits, temperature)
    val_conf, val_right = val_p.max(1), val_p.argmax(1) == val_labels
    test_conf, test_right = test_p.max(1), test_p.argmax(1) == test_labels
    rules = {"calibrated mean, vetoed by the count (binwise's)": status.choose_min_confidence(val_conf, val_right,
                                                                                               args.target),
             "the same, for half the target's error": status.choose_min_confidence(val_conf, val_right,
                                                                                   (1 + args.target) / 2),
             **{f"counted, shrunk by {k} photos": counted(val_conf, val_right, args.target, k)
                for k in (0, 100, 400)}}
    order = np.argsort(-test_conf)
    accuracy = np.cumsum(test_right[order]) / np.arange(1, len(order) + 1)
    meets = np.flatnonzero(accuracy >= args.target)
    print(f"{len(val_labels)} validation photos, {len(test_labels)} held out; temperature {temperature:.3f}; "
          f"best possible at {args.target:.0%}: {(meets[-1] + 1) / len(order) if len(meets) else 0:.1%} answered")
    for name, threshold in rules.items():
        answered = test_conf >= threshold
        print(f"{name:50s} threshold {threshold:.3f}: {answered.mean():6.1%} answered, "
              f"{test_right[answered].mean() if answered.any() else float('nan'):.2%} right")


if __name__ == "__main__":
    main()
