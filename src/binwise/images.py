"""Opening photos the way real photos arrive: any mode, any orientation, sometimes broken.

Every entry point (training data, evaluation, predict, the service) opens images here, so they all
see the same pixels. Failures raise BinwiseError naming the source and the problem. Kept free of
torch so the ONNX inference path can use it.
"""

from __future__ import annotations

import io
import os
import warnings
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Union

import numpy as np
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError
# registers the decoders of DECODERS that Pillow's preinit() leaves to be loaded on demand
from PIL import AvifImagePlugin, TiffImagePlugin, WebPImagePlugin  # noqa: F401

from .errors import BinwiseError
from .jpeg_structure import ends_in_grey, ran_out_of_data, unsupported_jpeg
from .preprocessing import Preprocessing

if TYPE_CHECKING:
    from .memory import DecodeBudget

# Refuse images whose declared size would take more than ~600 MB as RGB: a "decompression bomb"
# is a tiny file that expands to gigabytes. 8000x8000 photos (64 Mpx) still open.
MAX_PIXELS = 200_000_000
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".avif", ".heic", ".heif"}
# The only Pillow decoders a photo reaches (JPEG includes MPO, the JPEG many phone cameras write).
# Pillow would otherwise try every plugin it has: EPS through Ghostscript, PSD, ICNS, FITS, ...
# AVIF is Pillow's own (libavif); HEIC/HEIF, the iPhone's default, comes from pillow-heif (libheif),
# the decoder Pillow's documentation points to. Both read their size from the header, so the pixel
# limit and the decode budget apply to them before any pixel is decoded, as to the others.
DECODERS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF", "AVIF", "HEIF")
Image.preinit()
pillow_heif.register_heif_opener()

ImageSource = Union[str, os.PathLike, bytes, Image.Image]


def describe(source: ImageSource) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, bytes):
        return f"<{len(source)} bytes>"
    return "<image>"


def open_image(source: ImageSource, name: str | None = None, at_least: int | None = None,
               max_pixels: int = MAX_PIXELS, reserve: Callable[[int], object] | None = None) -> Image.Image:
    """Decode ``source`` (path, bytes or PIL image) to an RGB PIL image, upright per its EXIF tag.

    Grayscale, 16-bit, CMYK, palette and alpha images become RGB (transparent areas on white);
    animated images give their first frame. With ``at_least``, a JPEG may be decoded at 1/2, 1/4
    or 1/8 of its size (libjpeg's DCT scaling) as long as both sides stay at least that long: a
    12-megapixel phone photo then decodes about 7x faster, and after the resize to the model's
    input its pixels differ from a full decode by 0.25 levels on average (of 255).

    Images of more than ``max_pixels`` are refused from their header (the service's uploads get a
    lower limit than local files). ``reserve`` is called with ``decode_bytes(...)`` after the
    header is read and before any pixel is, to hold that much of a memory budget (it raises
    BinwiseError when it may not): ``load_crop`` holds it until the photo is cropped.
    """
    name = name or describe(source)
    if isinstance(source, Image.Image):
        return to_rgb(source)
    if isinstance(source, bytes):
        if not source:
            raise BinwiseError("empty file (0 bytes)", name, kind="empty_file")
        stream = io.BytesIO(source)
    else:
        path = Path(source)
        try:
            if not path.is_file():
                raise BinwiseError("no such file" if not path.exists() else "not a file", name, kind="no_such_file")
            if path.stat().st_size == 0:
                raise BinwiseError("empty file (0 bytes)", name, kind="empty_file")
        except OSError as e:  # a name too long for the file system, a folder it may not enter, ...
            raise BinwiseError(f"cannot read it ({e.strerror or e})", name, kind="no_such_file") from None
        stream = path
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(stream, formats=DECODERS) as img:
                if img.width * img.height > max_pixels:
                    raise BinwiseError(f"image too large ({img.width}x{img.height} pixels; "
                                       f"at most {max_pixels:,} pixels)", name, kind="image_too_large")
                img.seek(0)
                full_size = img.size
                if at_least:
                    img.draft(None, (at_least, at_least))  # a no-op for formats other than JPEG
                if reserve:
                    reserve(decode_bytes(img, full_size))
                img.load()
                if (img.format in ("JPEG", "MPO") and ends_in_grey(img)
                        and ran_out_of_data(img, first_bytes(stream, None))):
                    raise BinwiseError("damaged image (JPEG whose data ends before its last rows: the file is cut "
                                       "short, or its header declares a larger image)", name, kind="damaged_image")
                # in place: otherwise Pillow returns a copy of every upright photo
                ImageOps.exif_transpose(img, in_place=True)
                return to_rgb(img)
    except BinwiseError:
        raise
    except UnidentifiedImageError:
        head = first_bytes(stream, HEADER_BYTES)
        other = unsupported_format(head)
        if other:
            raise unsupported(other, name) from None
        image_format = format_by_signature(head)
        if image_format:  # Pillow says "cannot identify" also for a known format with a broken header
            raise BinwiseError(f"damaged image ({image_format} whose header cannot be read)", name,
                               kind="damaged_image") from None
        raise BinwiseError("not an image, or an image format that cannot be read", name, kind="not_an_image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise BinwiseError(f"image too large (decompression bomb: {e})", name, kind="image_too_large") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        if isinstance(e, OSError) and e.errno is not None:  # the file, not its data: permission denied, ...
            raise BinwiseError(f"cannot read it ({e.strerror or e})", name, kind="no_such_file") from None
        # a JPEG kind Pillow identifies but has no decoder for, or truncated or corrupt data
        other = unsupported_format(first_bytes(stream, HEADER_BYTES))
        if other:
            raise unsupported(other, name) from None
        raise BinwiseError(f"damaged image ({e})", name, kind="damaged_image") from None


def unsupported(image_format: str, name: str) -> BinwiseError:
    return BinwiseError(f"unsupported image format ({image_format}); binwise reads 8-bit JPEG, PNG, WebP, GIF, BMP, "
                        "TIFF, AVIF and HEIC: convert it to one of them", name, kind="unsupported_format")


# Bytes per pixel of Pillow's image modes (it keeps RGB in 4 bytes a pixel), for decode_bytes
MODE_BYTES = {"1": 1, "L": 1, "P": 1, "LA": 2, "PA": 2, "La": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}
# Decoders that decode into a buffer of their own (RGBA) and copy it into Pillow's image
COPYING_DECODERS = {"WEBP", "TIFF"}


def decode_bytes(img: Image.Image, full_size: tuple[int, int]) -> int:
    """About how much memory decoding ``img`` takes at its peak, in bytes: an opened image whose
    pixels are not yet read, after any ``draft``; ``full_size`` is its size before the draft.

    The decoded image, plus one more RGB image for the conversion or EXIF rotation; a decoder's own
    copy (WebP, TIFF); 16-bit grayscale's float64 scaling (``to_rgb``); and for a progressive JPEG
    libjpeg's buffer of every DCT coefficient of the whole image at full size (2 bytes each, for
    each component at its sampling), whatever the draft: a 9400x9400 progressive JPEG of 1 MB takes
    about 0.5 GB that way (4:4:4), while a baseline JPEG decodes a few rows at a time.
    """
    pixels = img.width * img.height
    total = pixels * (MODE_BYTES.get(img.mode, 4) + 4)
    if img.format in COPYING_DECODERS:
        total += pixels * 4
    if img.mode.startswith("I"):
        total += pixels * 8
    if img.format in ("JPEG", "MPO") and (img.info.get("progressive") or img.info.get("progression")):
        sampling = [(h, v) for _, h, v, _ in getattr(img, "layer", [])] or [(1, 1)] * 3
        h_max, v_max = max(h for h, _ in sampling), max(v for _, v in sampling)
        total += 2 * full_size[0] * full_size[1] * sum(h * v for h, v in sampling) // (h_max * v_max)
    return total


# The first bytes of the image formats binwise reads (IMAGE_SUFFIXES); WebP is RIFF....WEBP.
SIGNATURES = {b"\xff\xd8\xff": "JPEG", b"\x89PNG\r\n\x1a\n": "PNG", b"GIF87a": "GIF", b"GIF89a": "GIF",
              b"BM": "BMP", b"II*\x00": "TIFF", b"MM\x00*": "TIFF"}


# enough for a JPEG's frame header after its EXIF, ICC profile and other application segments
HEADER_BYTES = 1 << 20


def first_bytes(stream: io.BytesIO | Path, count: int | None = 16) -> bytes:
    """The first ``count`` bytes of ``stream`` (all of them with None)."""
    if isinstance(stream, io.BytesIO):
        return stream.getvalue()[:count]
    with open(stream, "rb") as f:
        return f.read(count)


# Image formats people send that binwise does not decode, by their first bytes, so that they are
# called unsupported rather than "not an image".
UNSUPPORTED_SIGNATURES = {b"8BPS": "Photoshop PSD", b"%!PS": "PostScript / EPS", b"\xc5\xd0\xd3\xc6": "EPS",
                          b"%PDF": "PDF", b"\x00\x00\x01\x00": "Windows icon", b"\xff\x0a": "JPEG XL",
                          b"\x00\x00\x00\x0cJXL ": "JPEG XL", b"\x00\x00\x00\x0cjP  ": "JPEG 2000",
                          b"\xff\x4f\xff\x51": "JPEG 2000", b"icns": "Apple icon", b"qoif": "QOI"}
# ISO base media files say what they are in the brand after "ftyp" at offset 4: these are photos
# binwise reads (DECODERS); any other brand is a video or a format it does not
READ_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"mif1": "HEIF", b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def unsupported_format(head: bytes) -> str | None:
    if head.startswith(b"\xff\xd8\xff"):
        return unsupported_jpeg(head)
    if head[4:8] == b"ftyp" and head[8:12] not in READ_BRANDS:
        return "an ISO media file that is not a HEIC or AVIF photo (a video?)"
    if head.lstrip()[:5] == b"<?xml" or head.lstrip()[:4] == b"<svg":
        return "SVG (a drawing, not a photo)"
    if head[:1] == b"P" and head[1:2] in b"1234567" and head[2:3].isspace():
        return "Netpbm (PBM, PGM, PPM)"
    return next((name for signature, name in UNSUPPORTED_SIGNATURES.items() if head.startswith(signature)), None)


def format_by_signature(head: bytes) -> str | None:
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in READ_BRANDS:
        return READ_BRANDS[head[8:12]]
    return next((name for signature, name in SIGNATURES.items() if head.startswith(signature)), None)


def to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grayscale: scale to 8 bits by the range the format can hold
        array = np.asarray(img, dtype=np.float64)
        top = 65535.0 if array.max() > 255 or img.mode.startswith("I;16") else 255.0
        img = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        return img.convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        rgba = img.convert("RGBA")
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def resize_and_crop(img: Image.Image, pre: Preprocessing) -> Image.Image:
    """Resize the shorter side to ``resize_size`` (aspect kept), then centre-crop ``input_size``.

    Torchvision's Resize(int) + CenterCrop arithmetic, done in one step: only the source box the
    crop comes from is resized, straight to the crop's size. The filter positions are the same,
    so this equals resizing everything and cropping to within one grey level, on 0.06% of pixels;
    it took 1.6 ms instead of 2.6 ms on a 500x375 photo, and a long thin strip (a 1 KB 20000x2
    PNG) never becomes a gigabyte-sized intermediate image.
    """
    w, h = img.size
    short, long = min(w, h), max(w, h)
    new_short, new_long = pre.resize_size, int(pre.resize_size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    resample = {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[pre.interpolation]
    left = int(round((new_w - pre.input_size) / 2.0))
    top = int(round((new_h - pre.input_size) / 2.0))
    sx, sy = new_w / w, new_h / h
    box = (left / sx, top / sy, (left + pre.input_size) / sx, (top + pre.input_size) / sy)
    return img.resize((pre.input_size, pre.input_size), resample, box=box)


def normalize(pixels: np.ndarray, pre: Preprocessing) -> np.ndarray:
    """RGB uint8 pixels (H, W, 3), or a batch (N, H, W, 3) -> float32 (3, H, W) or (N, 3, H, W),
    scaled to [0, 1] then standardised by the model's mean/std."""
    scale, offset = (np.asarray(v, np.float32) for v in pre.pixel_affine())
    scaled = np.asarray(pixels, dtype=np.float32) * scale
    scaled += offset
    return np.ascontiguousarray(np.moveaxis(scaled, -1, -3))


def load_crop(source: ImageSource, pre: Preprocessing, name: str | None = None, max_pixels: int = MAX_PIXELS,
              budget: DecodeBudget | None = None) -> np.ndarray:
    """Open, resize and crop one photo: the model's input as RGB uint8 pixels (H, W, 3).

    Exported ONNX models take these pixels as they are (normalisation is inside the graph).
    ``max_pixels`` as in ``open_image``; with ``budget``, decoding through cropping holds the
    photo's ``decode_bytes`` of it."""
    with ExitStack() as held:
        def reserve(nbytes: int) -> None:
            held.enter_context(budget.reserve(nbytes, name or describe(source)))
        image = open_image(source, name, at_least=pre.resize_size, max_pixels=max_pixels,
                           reserve=reserve if budget else None)
        return np.asarray(resize_and_crop(image, pre))


def load_for_model(source: ImageSource, pre: Preprocessing, name: str | None = None) -> np.ndarray:
    """``load_crop`` then ``normalize``: the one eval preprocessing path of binwise (CHW float32)."""
    return normalize(load_crop(source, pre, name), pre)


def is_image_file(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES
