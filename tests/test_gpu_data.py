"""The device-resident data path, checked on CPU tensors (the same code runs on CUDA)."""

import torch

from binwise.data import Sample
from binwise.training.augment import BatchAugment
from binwise.training.device_data import DeviceImages, decode_square, fits_on_device
from binwise.paths import resolve_data
from binwise.preprocessing import MINUS_ONE_TO_ONE


def some_photos(n):
    root = resolve_data() / "train"
    classes = sorted(p for p in root.iterdir() if p.is_dir())[:n]
    return [next(iter(sorted(c.glob("*.jpg")))) for c in classes]


def test_decode_square_keeps_the_centre():
    photo = some_photos(1)[0]
    array = decode_square(photo, 64)
    assert array.shape == (3, 64, 64) and array.dtype.name == "uint8"


def test_device_images_batches_follow_the_order_and_skip_unreadable(tmp_path):
    photos = some_photos(6)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg")
    samples = [Sample(p, i) for i, p in enumerate(photos)] + [Sample(broken, 6)]
    data = DeviceImages(samples, torch.device("cpu"), size=64, threads=2)
    assert data.images.shape == (6, 3, 64, 64) and data.images.dtype == torch.uint8
    assert data.skipped == [str(broken)]
    order = torch.tensor([5, 0, 3, 1, 4, 2])
    batches = list(data.batches(order.split(4)))
    assert [len(y) for _, y in batches] == [4, 2]
    assert torch.cat([y for _, y in batches]).tolist() == order.tolist()
    for x, y in batches:
        for image, label in zip(x, y):
            assert torch.equal(image, data.images[label])  # images stay paired with their labels


def test_batch_augment_is_random_per_sample_and_normalised():
    torch.manual_seed(0)
    photo = torch.from_numpy(decode_square(some_photos(1)[0], 256))
    batch = photo.expand(16, -1, -1, -1).contiguous()
    out = BatchAugment(MINUS_ONE_TO_ONE)(batch)
    assert out.shape == (16, 3, 224, 224)
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5
    # the same photo 16 times gives 16 different crops
    flat = out.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(float("inf")).min() > 1.0


def test_resident_mode_is_only_chosen_on_cuda():
    assert not fits_on_device(10, torch.device("cpu"))
