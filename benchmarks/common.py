"""A validation model for choosing export settings: int8 must agree with fp32 on photos the model
never saw, and a model trained on all of garbage26's train split has seen every train photo (its
top two classes are far apart there, so every variant agrees). So the quickstart's probe is trained
again on the train split less ``VALIDATION_SHARE`` of each class, and measured on those."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from binwise.images import is_image_file

REPO = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "results"  # one folder per script
VALIDATION_SHARE = 0.2


FOLDS = round(1 / VALIDATION_SHARE)  # disjoint validation splits that together cover the train split


def validation_tree(out: Path, seed: int = 0, fold: int = 0, source: Path | None = None,
                    train_percent: int = 100) -> Path:
    """An ImageFolder tree of links into ``source`` (default garbage26): test/ ``VALIDATION_SHARE``
    of each class of its train split (fold ``fold`` of ``FOLDS``, each class shuffled reproducibly;
    the last fold takes what rounding leaves), train/ the rest, or a seeded ``train_percent``% of
    each class of it (the same held-out photos, a smaller dataset)."""
    import random

    from binwise.paths import resolve_data

    if (out / "test").is_dir():
        return out
    rng, subset = random.Random(seed), random.Random(train_percent)
    for folder in sorted(((source or resolve_data()) / "train").iterdir()):
        photos = sorted(p for p in folder.iterdir() if is_image_file(p))
        rng.shuffle(photos)
        share = round(VALIDATION_SHARE * len(photos))
        end = (fold + 1) * share if fold < FOLDS - 1 else len(photos)
        held_out, rest = photos[fold * share:end], photos[:fold * share] + photos[end:]
        if train_percent < 100:
            rest = sorted(subset.sample(sorted(rest), max(1, round(len(rest) * train_percent / 100))))
        for split, chosen in (("test", held_out), ("train", rest)):
            (out / split / folder.name).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                (out / split / folder.name / photo.name).symlink_to(photo.resolve())
    return out


def validation_trees(root: Path, folds: int = 1) -> list[Path]:
    """The first ``folds`` validation trees: fold 0 at ``root``, fold k beside it at ``root``-fold{k}."""
    if not 1 <= folds <= FOLDS:
        raise SystemExit(f"--folds must be 1 to {FOLDS}")
    return [validation_tree(root if k == 0 else root.with_name(f"{root.name}-fold{k}"), fold=k) for k in range(folds)]


def validation_model(tree: Path) -> Path:
    """The quickstart's probe trained on ``tree``'s train split (once)."""
    model = tree / "run" / "model.safetensors"
    if not model.exists():
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-m", "binwise.cli", "train", str(tree), "--mode", "head",
                        "--run-dir", str(model.parent)], check=True, env=env, capture_output=True)
    return model


def over_folds(per_fold: list[dict], photos: list[int]) -> dict:
    """Each variant's closeness to fp32 over all folds (``per_fold``: variant -> row with
    ``disagreements`` and ``kl_from_fp32``, measured on ``photos`` photos each): the photos that
    differ of all, the agreement, and the photo-weighted mean KL divergence."""
    total = sum(photos)
    rows = {}
    for name in per_fold[0]:
        if any("disagreements" not in fold.get(name, {}) for fold in per_fold):
            continue  # a variant that failed on some fold
        differ = sum(fold[name]["disagreements"] for fold in per_fold)
        rows[name] = {"disagreements": differ, "photos": total, "top1_agreement": 1 - differ / total,
                      "kl_from_fp32": sum(fold[name]["kl_from_fp32"] * n for fold, n in zip(per_fold, photos)) / total,
                      "disagreements_by_fold": [fold[name]["disagreements"] for fold in per_fold]}
    return rows
