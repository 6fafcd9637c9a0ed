"""Weight import and export: TFLite, MindSpore .ckpt and torchvision .pth to and from binwise.

``import_weights(path)`` reads any supported file into a ``ModelFile``, telling the format from the
file's first bytes rather than its suffix (a renamed file still works, and a file that is none of
them gets one clear error instead of a parser's traceback). The readers share ``build_model_file``:
given tensors already renamed to binwise's names, it infers the width and class count from their
shapes, checks every name and shape, and picks the class names.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BinwiseError
from ..taxonomy.classes import GARBAGE26, Taxonomy

# The standard MobileNetV2 widths, tried in this order when reading foreign weights.
KNOWN_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.3, 1.4)
CLASSIFIER_WEIGHT = "head.classifier.weight"

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


def choose_taxonomy(num_classes: int, taxonomy: Taxonomy | None, path: str | os.PathLike) -> Taxonomy:
    """The given class names if their count fits, else ImageNet for 1000 outputs, garbage26 for 26."""
    if taxonomy is not None:
        if taxonomy.num_classes != num_classes:
            raise BinwiseError(f"the weights have {num_classes} outputs but {taxonomy.num_classes} class "
                               f"names were given", path)
        return taxonomy
    if num_classes == 1000:
        from .imagenet import imagenet_taxonomy
        return imagenet_taxonomy()
    if num_classes == GARBAGE26.num_classes:
        return GARBAGE26
    raise BinwiseError(f"the weights have {num_classes} outputs; say what the classes are "
                       f"(--classes FILE with one class name per line)", path)


def build_model_file(tensors: dict, path: str | os.PathLike, taxonomy: Taxonomy | None,
                     source_format: str, dropout: float = 0.0):
    """A ModelFile from tensors under binwise names (symmetric padding, ImageNet preprocessing).

    The width and class count come from the tensors' shapes; names and shapes are then checked
    against that architecture, so a file with missing, extra or mis-shaped tensors is refused.
    """
    import torch

    from ..model.network import MobileNetV2, MobileNetV2Config
    from ..model.file import ModelFile, load_state_dict_checked
    from ..fileio import sha256_of_file
    from ..preprocessing import IMAGENET

    classifier = tensors.get(CLASSIFIER_WEIGHT)
    if classifier is None:
        raise BinwiseError("not a MobileNetV2: no classifier weight found", path)
    if classifier.dim() != 2:
        raise BinwiseError(f"not a MobileNetV2: classifier weight of shape {tuple(classifier.shape)}", path)
    num_classes = classifier.shape[0]
    class_names = choose_taxonomy(num_classes, taxonomy, path)

    def build(width: float) -> MobileNetV2:
        return MobileNetV2(MobileNetV2Config(num_classes=num_classes, width_mult=width, dropout=dropout))

    # The first width whose shapes all fit. If none does, the width that fits best, so that the
    # check below names the tensors that are really wrong.
    model = next((m for m in map(build, KNOWN_WIDTHS) if _misfits(m, tensors) == 0), None)
    if model is None:
        model = min(map(build, KNOWN_WIDTHS), key=lambda m: _misfits(m, tensors))
    load_state_dict_checked(model, {k: v.to(torch.float32) for k, v in tensors.items()}, path)
    model.eval()
    provenance = {"imported_from": source_format, "source_file": Path(path).name,
                  "source_sha256": sha256_of_file(path)}
    return ModelFile(model, class_names, IMAGENET, provenance)


def _misfits(model, tensors: dict) -> int:
    """How many of the model's tensors are missing from ``tensors`` or have another shape there."""
    return sum(k not in tensors or tensors[k].shape != v.shape for k, v in model.state_dict().items()
               if v.is_floating_point())
