"""What Pillow does not say about a JPEG: its frame type, and whether its data ran out.

Pillow reads 8-bit baseline, extended and progressive JPEGs, and refuses the rest with messages
that make a valid file look damaged; ``unsupported_jpeg`` names those kinds from the frame header.

libjpeg only warns when a JPEG's entropy-coded data ends before its last block (the file cut
short before its end marker, or a header that declares a larger image than the data holds), and
Pillow drops the warning: the missing blocks come out uniform grey (all coefficients zero, 128 in
every channel) and the photo would be classified as if it were whole. ``ran_out_of_data`` finds
those files without a decoder of its own: only when the last pixels are that grey (``ends_in_grey``,
rare in photos), it decodes the file again with extra bytes before the end marker. A complete file never
reads them and decodes to the same pixels; one that ran out decodes them, so its pixels change.
That decode is at the size the photo was decoded at (a large upload is decoded at 1/2 to 1/8 of
its size), so the check stays within that decode's memory. A reduced decode drops the finest
coefficients, so a progressive JPEG whose last scans only refine those can pass unnoticed: 2 of
240 cut-short files decoded at half size, in a trial on upscaled garbage26 photos (none at full
size).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Frame (SOFn) markers and what they are; 0xC4 (DHT), 0xC8 (JPG) and 0xCC (DAC) are not frames.
FRAME_KINDS = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive", 0xC3: "lossless",
               0xC5: "hierarchical", 0xC6: "hierarchical progressive", 0xC7: "hierarchical lossless",
               0xC9: "arithmetic-coded", 0xCA: "arithmetic-coded progressive",
               0xCB: "arithmetic-coded lossless", 0xCD: "hierarchical arithmetic-coded",
               0xCE: "hierarchical arithmetic-coded progressive", 0xCF: "hierarchical arithmetic-coded lossless"}
READABLE_FRAMES = {0xC0, 0xC1, 0xC2, 0xC9, 0xCA}  # libjpeg-turbo, as Pillow ships it, decodes these
START_OF_SCAN = 0xDA
GREY = 128
# Bytes a complete file never reaches: any value but 0xFF (which would start a marker), fixed so
# that the check is the same on every run.
PADDING = bytes(np.random.default_rng(0).integers(0, 255, 4096, dtype=np.uint8))


def frame_header(data: bytes) -> tuple[int, int] | None:
    """(SOF marker, bits per sample) of a JPEG, from the segments before its first scan; None
    when there is no frame header there."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte before a marker
            i += 1
            continue
        if marker in FRAME_KINDS:
            return (marker, data[i + 4]) if i + 4 < len(data) else None
        if marker == START_OF_SCAN:
            return None
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    return None


def unsupported_jpeg(data: bytes) -> str | None:
    """A name for a valid JPEG kind that Pillow cannot decode (12-bit, lossless, hierarchical), or None."""
    frame = frame_header(data)
    if frame is None:
        return None
    marker, bits = frame
    if bits != 8:
        return f"{bits}-bit JPEG"
    if marker not in READABLE_FRAMES:
        return f"{FRAME_KINDS[marker]} JPEG"
    return None


def ends_in_grey(img: Image.Image) -> bool:
    """Whether the decoded JPEG ``img`` ends in the grey its decoder gives blocks it has no data for."""
    if img.mode not in ("L", "RGB"):  # CMYK's missing blocks are not grey; those files are rare
        return False
    corner = np.asarray(img.crop((img.width - 2, img.height - 2, img.width, img.height)))
    return bool((corner == GREY).all())


def ran_out_of_data(img: Image.Image, data: bytes) -> bool:
    """Whether the loaded JPEG ``img``, decoded from ``data`` (at its own size, or what a draft
    reduced it to), lacks data for its last blocks. One more decode, at the same size: call it only
    for images that ``ends_in_grey``."""
    body = data[:-2] if data.endswith(b"\xff\xd9") else data
    try:
        with Image.open(io.BytesIO(body + PADDING + b"\xff\xd9")) as padded:
            # at the size img was decoded at, so the check stays within that decode's memory
            padded.draft(None, img.size)
            return padded.tobytes() != img.tobytes()
    except (OSError, ValueError, SyntaxError):
        return True  # it read the padding, and that made no sense to it
