"""The training augmentation: one spec (``AugmentConfig``), two implementations that agree.

Every training photo is first reduced to a ``store_size`` square (shorter side to that size, centre
crop: the region that evaluation's resize + centre crop also sees), then randomly cropped and
resized to ``crop_size`` (by default the model's input size), flipped, colour-jittered, optionally given a TrivialAugment or
RandAugment policy and random erasing, and normalised as the model expects.

- ``cpu_transform``: torchvision v2 on one PIL photo (DataLoader workers, cached views);
- ``BatchAugment``: kornia on a uint8 batch already on the device (``device_data``), with per-photo
  random parameters.

Both start from the same square, so where the data lives does not change what the model learns.
The policies exist only on the CPU path; ``BatchAugment`` refuses a spec that asks for one.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from ..errors import BinwiseError
from ..images import resize_and_crop
from ..preprocessing import Preprocessing
from .config import AugmentConfig

def store_square(img, size: int):
    """The centre ``size`` square of a PIL photo, shorter side resized to ``size``."""
    return resize_and_crop(img, Preprocessing(input_size=size, resize_size=size))


def crop_side(pre: Preprocessing, spec: AugmentConfig) -> int:
    """The side of a training crop: ``spec.crop_size``, or the model's input size when it is 0."""
    return spec.crop_size or pre.input_size


def cpu_transform(pre: Preprocessing, spec: AugmentConfig) -> v2.Compose:
    """PIL photo -> normalised float tensor (3, H, W), per ``spec``."""
    steps = [
        v2.Lambda(lambda img: store_square(img, spec.store_size)),
        v2.RandomResizedCrop(crop_side(pre, spec), scale=(spec.scale_min, spec.scale_max),
                             ratio=(spec.ratio_min, spec.ratio_max), antialias=True),
        v2.RandomHorizontalFlip(spec.flip),
    ]
    if spec.jitter:
        steps.append(v2.ColorJitter(brightness=spec.jitter, contrast=spec.jitter, saturation=spec.jitter))
    if spec.policy == "trivialaugment":
        steps.append(v2.TrivialAugmentWide())
    elif spec.policy == "randaugment":
        steps.append(v2.RandAugment())
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(pre.mean, pre.std)]
    if spec.erasing:
        steps.append(v2.RandomErasing(spec.erasing))
    return v2.Compose(steps)


def describe(pre: Preprocessing, spec: AugmentConfig) -> str:
    """A stable text of everything that decides an augmented view (for cache keys)."""
    return f"{spec!r}|{pre.to_dict()!r}"


class BatchAugment(torch.nn.Module):
    """``cpu_transform`` on a uint8 batch (N, 3, S, S) of ``store_size`` squares, per-photo random."""

    def __init__(self, pre: Preprocessing, spec: AugmentConfig):
        super().__init__()
        import kornia.augmentation as K

        if spec.policy != "none":
            raise BinwiseError(f"augment policy {spec.policy!r} runs on the CPU path only; "
                               "use --data-on-device no")
        side = crop_side(pre, spec)
        steps = [K.RandomResizedCrop((side, side), scale=(spec.scale_min, spec.scale_max),
                                     ratio=(spec.ratio_min, spec.ratio_max)),
                 K.RandomHorizontalFlip(p=spec.flip)]
        if spec.jitter:
            steps.append(K.ColorJitter(spec.jitter, spec.jitter, spec.jitter, p=1.0))
        self.augment = torch.nn.Sequential(*steps)
        self.erase = K.RandomErasing(p=spec.erasing) if spec.erasing else None
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = (self.augment(images.float() / 255.0) - self.mean) / self.std
        return self.erase(x) if self.erase is not None else x
