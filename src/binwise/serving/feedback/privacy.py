"""What the feedback store keeps of a citizen's photo: its pixels, not its metadata.

Phones write the place a photo was taken (EXIF GPS), the phone's make and serial number, the time,
and often a thumbnail of the uncropped scene. Training needs the pixels alone, so a photo is cleaned
before it is hashed and stored (``without_metadata``), and what is exported is what was stored.

- JPEG, losslessly: the segments that carry metadata (APP1 EXIF and XMP, APP3 to APP13, APP15,
  comments, and APP2 other than the ICC colour profile) are dropped and the compressed pixels are
  copied as they are, so the photo decodes to the same pixels. Its orientation is the one EXIF tag
  kept (a minimal EXIF block holding it alone): without it a phone's portrait photo lies on its side.
- Every other format is decoded, turned upright and written again as PNG, which is lossless for
  the decoded pixels and carries no metadata but the colour profile.
"""

from __future__ import annotations

import io
import struct

from PIL import Image, ImageOps

ORIENTATION = 0x0112
ICC_PREFIX = b"ICC_PROFILE\x00"
# Markers kept before the scan: JFIF (APP0), Adobe (APP14: how to read the colour channels), and
# everything that is not an APPn or a comment (tables, frame header, restart interval)
KEPT_APPS = {0xE0, 0xEE}


def without_metadata(photo: bytes) -> bytes:
    """``photo`` with the metadata that can identify a person or a place removed (see above)."""
    if photo[:3] == b"\xff\xd8\xff":
        stripped = strip_jpeg(photo)
        if stripped is not None:
            return stripped
    return as_png(photo)


def strip_jpeg(photo: bytes) -> bytes | None:
    """The JPEG without its metadata segments, its orientation kept; None if its segments cannot be
    walked (then it is written again as PNG)."""
    orientation = jpeg_orientation(photo)
    out = bytearray(b"\xff\xd8")
    if orientation not in (None, 1):
        out += orientation_segment(orientation)
    at = 2
    while at + 4 <= len(photo):
        if photo[at] != 0xFF:
            return None
        marker = photo[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker == 0xDA:  # start of scan: the compressed pixels and the rest, as they are
            out += photo[at:]
            return bytes(out)
        length = struct.unpack(">H", photo[at + 2:at + 4])[0]
        segment = photo[at:at + 2 + length]
        if length < 2 or len(segment) < 2 + length:
            return None
        is_app = 0xE0 <= marker <= 0xEF
        keep = (not is_app and marker != 0xFE) or marker in KEPT_APPS \
            or (marker == 0xE2 and segment[4:4 + len(ICC_PREFIX)] == ICC_PREFIX)
        if keep:
            out += segment
        at += 2 + length
    return None


def jpeg_orientation(photo: bytes) -> int | None:
    try:
        with Image.open(io.BytesIO(photo)) as img:
            value = img.getexif().get(ORIENTATION)
    except Exception:  # unreadable EXIF: the photo is taken as it lies
        return None
    return value if isinstance(value, int) and 1 <= value <= 8 else None


def orientation_segment(orientation: int) -> bytes:
    """An APP1 EXIF segment holding the orientation tag alone (big-endian TIFF, one IFD entry)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8) + struct.pack(">H", 1) \
        + struct.pack(">HHIHH", ORIENTATION, 3, 1, orientation, 0) + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def as_png(photo: bytes) -> bytes:
    """The photo's first frame, upright, as PNG with no metadata but its colour profile."""
    with Image.open(io.BytesIO(photo)) as img:
        img.seek(0)
        upright = ImageOps.exif_transpose(img)
        icc = img.info.get("icc_profile")
        out = io.BytesIO()
        upright.save(out, format="PNG", **({"icc_profile": icc} if icc else {}))
    return out.getvalue()
