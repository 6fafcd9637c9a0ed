"""The 1000 ImageNet classes, for imported ImageNet weights (TFLite, torchvision, MindSpore Hub).

torchvision ships the names with its code, so no file or network is needed.
"""

from __future__ import annotations

from functools import cache

from ..taxonomy.classes import Taxonomy


@cache
def imagenet_taxonomy() -> Taxonomy:
    from torchvision.models import MobileNet_V2_Weights

    return Taxonomy.from_names(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"], name="imagenet")
