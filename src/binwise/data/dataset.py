"""Photo datasets: ImageFolder trees, class order, seeded stratified splits, checks.

A dataset is ``DIR/train/<Class>/*`` with an optional ``DIR/test/<Class>/*``, or a single
``DIR/<Class>/*`` tree. Class order is the tutorial's when the folders are garbage26's 26 classes
(its checkpoints depend on that order) and the sorted folder names otherwise; the order used is
saved in every model file through the taxonomy.

Unreadable photos never stop a run: the loaders (``binwise.data.loader``) skip them and report their
names. This module does not import torch: ``check-data`` and ``eval`` of an ONNX model run without it.
"""

from __future__ import annotations

import random
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BinwiseError
from ..images import is_image_file, open_image
from ..taxonomy.classes import PRESETS, Taxonomy

TRAIN_DIR, TEST_DIRS = "train", ("test", "val")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    path: Path
    label: int


@dataclass
class Dataset:
    """The photos of one dataset, labelled by ``taxonomy``; ``test`` is empty without a test folder."""

    root: Path
    taxonomy: Taxonomy
    train: list[Sample]
    test: list[Sample] = field(default_factory=list)

    def class_counts(self, samples: list[Sample]) -> list[int]:
        counts = [0] * self.taxonomy.num_classes
        for s in samples:
            counts[s.label] += 1
        return counts


def taxonomy_for(class_names: list[str], name: str = "") -> Taxonomy:
    """A preset taxonomy (in its own index order) when the folders are exactly its classes,
    otherwise the sorted folder names without bins."""
    for preset in PRESETS.values():
        if set(class_names) == set(preset.classes_en):
            return preset
    return Taxonomy.from_names(sorted(class_names), name=name)


def class_folders(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_samples(split_dir: Path, taxonomy: Taxonomy) -> list[Sample]:
    """Every image file under ``split_dir/<Class>/`` (recursively), in a stable order."""
    index = {name: i for i, name in enumerate(taxonomy.classes_en)}
    samples = []
    for name in class_folders(split_dir):
        if name not in index:
            raise BinwiseError(f"class folder {name!r} is not one of the {taxonomy.num_classes} training "
                               "classes", split_dir / name)
        files = sorted(p for p in (split_dir / name).rglob("*") if p.is_file() and is_image_file(p))
        samples += [Sample(p, index[name]) for p in files]
    return samples


def extra_samples(folders: list[Path], taxonomy: Taxonomy) -> list[Sample]:
    """The photos of extra ImageFolder trees (``FOLDER/<Class>/*``, e.g. ``binwise feedback
    export``'s) labelled by ``taxonomy``: each class folder must be one of its classes."""
    samples = []
    for folder in folders:
        if not folder.is_dir():
            raise BinwiseError("extra photo folder not found", folder)
        unknown = [name for name in class_folders(folder) if name not in taxonomy.classes_en]
        if unknown:
            raise BinwiseError(f"class folders {', '.join(map(repr, unknown))} are not classes of the dataset "
                               f"({', '.join(taxonomy.classes_en[:5])}{', ...' if taxonomy.num_classes > 5 else ''})",
                               folder)
        samples += list_samples(folder, taxonomy)
    return samples


def load_dataset(root: str | Path, taxonomy_file: str | Path | None = None) -> Dataset:
    """Read the layout of an ImageFolder dataset (no image is decoded here).

    Classes and bins come from ``taxonomy_file``, else from a ``taxonomy.yaml`` at the root, else
    from a preset matching the folders (garbage26), else the sorted folder names without bins.
    """
    from ..taxonomy import files as taxonomy_files

    root = Path(root)
    if not root.is_dir():
        raise BinwiseError("dataset folder not found", root)
    train_dir = root / TRAIN_DIR if (root / TRAIN_DIR).is_dir() else root
    names = class_folders(train_dir)
    if not names:
        raise BinwiseError("no class folders: expected DIR/train/<class>/*.jpg or DIR/<class>/*.jpg", train_dir)
    if taxonomy_file is None and (root / taxonomy_files.DATASET_FILE).is_file():
        taxonomy_file = root / taxonomy_files.DATASET_FILE
    if taxonomy_file is not None:
        taxonomy = taxonomy_files.for_folders(taxonomy_files.read_taxonomy(taxonomy_file)[0], names, str(train_dir))
    else:
        taxonomy = taxonomy_for(names, name=root.name)
    train = list_samples(train_dir, taxonomy)
    if not train:
        raise BinwiseError("no image files in the class folders", train_dir)
    test_dir = next((root / d for d in TEST_DIRS if train_dir != root and (root / d).is_dir()), None)
    test = list_samples(test_dir, taxonomy) if test_dir else []
    return Dataset(root, taxonomy, train, test)


def stratified_split(samples: list[Sample], fraction: float, seed: int,
                     groups: dict[Path, int] | None = None) -> tuple[list[Sample], list[Sample]]:
    """Split into (rest, held_out) with ``fraction`` of every class held out, reproducibly.

    Every class with at least two photos keeps at least one on each side. ``groups`` (a group id per
    photo path, ``near_duplicates.group_ids``) keeps the photos of a group on one side: whole groups
    are drawn until the class's share is reached, and a group that spans classes follows the side
    its first class gave it. Without groups, or with no group of two, the split is the plain one.
    """
    if not 0 < fraction < 1:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    groups = groups or {}
    by_class: dict[int, list[Sample]] = defaultdict(list)
    for s in samples:
        by_class[s.label].append(s)
    rng = random.Random(seed)
    rest, held_out = [], []
    side: dict[int, bool] = {}  # group id -> held out
    for label in sorted(by_class):
        units: dict[object, list[Sample]] = {}
        for s in by_class[label]:
            units.setdefault(groups.get(s.path, s.path), []).append(s)
        order = list(units.values())
        rng.shuffle(order)
        n = len(by_class[label])
        k = min(max(round(n * fraction), 1), n - 1) if n >= 2 else 0
        held = 0
        for unit in order:
            group = groups.get(unit[0].path)
            if group in side:
                take = side[group]
            else:  # take the unit while it brings the held-out count nearer to k, keeping one photo back
                take = held < k and held + len(unit) - k <= k - held and held + len(unit) < n
            if group is not None:
                side[group] = take
            held += len(unit) if take else 0
            (held_out if take else rest).extend(unit)
    return rest, held_out


def warn_skipped(errors: list[str]) -> None:
    for e in errors:
        log.warning("skipped unreadable photo: %s", e)


def check_dataset(root: str | Path, threads: int = 4) -> dict:
    """Decode every photo and report class counts per split, unreadable files, exact duplicates
    (same bytes) inside and across splits, near-duplicates across splits (``near_duplicates``), and a
    summary of image sizes."""
    from concurrent.futures import ThreadPoolExecutor

    from ..fileio import sha256_of_file

    dataset = load_dataset(root)
    splits = {"train": dataset.train, "test": dataset.test}

    def inspect(sample: Sample):
        digest = sha256_of_file(sample.path)
        try:
            return digest, open_image(sample.path).size, None
        except BinwiseError as e:
            return digest, None, str(e)

    by_digest: dict[str, list[tuple[str, Path]]] = defaultdict(list)
    sizes, unreadable = [], []
    report: dict = {"root": str(dataset.root), "taxonomy": dataset.taxonomy.name or "folder names",
                    "classes": list(dataset.taxonomy.classes_en), "splits": {}}
    with ThreadPoolExecutor(threads) as pool:  # Pillow decodes without holding the GIL
        for split, samples in splits.items():
            counts = dataset.class_counts(samples)
            report["splits"][split] = {"photos": len(samples), "per_class": dict(zip(dataset.taxonomy.classes_en, counts))}
            for sample, (digest, size, error) in zip(samples, pool.map(inspect, samples)):
                by_digest[digest].append((split, sample.path))
                if error:
                    unreadable.append(error)
                else:
                    sizes.append(size)
    groups = [[f"{split}: {path}" for split, path in group] for group in by_digest.values() if len(group) > 1]
    report["unreadable"] = unreadable
    report["duplicates_within_split"] = [g for g in groups if len({s.split(":")[0] for s in g}) == 1]
    report["duplicates_across_splits"] = [g for g in groups if len({s.split(":")[0] for s in g}) > 1]
    report["near_duplicates_across_splits"] = near_duplicates_across(dataset.test, dataset.train, threads)
    if sizes:
        widths, heights = sorted(w for w, _ in sizes), sorted(h for _, h in sizes)
        shorter = sorted(min(s) for s in sizes)
        report["sizes"] = {
            "width": {"min": widths[0], "median": widths[len(widths) // 2], "max": widths[-1]},
            "height": {"min": heights[0], "median": heights[len(heights) // 2], "max": heights[-1]},
            "shorter_side_below_224": sum(s < 224 for s in shorter),
        }
    return report


def near_duplicates_across(test: list[Sample], train: list[Sample], threads: int = 4) -> list[dict]:
    """Test photos with a near-duplicate in train (``near_duplicates``), exact copies included: they
    score what the model has as good as seen."""
    from .near_duplicates import near_pairs, signatures

    if not test or not train:
        return []
    pairs = near_pairs(signatures([s.path for s in test], threads), signatures([s.path for s in train], threads))
    return [{"test": str(test[i].path), "train": str(train[j].path), "similarity": round(sim, 4)}
            for i, j, sim in sorted(pairs, key=lambda p: -p[2])]
