"""The device-resident data path, checked on CPU tensors (the same code runs on CUDA)."""

import torch

from binwise.data.dataset import Sample
from binwise.training.augment import BatchAugment, cpu_transform
from binwise.training.config import TUTORIAL_AUGMENT, AugmentConfig
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
    out = BatchAugment(MINUS_ONE_TO_ONE, TUTORIAL_AUGMENT)(batch)
    assert out.shape == (16, 3, 224, 224)
    assert out.min() >= -1.0 - 1e-5 and out.max() <= 1.0 + 1e-5
    # the same photo 16 times gives 16 different crops
    flat = out.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(float("inf")).min() > 1.0


def test_resident_mode_is_only_chosen_on_cuda():
    assert not fits_on_device(10, torch.device("cpu"), 256)


def test_cpu_and_device_augmentation_crop_from_the_same_square():
    """One spec, two paths: with the randomness switched off (whole square, no flip, no jitter) the
    CPU transform of a photo and the device transform of its stored square give the same pixels,
    so where the data lives does not change what the model learns."""
    from PIL import Image

    photo = some_photos(1)[0]
    spec = AugmentConfig(scale_min=1.0, scale_max=1.0, ratio_min=1.0, ratio_max=1.0, flip=0.0, jitter=0.0)
    on_cpu = cpu_transform(MINUS_ONE_TO_ONE, spec)(Image.open(photo).convert("RGB"))
    square = torch.from_numpy(decode_square(photo, spec.store_size))[None]
    on_device = BatchAugment(MINUS_ONE_TO_ONE, spec)(square)[0]
    assert on_cpu.shape == on_device.shape == (3, 224, 224)
    # both resize the same 256 square to 224 (torchvision antialiased vs kornia bilinear)
    assert (on_cpu - on_device).abs().mean() < 0.03


def test_cpu_and_device_augmentation_draw_crops_of_the_same_sizes():
    """With the default spec both paths draw crops covering the same range of the square: compare
    how much of a white square on black the crops keep, over many draws."""
    from PIL import Image

    spec = AugmentConfig(flip=0.0, jitter=0.0)
    square = Image.new("RGB", (256, 256), (0, 0, 0))
    square.paste((255, 255, 255), (64, 64, 192, 192))
    torch.manual_seed(0)
    cpu = torch.stack([cpu_transform(MINUS_ONE_TO_ONE, spec)(square) for _ in range(200)])
    batch = torch.from_numpy(__import__("numpy").asarray(square).transpose(2, 0, 1).copy())[None].expand(200, -1, -1, -1)
    device = BatchAugment(MINUS_ONE_TO_ONE, spec)(batch.contiguous())
    white_cpu, white_device = (cpu > 0).float().mean(), (device > 0).float().mean()
    assert abs(white_cpu - white_device) < 0.05
