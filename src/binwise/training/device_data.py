"""A dataset decoded once and kept on the device as uint8, augmented a whole batch at a time.

On a GPU, MobileNetV2 trains faster than two CPU cores can decode JPEGs, so for datasets that fit
(garbage26 at 256x256 is 0.4 GB as uint8) binwise decodes every photo once, stores it on the device
and runs the training augmentation there (``augment.BatchAugment``). It works on
CPU tensors too, which is how the tests check it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..errors import BinwiseError
from ..images import open_image
from .augment import store_square

def decode_square(path, size: int) -> np.ndarray:
    """Shorter side to ``size``, centre crop ``size`` x ``size``, as uint8 CHW (``augment.store_square``)."""
    return np.array(store_square(open_image(path, at_least=size), size), dtype=np.uint8).transpose(2, 0, 1)


def fits_on_device(num_images: int, device: torch.device, size: int, fraction: float = 0.25) -> bool:
    """Whether the photos stored as ``size`` x ``size`` squares (``AugmentConfig.store_size``) would
    take at most ``fraction`` of the device's free memory."""
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return num_images * 3 * size * size <= fraction * free


class DeviceImages:
    """The readable photos of ``samples`` as one uint8 tensor (N, 3, S, S) on ``device``, with
    their labels; unreadable ones are left out and named in ``skipped``."""

    def __init__(self, samples: list, device: torch.device, size: int, threads: int = 8):
        def decode(sample):
            try:
                return decode_square(sample.path, size)
            except BinwiseError:
                return None

        with ThreadPoolExecutor(threads) as pool:  # Pillow releases the GIL while decoding
            arrays = list(pool.map(decode, samples))
        self.skipped = [str(s.path) for s, a in zip(samples, arrays) if a is None]
        kept = [(a, s.label) for s, a in zip(samples, arrays) if a is not None]
        if not kept:
            raise BinwiseError("none of the training photos could be read")
        self.images = torch.from_numpy(np.stack([a for a, _ in kept])).to(device)
        self.labels = torch.as_tensor([label for _, label in kept], device=device)

    def __len__(self) -> int:
        return len(self.labels)

    def batches(self, index_batches):
        """(uint8 images, labels) of the photos at each list of indices in ``index_batches``
        (e.g. one process's part of each global batch, see ``distributed.rank_batches``)."""
        for index in index_batches:
            index = torch.as_tensor(index, dtype=torch.long, device=self.images.device)
            yield self.images[index], self.labels[index]
