"""Which photos train, which validate and which test: honest splits, recorded.

A dataset with ``train/`` and ``test/`` folders keeps its own test split; validation is a seeded,
stratified ``val_fraction`` of train. A flat folder (``DIR/<class>/``) is split by binwise, seeded
and stratified: ``test_fraction`` of its photos are the test split and ``val_fraction`` of them
validation (default 80/10/10). Test photos never train, never choose a setting and are never part
of retrain-on-all. For a flat folder the split is recorded (relative path, SHA-256 and split of
every photo) in the run and in the model file, so ``binwise eval`` can score exactly the photos
the model never saw.

Every split binwise makes keeps near-duplicate photos (burst shots, one object photographed twice:
``near_duplicates``) on one side, so validation and a seeded test split score photos the model has
not as good as seen. A dataset's own test folder is kept as it is; ``binwise check-data`` lists the
near-duplicates it shares with train.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..data.dataset import Dataset, Sample, stratified_split
from ..fileio import sha256_of_file
from ..data.near_duplicates import group_ids
from .config import TrainConfig


@dataclass
class Splits:
    train: list[Sample]  # trains the model (the monitored phases)
    val: list[Sample]  # monitors training and chooses between settings
    test: list[Sample]  # the final report only
    seeded: bool  # split by binwise (a flat folder), not by the dataset's own folders


def make_splits(dataset: Dataset, config: TrainConfig) -> Splits:
    if dataset.test and not config.val_fraction:  # nothing to draw: no photo need be looked at
        return Splits(dataset.train, [], dataset.test, seeded=False)
    groups = near_duplicate_groups(dataset.train, config.workers)
    if dataset.test:
        rest, val = _held_out(dataset.train, config.val_fraction, config.seed, groups)
        return Splits(rest, val, dataset.test, seeded=False)
    rest, test = stratified_split(dataset.train, config.test_fraction, config.seed, groups)
    # val_fraction of all photos, taken from what the test split left
    rest, val = _held_out(rest, config.val_fraction / (1 - config.test_fraction), config.seed + 1, groups)
    return Splits(rest, val, test, seeded=True)


def near_duplicate_groups(samples: list[Sample], threads: int) -> dict:
    """Each photo's near-duplicate group id (``near_duplicates.group_ids``), by path."""
    ids = group_ids([s.path for s in samples], max(threads, 1))
    return {s.path: g for s, g in zip(samples, ids)}


def with_extra(splits: Splits, extra: list[Sample]) -> tuple[Splits, int]:
    """``splits`` with ``extra`` photos added to the training split alone, so validation and test
    stay comparable between runs; and how many were left out because their content is already in
    the dataset (a photo of the test split sent back as feedback must not train) or repeated."""
    if not extra:  # nothing to compare: no photo need be read
        return splits, 0
    known = {sha256_of_file(s.path) for s in splits.train + splits.val + splits.test}
    added = []
    for sample in extra:
        digest = sha256_of_file(sample.path)
        if digest not in known:
            known.add(digest)
            added.append(sample)
    return Splits(splits.train + added, splits.val, splits.test, splits.seeded), len(extra) - len(added)


def _held_out(samples: list[Sample], fraction: float, seed: int, groups: dict) -> tuple[list[Sample], list[Sample]]:
    return stratified_split(samples, fraction, seed, groups) if fraction > 0 else (samples, [])


def manifest(splits: Splits, dataset: Dataset, extra: list[Sample] = ()) -> list[dict]:
    """Every photo's path relative to the dataset, SHA-256 and split (train / val / test; photos of
    ``extra`` folders in train are "extra", with their own path)."""
    extra_paths = {s.path for s in extra}
    rows = []
    for name in ("train", "val", "test"):
        for s in getattr(splits, name):
            outside = s.path in extra_paths
            rows.append({"path": str(s.path) if outside else os.path.relpath(s.path, dataset.root),
                         "sha256": sha256_of_file(s.path), "split": "extra" if outside else name})
    return rows
