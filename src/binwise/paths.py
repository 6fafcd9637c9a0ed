"""Where data and pretrained weights are: a flag, then an environment variable, then ../shared.

Data and weights never live in the repository. When nothing is found the error says exactly what
is missing and how to provide it.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import BinwiseError

DATA_ENV = "BINWISE_DATA"
PRETRAINED_ENV = "BINWISE_PRETRAINED"

DEFAULT_DATASET = "data/garbage26"
DEFAULT_PRETRAINED = "weights/mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_SAMPLES = "images/imagenet"


def shared_dirs() -> list[Path]:
    """Candidate ``shared/`` folders: beside the current directory and beside this checkout."""
    repo_root = Path(__file__).resolve().parents[2]
    candidates = [Path.cwd().parent / "shared", Path.cwd() / "shared", repo_root.parent / "shared"]
    seen, found = set(), []
    for c in candidates:
        c = c.resolve()
        if c not in seen and c.is_dir():
            seen.add(c)
            found.append(c)
    return found


def _resolve(flag: str | os.PathLike | None, env: str, shared_relative: str, what: str, how: str) -> Path:
    if flag:
        path = Path(flag)
        if not path.exists():
            raise BinwiseError(f"{what} not found", path)
        return path
    if os.environ.get(env):
        path = Path(os.environ[env])
        if not path.exists():
            raise BinwiseError(f"{what} not found (from ${env})", path)
        return path
    for shared in shared_dirs():
        path = shared / shared_relative
        if path.exists():
            return path
    raise BinwiseError(f"no {what} given: pass it as an argument, set ${env}, or place it at "
                       f"../shared/{shared_relative}. {how}")


def resolve_data(flag: str | os.PathLike | None = None) -> Path:
    return _resolve(flag, DATA_ENV, DEFAULT_DATASET, "dataset",
                    "A dataset is an ImageFolder tree: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg, "
                    "or DIR/<class>/*.jpg.")


def resolve_pretrained(flag: str | os.PathLike | None = None) -> Path:
    return _resolve(flag, PRETRAINED_ENV, DEFAULT_PRETRAINED, "pretrained weights",
                    "binwise reads ImageNet MobileNetV2 weights from a TFLite file "
                    "(mobilenet_v2_1.0_224_quant.tflite), a MindSpore .ckpt or a torchvision .pth.")


def resolve_imagenet_samples() -> Path:
    return _resolve(None, "BINWISE_IMAGENET_SAMPLES", IMAGENET_SAMPLES, "ImageNet sample photos", "")
