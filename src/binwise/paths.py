"""Where data and pretrained weights are: a flag, then an environment variable, then ../shared.

Data and weights never live in the repository. When nothing is found the error says exactly what
is missing, where binwise looked and where to get it. Pretrained weights may also be
``torchvision`` or a URL, downloaded once (``binwise.downloads``).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from .errors import BinwiseError

DATA_ENV = "BINWISE_DATA"
PRETRAINED_ENV = "BINWISE_PRETRAINED"

DEFAULT_DATASET = "data/garbage26"
DEFAULT_PRETRAINED = "weights/mobilenet_v2_1.0_224_quant.tflite"
IMAGENET_SAMPLES = "images/imagenet"


def shared_candidates() -> list[Path]:
    """Where a ``shared/`` folder may be: beside or in the current directory, and beside this
    checkout when binwise runs from one (an installed package has no checkout to look beside)."""
    package = Path(__file__).resolve().parent
    candidates = [Path.cwd().parent / "shared", Path.cwd() / "shared"]
    if package.parent.name == "src":  # src/binwise in a checkout
        candidates.append(package.parents[2] / "shared")
    return list(dict.fromkeys(c.resolve() for c in candidates))


def shared_dirs() -> list[Path]:
    """The candidate ``shared/`` folders that exist."""
    return [c for c in shared_candidates() if c.is_dir()]


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
    places = " or ".join(str(shared / shared_relative) for shared in shared_candidates())
    raise BinwiseError(f"no {what} given: pass it as an argument, set ${env}, or place it at {places}. {how}")


def resolve_data(flag: str | os.PathLike | None = None) -> Path:
    return _resolve(flag, DATA_ENV, DEFAULT_DATASET, "dataset",
                    "garbage26 is the folder ori_data/ of github.com/LeBronLiHD/ZJU2021_Garbage_Classification "
                    "(commit 9cdb7ec; no licence stated, so for development and tests only), with its code-named "
                    "folders renamed as docs/training.md#getting-garbage26 shows. Any dataset is an ImageFolder "
                    "tree: DIR/train/<class>/*.jpg and DIR/test/<class>/*.jpg, or DIR/<class>/*.jpg.")


def resolve_pretrained(flag: str | os.PathLike | None = None) -> Path:
    """The weights file from ``flag``, $BINWISE_PRETRAINED or ../shared, in that order.

    ``torchvision`` and http(s) URLs are downloaded once into torch.hub's cache
    (``binwise.downloads``) and the cached file is returned.
    """
    from .downloads import fetch, is_remote

    spec = flag or os.environ.get(PRETRAINED_ENV)
    if spec and is_remote(spec):
        return fetch(spec)
    return _resolve(flag, PRETRAINED_ENV, DEFAULT_PRETRAINED, "pretrained weights",
                    "The easy way: --pretrained torchvision (or BINWISE_PRETRAINED=torchvision) downloads "
                    "torchvision's ImageNet MobileNetV2 once (14 MB). The default file comes from "
                    "github.com/google-coral/test_data (commit 104342d, Apache-2.0). binwise reads TFLite, "
                    "MindSpore .ckpt, torchvision .pth and binwise .safetensors files, or an http(s) URL of one.")


def resolve_imagenet_samples() -> Path:
    return _resolve(None, "BINWISE_IMAGENET_SAMPLES", IMAGENET_SAMPLES, "ImageNet sample photos", "")


def free_port() -> int:
    """A TCP port free on the loopback interface now (for a child server or a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
