"""Photos into torch batches: the eval transform, a Dataset that decodes each photo once into one or
more views, seeded augmentation, and a DataLoader that decodes in worker processes.

Unreadable photos never stop a run: they give no views and their error, which ``collate`` turns
into the batch's skip report.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from .dataset import Sample
from ..errors import BinwiseError
from ..images import normalize, open_image, resize_and_crop
from ..preprocessing import Preprocessing


def eval_transform(pre: Preprocessing):
    """binwise's one eval path (``images.resize_and_crop`` + ``normalize``) as a PIL -> tensor transform."""
    return lambda img: torch.from_numpy(normalize(np.asarray(resize_and_crop(img, pre)), pre))


class PhotoDataset(torch.utils.data.Dataset):
    """Decodes each photo once and returns the views ``make_views(i, img)`` makes of it: a
    (V, 3, H, W) tensor and the V view ids (so one photo can give several crops for one decode).

    An unreadable photo gives no views and its error, which ``collate`` turns into a skip report.
    ``at_least`` lets large JPEGs decode reduced (see ``images.open_image``): evaluation passes the
    model's resize size, so it sees exactly the pixels ``predict`` does.
    """

    def __init__(self, samples: list[Sample], make_views, at_least: int | None = None):
        self.samples = samples
        self.make_views = make_views
        self.at_least = at_least

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            img = open_image(sample.path, at_least=self.at_least)
        except BinwiseError as e:
            return i, None, None, sample.label, str(e)
        images, view_ids = self.make_views(i, img)
        return i, images, view_ids, sample.label, None


def single_view(transform):
    """``make_views`` for one view per photo (training batches, evaluation)."""
    return lambda i, img: (transform(img).unsqueeze(0), [0])


@contextlib.contextmanager
def seeded_rng(*keys: int, device: torch.device | None = None):
    """Run the block with torch's random generator (CPU, and ``device``'s if CUDA) seeded from
    ``keys`` alone, then restore the generator state it had."""
    cuda = [device] if device is not None and device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(int(np.random.SeedSequence(keys).generate_state(1, np.uint64)[0]))
        yield


def seeded_view(transform, seed: int, epoch: int):
    """``make_views`` for one randomly augmented view per photo, its randomness drawn from
    (seed, epoch, photo index) only: the same whichever process or DataLoader worker decodes it,
    so training does not depend on the number of processes or workers."""
    def make_views(i, img):
        with seeded_rng(seed, epoch, i):
            return transform(img).unsqueeze(0), [0]
    return make_views


@dataclass
class Batch:
    """One row per view: ``indices`` (position in the sample list), ``view_ids`` and ``labels``
    say whose view each row of ``images`` (N, 3, H, W) is."""

    indices: torch.Tensor
    view_ids: torch.Tensor
    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[str]  # errors of the unreadable photos left out of this batch


def collate(items) -> Batch:
    good = [it for it in items if it[1] is not None]
    skipped = [it[4] for it in items if it[1] is None]
    if not good:
        empty = torch.empty(0, dtype=torch.long)
        return Batch(empty, empty, torch.empty(0, 3, 1, 1), empty, skipped)
    rows = [(i, v, label) for i, _, view_ids, label, _ in good for v in view_ids]
    return Batch(torch.tensor([r[0] for r in rows]), torch.tensor([r[1] for r in rows]),
                 torch.cat([it[1] for it in good]), torch.tensor([r[2] for r in rows]), skipped)


def photo_loader(dataset: PhotoDataset, batch_size: int, workers: int, batches=None,
                 seed: int = 0, pin_memory: bool = False) -> torch.utils.data.DataLoader:
    """A DataLoader that decodes in ``workers`` processes while the model runs in this one.

    ``batches`` (lists of indices, one per batch) replaces consecutive batches of ``batch_size``.
    """
    generator = torch.Generator().manual_seed(seed)
    batching = {"batch_sampler": batches} if batches is not None else {"batch_size": batch_size}
    return torch.utils.data.DataLoader(
        dataset, **batching, num_workers=workers, collate_fn=collate,
        pin_memory=pin_memory, generator=generator, persistent_workers=False,
        prefetch_factor=4 if workers else None)


def predict_logits(model, pre: Preprocessing, samples: list[Sample], batch_size: int = 32, workers: int = 2,
                   device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """A torch model's logits and the labels of the readable photos (eval view, bf16 on CUDA),
    and the errors naming the unreadable ones. Training's validation and test scores use it;
    ``binwise eval`` of a model file goes through ``Classifier`` instead, for every model format."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loader = photo_loader(PhotoDataset(samples, single_view(eval_transform(pre)), at_least=pre.resize_size),
                          batch_size, workers if len(samples) > batch_size else 0, pin_memory=device.type == "cuda")
    logits, labels, skipped = [], [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")
    with torch.inference_mode(), autocast:
        for batch in loader:
            skipped += batch.skipped
            if len(batch.labels):
                logits.append(model(batch.images.to(device, memory_format=torch.channels_last)).float().cpu())
                labels.append(batch.labels)
    model.train(was_training)
    if not logits:
        return torch.empty(0, 0), torch.empty(0, dtype=torch.long), skipped
    return torch.cat(logits), torch.cat(labels), skipped
