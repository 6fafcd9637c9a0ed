"""A ``ModelFile`` from foreign MobileNetV2 tensors already renamed to binwise's names (shared by
the TFLite, MindSpore and torchvision readers)."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import BinwiseError
from ..taxonomy.classes import GARBAGE26, Taxonomy

# The standard MobileNetV2 widths, tried in this order when reading foreign weights.
KNOWN_WIDTHS = (1.0, 0.75, 0.5, 0.35, 1.3, 1.4)
CLASSIFIER_WEIGHT = "head.classifier.weight"


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
