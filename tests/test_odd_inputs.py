"""Malformed and odd inputs, each through the Python API, the service and the CLI.

Every input is generated here from one real garbage26 photo (nothing is committed). A valid image
must classify, and where its pixels are the photo's pixels it must give the photo's answer
exactly; an invalid one must give one clear error that names the file and the problem, with the
right HTTP status. After every input the service still answers a good request.
"""

from __future__ import annotations

import io
import json
import mimetypes
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from binwise.errors import BinwiseError
from binwise.images import open_image
from binwise.inference.classifier import Classifier
from binwise.serving.app import create_app

REFERENCE = ("Orange Peel", 0)  # class folder and index of the photo every input is made from
UPLOAD_LIMIT = 10 * 1024 * 1024  # the service's default


def orientation_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def encode(img: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **options)
    return buffer.getvalue()


def with_png_chunk_crc_fixed(data: bytearray, offset: int, length: int) -> bytearray:
    """Recompute the CRC of the PNG chunk whose type starts at ``offset``."""
    end = offset + 4 + length
    data[end:end + 4] = struct.pack(">I", zlib.crc32(bytes(data[offset:end])))
    return data


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (a decompression bomb's header)."""
    data = bytearray(encode(Image.new("RGB", (8, 8)), "PNG"))
    data[16:24] = struct.pack(">II", width, height)  # IHDR data starts at byte 16
    return bytes(with_png_chunk_crc_fixed(data, 12, 13))


def png_with_bad_header_crc(photo):
    data = bytearray(encode(photo, "PNG"))
    data[29] ^= 0xFF  # IHDR's CRC
    return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
    data = bytearray(encode(Image.new("P", (8, 8)), "GIF"))
    data[6:10] = struct.pack("<HH", width, height)  # logical screen size
    return bytes(data)


def frame_header_at(jpeg: bytes) -> int:
    """Offset of a JPEG's frame (SOF0/1/2) marker."""
    i = 2
    while jpeg[i + 1] not in (0xC0, 0xC1, 0xC2):
        i += 2 + int.from_bytes(jpeg[i + 2:i + 4], "big")
    return i


def jpeg_declaring(jpeg: bytes, height_factor: float, width_factor: float) -> bytes:
    """The JPEG with its frame header's height and width multiplied: more blocks than its data holds."""
    data, at = bytearray(jpeg), frame_header_at(jpeg)
    height, width = struct.unpack(">HH", data[at + 5:at + 9])
    data[at + 5:at + 9] = struct.pack(">HH", int(height * height_factor), int(width * width_factor))
    return bytes(data)


def jpeg_with_frame(jpeg: bytes, marker: int | None = None, bits: int | None = None) -> bytes:
    """The JPEG's header changed to another frame kind or sample precision (what a 12-bit or a
    lossless JPEG declares; the data after it is not re-encoded, the verdict comes from the header)."""
    data, at = bytearray(jpeg), frame_header_at(jpeg)
    if marker is not None:
        data[at + 1] = marker
    if bits is not None:
        data[at + 4] = bits
    return bytes(data)


def grey_bottom_rows(photo):
    """The photo with its bottom quarter exactly the grey that libjpeg gives blocks it has no data for."""
    pixels = np.asarray(photo).copy()
    pixels[-photo.height // 4:] = 128
    return Image.fromarray(pixels)


def exif_rotated(photo, fmt: str, **options) -> bytes:
    """The photo stored on its side with EXIF orientation 6 ("rotate 90 degrees clockwise to view"),
    as phone cameras write portrait photos."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(photo.transpose(Image.Transpose.ROTATE_90), fmt, exif=exif, **options)


def half_transparent(photo):
    rgba = photo.convert("RGBA")
    alpha = np.full(photo.size[::-1], 255, np.uint8)
    alpha[:, : photo.width // 2] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return rgba


def left_half_white(photo):
    pixels = np.asarray(photo).copy()
    pixels[:, : photo.width // 2] = 255
    return Image.fromarray(pixels)


def animated_gif(photo):
    frames = [photo, Image.new("RGB", photo.size, (0, 0, 0)), Image.new("RGB", photo.size, (255, 255, 255))]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


def sixteen_bit_png(photo):
    gray = np.asarray(photo.convert("L")).astype(np.uint16) * 257  # full 16-bit range
    return encode(Image.fromarray(gray), "PNG")


def zip_of_zeros():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("zeros.bin", bytes(50 * 1024 * 1024))
    return buffer.getvalue()


@dataclass(frozen=True)
class Odd:
    """One odd input: how to make it from the reference photo, and what must come of it.

    ``expect`` is ``"same:<ref>"`` (exactly the answer for reference image ``ref``), ``"close"``
    (the photo's top class, probabilities near it: a lossy re-encoding), ``"ok"`` (classifies),
    or ``"error"`` with the HTTP ``status`` and a ``problem`` the message must contain.
    """

    id: str
    filename: str
    make: Callable
    expect: str
    status: int = 200
    problem: str = ""


DAMAGED, NOT_IMAGE, TOO_LARGE, EMPTY = "damaged image", "not an image", "image too large", "empty file"
UNSUPPORTED = "unsupported image format"

CASES = [
    Odd("png", "photo.png", lambda p, j: encode(p, "PNG"), "same:photo"),
    Odd("jpeg-named-png", "photo.png", lambda p, j: j, "same:jpeg"),
    Odd("jpeg-with-trailing-garbage", "photo.jpg", lambda p, j: j + b"trailing garbage " * 64, "same:jpeg"),
    Odd("unicode-filename", "橙皮 照片.jpg", lambda p, j: j, "same:jpeg"),
    Odd("no-extension", "photo", lambda p, j: j, "same:jpeg"),
    Odd("progressive-jpeg", "photo.jpg", lambda p, j: encode(p, "JPEG", quality=90, progressive=True), "close"),
    Odd("bmp", "photo.bmp", lambda p, j: encode(p, "BMP"), "same:photo"),
    Odd("tiff-lzw", "photo.tiff", lambda p, j: encode(p, "TIFF", compression="tiff_lzw"), "same:photo"),
    Odd("webp-lossless", "photo.webp", lambda p, j: encode(p, "WEBP", lossless=True), "same:photo"),
    Odd("webp", "photo.webp", lambda p, j: encode(p, "WEBP", quality=90), "close"),
    # what phones write: AVIF (Pillow's own decoder) and HEIC, the iPhone's default (pillow-heif)
    Odd("avif", "photo.avif", lambda p, j: encode(p, "AVIF", quality=90), "close"),
    Odd("heic", "IMG_0001.HEIC", lambda p, j: encode(p, "HEIF", quality=90), "close"),
    Odd("heic-upright-by-its-orientation", "IMG_0002.HEIC",
        lambda p, j: encode(p.transpose(Image.Transpose.ROTATE_90), "HEIF", quality=90,
                            exif=orientation_exif(8)), "close"),
    Odd("cmyk-jpeg", "photo.jpg", lambda p, j: encode(p.convert("CMYK"), "JPEG", quality=95), "close"),
    Odd("grayscale-jpeg", "photo.jpg", lambda p, j: encode(p.convert("L"), "JPEG", quality=95), "ok"),
    Odd("16-bit-png", "photo.png", lambda p, j: sixteen_bit_png(p), "same:gray"),
    Odd("grayscale-alpha-png", "photo.png", lambda p, j: encode(p.convert("LA"), "PNG"), "same:gray"),
    Odd("half-transparent-png", "photo.png", lambda p, j: encode(half_transparent(p), "PNG"), "same:half_white"),
    Odd("palette-alpha-png", "photo.png",
        lambda p, j: encode(p.quantize(64), "PNG", transparency=0), "ok"),
    Odd("exif-rotated-png", "photo.png", lambda p, j: exif_rotated(p, "PNG"), "same:photo"),
    Odd("exif-rotated-jpeg", "photo.jpg", lambda p, j: exif_rotated(p, "JPEG", quality=95), "close"),
    Odd("animated-gif", "photo.gif", lambda p, j: animated_gif(p), "close"),
    Odd("1x1", "dot.png", lambda p, j: encode(Image.new("RGB", (1, 1), (200, 120, 40)), "PNG"), "ok"),
    Odd("4000x10-strip", "strip.png", lambda p, j: encode(p.resize((4000, 10)), "PNG"), "ok"),
    Odd("8000x8000", "huge.jpg", lambda p, j: encode(p.resize((8000, 8000), Image.BILINEAR), "JPEG", quality=75),
        "close"),
    Odd("zero-bytes", "photo.jpg", lambda p, j: b"", "error", 422, EMPTY),
    Odd("truncated-jpeg", "photo.jpg", lambda p, j: j[: len(j) // 2], "error", 422, DAMAGED),
    Odd("jpeg-header-only", "photo.jpg", lambda p, j: j[:200], "error", 422, DAMAGED),
    Odd("jpeg-declaring-twice-the-size", "photo.jpg", lambda p, j: jpeg_declaring(j, 2, 2), "error", 422,
        DAMAGED + " (JPEG whose data ends before its last rows"),
    Odd("jpeg-declaring-10%-taller", "photo.jpg", lambda p, j: jpeg_declaring(j, 1.1, 1), "error", 422,
        DAMAGED + " (JPEG whose data ends before its last rows"),
    Odd("progressive-jpeg-declaring-twice-the-width", "photo.jpg",
        lambda p, j: jpeg_declaring(encode(p, "JPEG", quality=90, progressive=True), 1, 2), "error", 422,
        DAMAGED + " (JPEG whose data ends before its last rows"),
    # valid photos ending in that grey must not be called damaged
    Odd("jpeg-with-grey-bottom-rows", "photo.jpg", lambda p, j: encode(grey_bottom_rows(p), "JPEG", quality=95), "ok"),
    Odd("plain-grey-jpeg", "grey.jpg", lambda p, j: encode(Image.new("RGB", (300, 200), (128,) * 3), "JPEG"), "ok"),
    Odd("12-bit-jpeg", "scan.jpg", lambda p, j: jpeg_with_frame(j, bits=12), "error", 415,
        "unsupported image format (12-bit JPEG)"),
    Odd("lossless-jpeg", "scan.jpg", lambda p, j: jpeg_with_frame(j, marker=0xC3), "error", 415,
        "unsupported image format (lossless JPEG)"),
    Odd("hierarchical-jpeg", "scan.jpg", lambda p, j: jpeg_with_frame(j, marker=0xC5), "error", 415,
        "unsupported image format (hierarchical JPEG)"),
    Odd("mpo", "IMG_0001.MPO", lambda p, j: encode(p, "MPO", quality=95, save_all=True, append_images=[p.rotate(5)]),
        "close"),
    Odd("truncated-png", "photo.png", lambda p, j: encode(p, "PNG")[:2000], "error", 422, DAMAGED),
    Odd("png-bad-header-crc", "photo.png", lambda p, j: png_with_bad_header_crc(p), "error", 422, DAMAGED),
    Odd("text-named-jpg", "notes.jpg", lambda p, j: b"shopping list: eggs, milk\n" * 20, "error", 415, NOT_IMAGE),
    Odd("html-named-png", "page.png", lambda p, j: b"<!doctype html><html><body>hi</body></html>",
        "error", 415, NOT_IMAGE),
    Odd("svg", "drawing.svg", lambda p, j: b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9">'
        b'<rect width="9" height="9" fill="red"/></svg>', "error", 415, UNSUPPORTED),
    Odd("pdf", "scan.pdf", lambda p, j: b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n",
        "error", 415, UNSUPPORTED),
    # valid files of formats Pillow could open but binwise does not decode: EPS would run Ghostscript
    Odd("eps", "photo.eps", lambda p, j: encode(p, "EPS"), "error", 415, "unsupported image format (PostScript / EPS)"),
    Odd("ppm", "photo.ppm", lambda p, j: encode(p, "PPM"), "error", 415, "unsupported image format (Netpbm"),
    Odd("psd-header", "layers.psd", lambda p, j: b"8BPS\x00\x01" + bytes(20), "error", 415,
        "unsupported image format (Photoshop PSD)"),
    Odd("heic-header-only", "IMG_0001.HEIC", lambda p, j: b"\x00\x00\x00\x18ftypheic" + bytes(40), "error", 422,
        "damaged image (HEIC"),
    Odd("mp4-video", "clip.mp4", lambda p, j: b"\x00\x00\x00\x18ftypisom" + bytes(40), "error", 415,
        "unsupported image format (an ISO media file that is not a HEIC or AVIF photo"),
    Odd("random-bytes", "photo.jpg", lambda p, j: np.random.default_rng(0).bytes(4096), "error", 415, NOT_IMAGE),
    Odd("zip-bomb-ish", "photo.jpg", lambda p, j: zip_of_zeros(), "error", 415, NOT_IMAGE),
    Odd("png-declaring-10-gigapixels", "bomb.png", lambda p, j: png_declaring(100_000, 100_000),
        "error", 413, TOO_LARGE),
    Odd("png-bomb-10000x10000", "bomb.png", lambda p, j: encode(Image.new("1", (10_000, 10_000)), "PNG"),
        "error", 413, TOO_LARGE),
    Odd("gif-declaring-65535x65535", "bomb.gif", lambda p, j: gif_declaring(65535, 65535),
        "error", 413, TOO_LARGE),
]


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def reference(garbage26_data):
    """The reference photo (RGB), its JPEG, and the other images some inputs must equal."""
    folder, index = REFERENCE
    photo = open_image(sorted((garbage26_data / "test" / folder).glob("*.jpg"))[index])
    return {"photo": photo, "jpeg": encode(photo, "JPEG", quality=90), "gray": photo.convert("L"),
            "half_white": left_half_white(photo)}


@pytest.fixture(scope="module")
def files(tmp_path_factory, reference):
    """Every case written to its own folder under its own file name."""
    root = tmp_path_factory.mktemp("odd")
    paths = {}
    for case in CASES:
        folder = root / case.id
        folder.mkdir()
        paths[case.id] = folder / case.filename
        paths[case.id].write_bytes(case.make(reference["photo"], reference["jpeg"]))
    return paths


@pytest.fixture(scope="module")
def client(classifier):
    with TestClient(create_app(classifier, max_upload_bytes=UPLOAD_LIMIT)) as client:
        yield client


@pytest.fixture(scope="module")
def cli_results(garbage26_model, files):
    """``binwise predict --json`` run once on every case file: its JSON entries by source."""
    from binwise.cli import main

    out, err = io.StringIO(), io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout

    with redirect_stdout(out), redirect_stderr(err):
        code = main(["predict", str(garbage26_model), *map(str, files.values()), "--json", "-k", "5"])
    entries = {entry["source"]: entry for entry in json.loads(out.getvalue())}
    return code, entries, err.getvalue()


def probabilities(top) -> dict[int, float]:
    return {c["index"] if isinstance(c, dict) else c.index: c["probability"] if isinstance(c, dict) else c.probability
            for c in top}


def check_answer(case: Odd, top: dict[int, float], status: str, bin_id, expected, expected_top: dict[int, float],
                 where: str):
    """The answer matches the expected classes, and its bin (``bin_id``, None when withheld) its status:
    the top class's bin when ok, none when unknown, and when unsure at most the top class's bin."""
    assert len(top) == 5 and all(0 <= p <= 1 for p in top.values()), where
    assert list(top.values()) == sorted(top.values(), reverse=True), where
    top_bin = expected.taxonomy.class_bins[next(iter(top))]
    assert {"ok": bin_id == top_bin, "unknown": bin_id is None, "unsure": bin_id in (None, top_bin)}[status], where
    if case.expect.startswith("same:"):
        assert list(top) == list(expected_top), where
        assert np.allclose(list(top.values()), list(expected_top.values()), atol=1e-5), where
    elif case.expect == "close":
        # a lossy re-encoding of the photo: same top class, probabilities moved only a little
        assert next(iter(top)) == next(iter(expected_top)), where
        best = next(iter(expected_top))
        assert abs(top[best] - expected_top[best]) < 0.15, where


@pytest.fixture(scope="module")
def expected_tops(classifier, reference):
    tops = {name: probabilities(classifier.predict(reference[name]).top) for name in ("photo", "gray", "half_white")}
    tops["jpeg"] = probabilities(classifier.predict(reference["jpeg"]).top)
    return tops


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_odd_input(case, classifier, files, client, cli_results, expected_tops, reference):
    path = files[case.id]
    data = path.read_bytes()
    expected_top = expected_tops[case.expect.split(":")[1] if case.expect.startswith("same:") else "photo"]

    # Python API
    if case.expect == "error":
        with pytest.raises(BinwiseError) as caught:
            classifier.predict(path)
        assert str(path) in str(caught.value) and case.problem in str(caught.value)
    else:
        answer = classifier.predict(path)
        check_answer(case, probabilities(answer.top), answer.status, answer.bin.id if answer.bin else None, classifier,
                     expected_top, "api")

    # the service, then a good photo right after
    content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    response = client.post("/v1/classify", files={"file": (path.name, data, content_type)})
    if case.expect == "error":
        assert response.status_code == case.status, response.text
        body = response.json()
        assert set(body) == {"error", "detail"} and case.problem in body["detail"] and path.name in body["detail"]
    else:
        assert response.status_code == 200, response.text
        body = response.json()
        check_answer(case, probabilities(body["top"]), body["status"], (body["bin"] or {}).get("id"), classifier,
                     expected_top, "service")
    good = client.post("/v1/classify", files={"file": ("good.jpg", reference["jpeg"], "image/jpeg")})
    assert good.status_code == 200 and probabilities(good.json()["top"]).keys() == expected_tops["jpeg"].keys()

    # the CLI (one run over all cases): the same answer, or the error naming the file
    code, entries, stderr = cli_results
    entry = entries[str(path)]
    if case.expect == "error":
        assert code == 1 and case.problem in entry["error"]
        assert f"binwise predict: {path}: {case.problem}" in stderr
    else:
        check_answer(case, probabilities(entry["top"]), entry["status"], (entry["bin"] or {}).get("id"), classifier,
                     expected_top, "cli")


SERVICE_ONLY = {
    "multipart-without-parts": ({"content": b"--b--\r\n", "headers": {"content-type": "multipart/form-data; boundary=b"}},
                                422, "no photo uploaded"),
    "multipart-text-field": ({"data": {"file": "photo.jpg"}, "files": {"note": ("n.txt", b"x")}}, 422, "'file'"),
    "multipart-empty-file": ({"files": {"file": ("photo.jpg", b"", "image/jpeg")}}, 422, "empty file"),
    "upload-over-limit": ({"files": {"file": ("big.jpg", bytes(UPLOAD_LIMIT + 1), "image/jpeg")}}, 413,
                          f"{UPLOAD_LIMIT:,} bytes"),
    "raw-body-over-limit": ({"content": bytes(UPLOAD_LIMIT + 1), "headers": {"content-type": "image/jpeg"}}, 413,
                            "limit"),
    "raw-text-body": ({"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "image/*"),
}


@pytest.mark.parametrize("request_kwargs, status, problem", SERVICE_ONLY.values(), ids=list(SERVICE_ONLY))
def test_odd_request(client, reference, request_kwargs, status, problem):
    response = client.post("/v1/classify", **request_kwargs)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and problem in body["detail"], body
    assert client.post("/v1/classify", files={"file": ("good.jpg", reference["jpeg"])}).status_code == 200


@pytest.mark.parametrize("name, problem", [("missing.jpg", "no such file"), ("folder.jpg", "not a file"),
                                           ("a" * 300 + ".jpg", "cannot read it (File name too long)")])
def test_paths_that_are_not_files(classifier, tmp_path, name, problem):
    (tmp_path / "folder.jpg").mkdir()
    with pytest.raises(BinwiseError, match=re.escape(problem)) as caught:
        classifier.predict(tmp_path / name)
    assert str(tmp_path / name) in str(caught.value)


def test_cli_names_a_file_name_too_long_without_a_traceback(classifier, tmp_path, capsys):
    from binwise.cli import main

    too_long = str(tmp_path / ("b" * 300 + ".jpg"))
    assert main(["predict", str(classifier.path), too_long]) == 1
    err = capsys.readouterr().err
    assert f"{too_long}: cannot read it (File name too long)" in err and "Traceback" not in err


def test_a_photo_that_may_not_be_read_is_one_line_in_the_api_and_the_cli(classifier, reference, tmp_path, capsys,
                                                                         monkeypatch):
    """Permission denied (simulated: the tests run as root, who may read anything). Pillow's error
    used to send binwise back to the file for its first bytes, which failed again, uncaught."""
    import builtins

    from binwise.cli import main

    locked = tmp_path / "locked.jpg"
    locked.write_bytes(reference["jpeg"])
    real_open = builtins.open

    def refusing_open(file, *args, **kwargs):
        if str(file) == str(locked):
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", refusing_open)
    with pytest.raises(BinwiseError, match=re.escape(f"{locked}: cannot read it (Permission denied)")):
        classifier.predict(locked)
    assert main(["predict", str(classifier.path), str(locked)]) == 1
    err = capsys.readouterr().err
    assert f"{locked}: cannot read it (Permission denied)" in err and "Traceback" not in err


@pytest.mark.parametrize("output", [[], ["--json"], ["--csv"]])
def test_a_file_name_that_is_not_utf8_prints_escaped_without_a_traceback(classifier, reference, tmp_path, output):
    import os
    import subprocess
    import sys

    folder = tmp_path / "photos"
    folder.mkdir()
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.jpg"), "wb") as f:  # Latin-1: not UTF-8
        f.write(reference["jpeg"])
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run([sys.executable, "-m", "binwise.cli", "predict", str(classifier.path), str(folder), *output],
                          capture_output=True, env=env, timeout=300)
    assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr[-2000:]
    assert b"caf\\udce9.jpg" in done.stdout  # the undecodable byte, escaped
    done.stdout.decode("utf-8")  # and the output is valid UTF-8


def test_cli_output_into_a_closed_pipe_stops_quietly(classifier):
    import subprocess
    import sys

    from binwise.paths import resolve_data

    process = subprocess.Popen([sys.executable, "-m", "binwise.cli", "predict", str(classifier.path),
                                str(resolve_data() / "test"), "--json", "-k", "26"],  # more than a pipe buffers
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.readline()
    process.stdout.close()  # as `| head -1` does
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 141 and "Traceback" not in stderr and "Exception" not in stderr, stderr
