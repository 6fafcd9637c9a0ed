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
VALIDATION_SHARE = 0.2


def validation_tree(out: Path, seed: int = 0) -> Path:
    """An ImageFolder tree of links into garbage26: train/ its train split less
    ``VALIDATION_SHARE`` of each class (chosen reproducibly), test/ those held-out photos."""
    import random

    from binwise.paths import resolve_data

    if (out / "test").is_dir():
        return out
    rng = random.Random(seed)
    for folder in sorted((resolve_data() / "train").iterdir()):
        photos = sorted(p for p in folder.iterdir() if is_image_file(p))
        rng.shuffle(photos)
        held_out = round(VALIDATION_SHARE * len(photos))
        for split, chosen in (("test", photos[:held_out]), ("train", photos[held_out:])):
            (out / split / folder.name).mkdir(parents=True, exist_ok=True)
            for photo in chosen:
                (out / split / folder.name / photo.name).symlink_to(photo.resolve())
    return out


def validation_model(tree: Path) -> Path:
    """The quickstart's probe trained on ``tree``'s train split (once)."""
    model = tree / "run" / "model.safetensors"
    if not model.exists():
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        subprocess.run([sys.executable, "-m", "binwise.cli", "train", str(tree), "--mode", "head",
                        "--run-dir", str(model.parent)], check=True, env=env, capture_output=True)
    return model
