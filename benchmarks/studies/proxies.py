"""Harder datasets built from garbage26's train split, for choosing training settings.

binwise is judged on datasets it never sees (other real garbage photos, other class lists), so its
settings are chosen on these proxies, never on a test split. Each is a folder of symbolic links
into garbage26/train (no photo is copied), written under OUT (default: ~/.cache/binwise/proxies):

- ``materials``: the 8 material classes (Newspaper, Cardboard, Paper, Glassware, Glass Bottle,
  Plastic Bottle, Metalware, Cans) as a flat folder, so binwise makes its own 80/10/10 split;
- ``imbalanced``: all 26 classes, flat, with Battery cut to a quarter of its photos;
- ``fewshot``: all 26 classes, flat, 10 photos per class (binwise's split leaves 8 to train);
- ``bins4``: the photos regrouped into their 4 bins as classes, flat.

    python benchmarks/studies/proxies.py [--data DIR] [--out OUT]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
from pathlib import Path

from binwise.paths import resolve_data
from binwise.taxonomy.classes import GARBAGE26

MATERIALS = ["Newspaper", "Cardboard", "Paper", "Glassware", "Glass Bottle", "Plastic Bottle", "Metalware", "Cans"]


def default_out() -> Path:
    from binwise.training.feature_cache import default_cache_dir

    return default_cache_dir() / "proxies"


def link_all(photos: dict[str, list[Path]], folder: Path) -> None:
    """``folder/<class>/<photo name>`` -> each photo, replacing what was there."""
    if folder.exists():
        shutil.rmtree(folder)
    for name, files in photos.items():
        (folder / name).mkdir(parents=True)
        for f in files:
            (folder / name / f"{f.parent.name}-{f.name}").symlink_to(f.resolve())


def build(data: Path, out: Path) -> dict[str, Path]:
    train = data / "train"
    by_class = {c: sorted(p for p in (train / c).iterdir() if p.is_file()) for c in GARBAGE26.classes_en}
    rng = random.Random(0)
    cut = {c: files[: max(1, len(files) // 4)] if c == "Battery" else files for c, files in by_class.items()}
    few = {c: rng.sample(files, min(10, len(files))) for c, files in by_class.items()}
    bins: dict[str, list[Path]] = {}
    for i, c in enumerate(GARBAGE26.classes_en):
        bins.setdefault(GARBAGE26.class_bins[i], []).extend(by_class[c])
    proxies = {"materials": {c: by_class[c] for c in MATERIALS}, "imbalanced": cut, "fewshot": few, "bins4": bins}
    paths = {}
    for name, photos in proxies.items():
        link_all(photos, out / name)
        paths[name] = out / name
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="garbage26 (default: $BINWISE_DATA or ../shared/data/garbage26)")
    parser.add_argument("--out", help="where the proxies go (default: ~/.cache/binwise/proxies)")
    args = parser.parse_args()
    for name, path in build(resolve_data(args.data), Path(args.out) if args.out else default_out()).items():
        count = sum(1 for _ in path.rglob("*") if not os.path.isdir(_))
        print(f"{name:12s} {count:5d} photos  {path}")


if __name__ == "__main__":
    main()
