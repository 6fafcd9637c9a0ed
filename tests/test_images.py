import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2

from binwise.errors import BinwiseError
from binwise.images import load_crop, load_for_model, open_image, resize_and_crop
from binwise.paths import resolve_data
from binwise.preprocessing import IMAGENET, MINUS_ONE_TO_ONE


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    return buf.getvalue()


@pytest.mark.parametrize("size", [(500, 375), (375, 500), (224, 224), (300, 1001)])
def test_eval_preprocessing_equals_torchvision(size):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    ours = load_for_model(img, IMAGENET)
    reference = v2.Compose([v2.Resize(256), v2.CenterCrop(224), v2.PILToTensor(),
                            v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET.mean, IMAGENET.std)])(img)
    assert ours.shape == (3, 224, 224)
    # in grey levels: resizing only the crop's source box moves a few pixels by one level
    levels = np.abs(ours - reference.numpy()) * 255 * np.asarray(IMAGENET.std, np.float32)[:, None, None]
    assert levels.max() < 1.001 and (levels > 0.5).mean() < 0.005


def test_crops_of_real_photos_equal_torch_own_antialiased_resize():
    # torch's resize of a uint8 tensor is its own code, not Pillow's: this holds whichever Pillow
    # (or Pillow-SIMD, see scripts/install-pillow-simd.sh) decodes and resizes the photos
    photos = sorted((resolve_data() / "test").rglob("*.jpg"))
    reference = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    differing = []
    for photo in photos:
        img = open_image(photo)
        ours = load_crop(img, IMAGENET).astype(np.int16)
        theirs = reference(torch.from_numpy(np.array(img)).permute(2, 0, 1)).permute(1, 2, 0).numpy()
        levels = np.abs(ours - theirs)
        assert levels.max() <= 1, photo
        differing.append((levels > 0).mean())
    assert len(photos) == 130 and np.mean(differing) < 0.001


def test_minus_one_to_one_range():
    white = load_for_model(Image.new("RGB", (300, 300), (255, 255, 255)), MINUS_ONE_TO_ONE)
    black = load_for_model(Image.new("RGB", (300, 300), (0, 0, 0)), MINUS_ONE_TO_ONE)
    assert np.allclose(white, 1.0) and np.allclose(black, -1.0)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    out = open_image(jpeg_bytes(img, exif=exif.tobytes()))
    assert out.size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "CMYK", "P", "RGBA", "LA", "I;16", "1"])
def test_modes_become_rgb(mode):
    img = Image.new("RGB", (16, 16), (10, 200, 30)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, "TIFF" if mode in ("CMYK", "I;16") else "PNG")
    out = open_image(buf.getvalue())
    assert out.mode == "RGB" and out.size == (16, 16)


def test_transparent_area_becomes_white():
    img = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    assert open_image(buf.getvalue()).getpixel((0, 0)) == (255, 255, 255)


def test_broken_inputs_name_the_file(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    text = tmp_path / "text.jpg"
    text.write_text("not an image")
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(jpeg_bytes(Image.new("RGB", (64, 64)))[:200])
    for path, problem in [(empty, "empty file"), (text, "not an image"), (truncated, "damaged image"),
                          (tmp_path / "missing.jpg", "no such file")]:
        with pytest.raises(BinwiseError, match=problem) as e:
            open_image(path)
        assert str(path) in str(e.value)


def test_decompression_bomb_is_refused():
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG")  # tiny file, 400 Mpx declared
    with pytest.raises(BinwiseError, match="too large"):
        open_image(buf.getvalue())


def test_small_images_are_upscaled():
    assert resize_and_crop(Image.new("RGB", (1, 1)), IMAGENET).size == (224, 224)


def test_extreme_strip_is_cropped_before_resizing():
    strip = Image.new("RGB", (20000, 2), (200, 10, 10))
    strip.paste((10, 10, 200), (10000, 0, 20000, 2))  # right half blue: the centre crop straddles both
    out = resize_and_crop(strip, IMAGENET)
    assert out.size == (224, 224)
    assert out.getpixel((0, 100))[0] > 150 and out.getpixel((223, 100))[2] > 150


def test_large_jpeg_decodes_reduced_but_gives_nearly_the_same_crop():
    photo = sorted((resolve_data() / "test").rglob("*.jpg"))[5]
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").resize((2400, 1800), Image.BICUBIC).save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()
    reduced = open_image(data, at_least=256)
    assert reduced.size == (600, 450)  # 1/4: 1/8 would make the short side 225 < 256
    assert open_image(data).size == (2400, 1800)
    fast = load_crop(data, IMAGENET).astype(np.float32)
    full = np.asarray(resize_and_crop(open_image(data), IMAGENET), dtype=np.float32)
    assert fast.shape == full.shape == (224, 224, 3)
    assert np.abs(fast - full).mean() < 1.0 and 0 < np.abs(fast - full).max() < 12
