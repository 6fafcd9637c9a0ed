"""Weight import and export: TFLite, MindSpore .ckpt and torchvision .pth to and from binwise.

``import_weights(path)`` reads any supported file into a ``ModelFile``, telling the format from the
file's first bytes rather than its suffix (a renamed file still works, and a file that is none of
them gets one clear error instead of a parser's traceback). The readers share
``build.build_model_file``: given tensors already renamed to binwise's names, it infers the width
and class count from their shapes, checks every name and shape, and picks the class names.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BinwiseError
from ..taxonomy.classes import Taxonomy
from .build import choose_taxonomy


FORMATS = ("tflite", "mindspore-ckpt", "torchvision-pth", "binwise")


def detect_format(path: str | os.PathLike) -> str:
    """One of FORMATS, from the file's magic bytes; BinwiseError when it is none of them."""
    path = Path(path)
    if not path.is_file():
        raise BinwiseError("no such weights file", path)
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise BinwiseError("empty file, not a weights file", path)
    if head[4:8] == b"TFL3":
        return "tflite"
    # torch.save writes a zip archive; files from torch < 1.6 are a bare pickle (protocol 2, and any
    # other pickle is sent the same way so that torch's safe unpickler is what refuses it).
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and 2 <= head[1] <= 5):
        return "torchvision-pth"
    # safetensors: 8-byte little-endian header length, then the JSON header.
    if len(head) > 8 and head[8:9] == b"{":
        return "binwise"
    # A .ckpt starts with field 1 (Checkpoint.value) as a length-delimited protobuf record.
    if head[:1] == b"\x0a":
        return "mindspore-ckpt"
    raise BinwiseError("unrecognised weights format: expected a TFLite flatbuffer, a MindSpore .ckpt, "
                       "a torchvision .pth or a binwise .safetensors file", path)


def import_weights(path: str | os.PathLike, taxonomy: Taxonomy | None = None):
    """Read any supported weights file into a ModelFile (model in eval mode).

    ``taxonomy`` names the classes; without it 1000 outputs are ImageNet and 26 are garbage26.
    """
    fmt = detect_format(path)
    if fmt == "mindspore-ckpt":
        from .mindspore_ckpt import read_ckpt
        return read_ckpt(path, taxonomy)
    if fmt == "torchvision-pth":
        from .torchvision_pth import read_torchvision
        return read_torchvision(path, taxonomy)
    if fmt == "tflite":
        from .tflite import read_tflite
        model_file = read_tflite(path)
    else:
        from ..model.file import load_model
        model_file = load_model(path)
    if taxonomy is not None:
        model_file.taxonomy = choose_taxonomy(model_file.model.config.num_classes, taxonomy, path)
    return model_file
