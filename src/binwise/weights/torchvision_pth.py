"""torchvision MobileNetV2 state dicts (.pth), read with ``torch.load(weights_only=True)`` only.

binwise's MobileNetV2 has torchvision's module layout under ``backbone.``, so the names map
one to one: ``features.N...`` -> ``backbone.features.N...`` and ``classifier.1.*`` (after the
dropout at index 0) -> ``head.classifier.*``. torchvision pads symmetrically and was trained on
ImageNet-normalised pixels, which the model file records.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

from ..errors import BinwiseError

# torchvision's classifier is Sequential(Dropout(0.2), Linear).
TORCHVISION_DROPOUT = 0.2
# Wrappers that training scripts commonly save around the state dict.
WRAPPER_KEYS = ("state_dict", "model")


def binwise_name(name: str) -> str | None:
    """The binwise name of a torchvision MobileNetV2 parameter, None for one binwise does not keep."""
    name = name.removeprefix("module.")  # saved from DataParallel / DistributedDataParallel
    if name.endswith(".num_batches_tracked"):
        return None
    if name.startswith("features."):
        return "backbone." + name
    if name.startswith("classifier.1."):
        return "head.classifier." + name.removeprefix("classifier.1.")
    raise KeyError(name)


def read_torchvision(path: str | os.PathLike, taxonomy=None):
    """A torchvision MobileNetV2 state dict (plain, or under "state_dict" / "model") as a ModelFile."""
    import torch

    from .build import build_model_file

    path = Path(path)
    if not path.is_file():
        raise BinwiseError("no such weights file", path)
    if path.stat().st_size == 0:
        raise BinwiseError("empty file, not a torchvision .pth", path)
    check_unpacked_size(path)
    try:
        # weights_only: the unpickler builds tensors and plain containers and refuses anything else,
        # so a file cannot run code. Any failure of it on hostile bytes becomes one error line.
        with warnings.catch_warnings():  # e.g. about pickle protocols: the error below says enough
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise BinwiseError("refused: the file holds Python objects, not only tensors, and binwise never "
                           f"runs code from a weights file ({_specific_line(e)})", path) from None
    except Exception as e:  # noqa: BLE001 -- corrupt archives fail in many ways; one line says it
        raise BinwiseError(f"not a readable torchvision .pth (damaged or truncated?): {_specific_line(e)}",
                           path) from None
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state:
        raise BinwiseError(f"expected a state dict of tensors, found {type(state).__name__}", path)
    tensors = {}
    for name, value in state.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise BinwiseError(f"entry {name!r} is a {type(value).__name__}, not a tensor", path)
        try:
            mapped = binwise_name(name)
        except KeyError:
            raise BinwiseError(f"unknown parameter {name!r}: not a torchvision MobileNetV2", path) from None
        if mapped is not None:
            if not value.is_floating_point():
                raise BinwiseError(f"parameter {name!r} has type {value.dtype}, expected floating point", path)
            tensors[mapped] = value
    return build_model_file(tensors, path, taxonomy, "torchvision-pth", dropout=TORCHVISION_DROPOUT)


# MobileNetV2 1.4 is 25 MB in fp32; a .pth (a zip) that unpacks to more is not one, and a small
# file of deflated zeros could otherwise make torch.load allocate gigabytes.
MAX_UNPACKED_BYTES = 512 << 20


def check_unpacked_size(path: Path) -> None:
    """Refuse a .pth whose zip entries unpack to more than MAX_UNPACKED_BYTES (legacy, non-zip
    files are bounded by their own size)."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(entry.file_size for entry in archive.infolist())
    except (zipfile.BadZipFile, OSError) as e:
        raise BinwiseError(f"not a readable torchvision .pth (damaged zip: {e})", path) from None
    if unpacked > MAX_UNPACKED_BYTES:
        raise BinwiseError(f"refused: the file unpacks to {unpacked / 2**20:,.0f} MB, more than any MobileNetV2's "
                           f"weights ({MAX_UNPACKED_BYTES >> 20} MB at most)", path)


def _specific_line(error: Exception) -> str:
    """The line of torch.load's message that names the problem, without its advice paragraphs."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    advice = ("Weights only load failed", "Please file an issue", "Check the ")
    specific = [line for line in lines if not line.startswith(advice)]
    text = (specific or lines or [type(error).__name__])[0]
    return text.split(". ")[0].rstrip(".")
