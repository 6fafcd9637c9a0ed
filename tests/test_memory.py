"""Bounded memory: the decode budget, the uploads' pixel limit, and freed memory given back after
a burst (binwise.memory, images.decode_bytes, the service's limits)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from binwise.errors import BinwiseError
from binwise.images import decode_bytes
from binwise.memory import MIB, DecodeBudget, IdleTrimmer, UploadBudget
from binwise.inference.classifier import Classifier
from binwise.serving.app import create_app

ROOT = Path(__file__).resolve().parents[1]


def declaring_size(jpeg: bytes, width: int, height: int) -> bytes:
    """``jpeg`` with its frame header (SOF) rewritten to declare ``width`` x ``height``: the header
    of a large JPEG without the seconds it takes to encode one. Its scans no longer fill the image,
    so only what happens before decoding can be tested with it."""
    start = next(jpeg.index(marker) for marker in (b"\xff\xc2", b"\xff\xc0") if marker in jpeg)
    size = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return jpeg[:start + 5] + size + jpeg[start + 9:]


def jpeg_bytes(img: Image.Image, **options) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, "JPEG", **options)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def photo(garbage26_data) -> Path:
    return sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0]


STATUS_MIB = '''
def status_mib(key):
    line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
    return int(line.split()[1]) / 1024
'''


def run_python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter (its own heap and VmHWM), with ``status_mib(key)`` for
    /proc/self/status in MiB; it prints one JSON line."""
    out = subprocess.run([sys.executable, "-c", STATUS_MIB + textwrap.dedent(code)], capture_output=True,
                         text=True, check=True, cwd=ROOT, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_estimate_counts_a_progressive_jpegs_coefficients_at_full_size_whatever_the_draft():
    img = Image.new("RGB", (64, 48), (120, 160, 90))
    for subsampling, components in ((0, 3), (2, 1.5)):  # 4:4:4 keeps chroma at full size, 4:2:0 at a quarter
        progressive = Image.open(io.BytesIO(declaring_size(
            jpeg_bytes(img, progressive=True, subsampling=subsampling), 9400, 9400)))
        progressive.draft(None, (256, 256))
        assert progressive.size == (1175, 1175)  # decoded at 1/8
        coefficients = 2 * 9400 * 9400 * components
        assert decode_bytes(progressive, (9400, 9400)) == 1175 * 1175 * 8 + coefficients
    baseline = Image.open(io.BytesIO(declaring_size(jpeg_bytes(img), 9400, 9400)))
    baseline.draft(None, (256, 256))
    assert decode_bytes(baseline, (9400, 9400)) == 1175 * 1175 * 8  # a few rows at a time


def test_a_9400_square_progressive_jpeg_upload_is_refused_from_its_header_in_little_memory(tmp_path):
    data = declaring_size(jpeg_bytes(Image.new("RGB", (64, 64), (120, 160, 90)), progressive=True,
                                     subsampling=0), 9400, 9400)
    (tmp_path / "big.jpg").write_bytes(data)
    result = run_python(f'''
        import json
        from binwise.errors import BinwiseError
        from binwise.images import open_image
        data = open({str(tmp_path / "big.jpg")!r}, "rb").read()
        before = status_mib("VmRSS")
        try:
            open_image(data, "big.jpg", at_least=256, max_pixels=64_000_000)
            error = None
        except BinwiseError as e:
            error = str(e)
        print(json.dumps({{"error": error, "grew_mib": status_mib("VmHWM") - before}}))
    ''')
    assert result["error"] == "big.jpg: image too large (9400x9400 pixels; at most 64,000,000 pixels)"
    assert result["grew_mib"] < 20  # decoding it would take about 0.5 GB


@pytest.mark.slow
def test_decoding_a_real_9400_square_progressive_jpeg_peaks_within_its_estimate(tmp_path):
    # the case: a 1 MB progressive JPEG of 9400x9400 (one colour, 4:4:4) costs ~0.5 GB
    path = tmp_path / "big.jpg"
    path.write_bytes(jpeg_bytes(Image.new("RGB", (9400, 9400), (120, 160, 90)), quality=50, progressive=True,
                                subsampling=0))
    assert path.stat().st_size < 1.5e6
    result = run_python(f'''
        import json
        from PIL import Image
        from binwise.images import decode_bytes, load_crop
        from binwise.preprocessing import Preprocessing
        data = open({str(path)!r}, "rb").read()
        img = Image.open({str(path)!r}); img.draft(None, (256, 256))
        estimate = decode_bytes(img, (9400, 9400)) / 2**20
        before = status_mib("VmRSS")
        load_crop(data, Preprocessing(), "big.jpg")
        print(json.dumps({{"estimate_mib": estimate, "grew_mib": status_mib("VmHWM") - before}}))
    ''')
    assert 0.7 * result["estimate_mib"] < result["grew_mib"] <= result["estimate_mib"], result


def test_the_decode_budget_lets_decodes_run_together_only_while_they_fit():
    budget = DecodeBudget(100, wait_s=10)
    running, most = [], []
    lock = threading.Lock()

    def decode(nbytes: int) -> None:
        with budget.reserve(nbytes, "photo"):
            with lock:
                running.append(nbytes)
                most.append(sum(running))
            time.sleep(0.05)
            with lock:
                running.remove(nbytes)

    threads = [threading.Thread(target=decode, args=(40,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(most) == 80 and len(most) == 6 and budget.used == 0  # two at a time, and all ran

    with pytest.raises(BinwiseError, match="image too large to decode here") as e:
        with budget.reserve(101, "huge.png"):
            pass
    assert e.value.kind == "image_too_large" and "huge.png" in str(e.value)


def test_a_decode_that_finds_no_room_in_time_is_refused_as_busy():
    budget = DecodeBudget(100, wait_s=0.2)
    waits = []
    budget.on_wait = waits.append  # as the service's metrics observe it: every wait, however it ended
    with budget.reserve(60, "first"):
        started = time.monotonic()
        with pytest.raises(BinwiseError, match="busy decoding other photos") as e:
            with budget.reserve(60, "second"):
                pass
        assert e.value.kind == "decode_busy" and 0.15 < time.monotonic() - started < 2
    with budget.reserve(60, "second"):  # and once the first is done, it fits
        assert budget.used == 60
    assert len(waits) == 3 and waits[0] < 0.1 and 0.15 < waits[1] < 2 and waits[2] < 0.1


def test_uploads_wait_for_room_in_their_budget_and_get_busy_when_none_frees_up():
    async def scenario():
        budget = UploadBudget(100, wait_s=1.0)
        order = []

        async def upload(name: str, nbytes: int, seconds: float):
            async with budget.reserve(nbytes, name):
                order.append((name, budget.used))
                await asyncio.sleep(seconds)

        await asyncio.gather(upload("a", 60, 0.2), upload("b", 60, 0), upload("c", 30, 0))
        huge = asyncio.create_task(upload("huge", 500, 0))  # more than the budget: waits for all of it
        await huge
        budget.wait_s = 0.1
        async with budget.reserve(100, "holder"):
            with pytest.raises(BinwiseError, match="busy receiving other uploads") as e:
                await upload("late", 10, 0)
        return order, budget.used, e.value.kind

    order, used, kind = asyncio.run(scenario())
    # b waits until a is done, c fits beside a; the huge one holds the whole budget alone
    assert order == [("a", 60), ("c", 90), ("b", 60), ("huge", 100)] and used == 0 and kind == "upload_busy"


def test_the_service_answers_413_for_an_image_over_its_decode_budget_and_503_when_busy(classifier, photo):
    large = Image.open(photo).convert("RGB").resize((2000, 1500))
    png = io.BytesIO()
    large.save(png, "PNG")  # no DCT scaling for PNG: 3 megapixels decoded in full, ~23 MiB
    app = create_app(classifier, decode_budget_bytes=16 * MIB)
    with TestClient(app) as client:
        response = client.post("/v1/classify", files={"file": ("large.png", png.getvalue(), "image/png")})
        assert response.status_code == 413 and response.json()["error"] == "image_too_large"
        assert "large.png" in response.json()["detail"] and "at most 16 MiB at once" in response.json()["detail"]
        small = photo.read_bytes()
        assert client.post("/v1/classify", files={"file": ("small.jpg", small, "image/jpeg")}).status_code == 200
        assert client.get("/v1/model").json()["limits"]["decode_budget_bytes"] == 16 * MIB

        budget = app.state.decode_budget
        budget.wait_s = 0.2
        with budget.reserve(budget.total, "other uploads"):
            busy = client.post("/v1/classify", files={"file": ("small.jpg", small, "image/jpeg")})
        assert busy.status_code == 503 and busy.json()["error"] == "decode_busy"
        assert busy.headers["retry-after"] == "1"
        assert client.post("/v1/classify", files={"file": ("small.jpg", small, "image/jpeg")}).status_code == 200


def test_the_service_refuses_uploads_over_its_pixel_limit_that_local_files_may_have(classifier):
    data = declaring_size(jpeg_bytes(Image.new("RGB", (64, 64), (120, 160, 90))), 9000, 8000)  # 72 megapixels
    with TestClient(create_app(classifier)) as client:
        response = client.post("/v1/classify", files={"file": ("big.jpg", data, "image/jpeg")})
    assert response.status_code == 413 and response.json()["error"] == "image_too_large"
    assert "9000x8000 pixels; at most 64,000,000 pixels" in response.json()["detail"]
    try:  # the same bytes from a local file get past the pixel limit, to the decoder
        classifier.load_image(data, "big.jpg")
    except BinwiseError as e:
        assert e.kind != "image_too_large", e


def test_freed_memory_goes_back_to_the_system_when_trimmed():
    result = run_python('''
        import json
        from binwise.memory import release_freed_memory
        from binwise.inference.classifier import keep_freed_memory
        import threading
        from concurrent.futures import ThreadPoolExecutor
        keep_freed_memory()
        before = status_mib("VmRSS")
        all_held = threading.Barrier(4)

        def uploads(_):  # 4 threads of 25 x 4 MiB at once: 400 MiB, as the service's threads take in a burst
            blocks = [b"x" * (4 * 2**20) for _ in range(25)]  # written, so resident
            all_held.wait()
            return len(blocks)

        with ThreadPoolExecutor(4) as pool:
            assert sum(pool.map(uploads, range(4))) == 100
        kept = status_mib("VmRSS") - before
        release_freed_memory()
        print(json.dumps({"kept": kept, "after_trim": status_mib("VmRSS") - before}))
    ''')
    assert result["kept"] > 350 and result["after_trim"] < 50, result


def test_the_trimmer_trims_once_after_each_busy_period_and_never_during_a_request():
    async def scenario():
        trimmer = IdleTrimmer(idle_s=0.1)
        task = asyncio.create_task(trimmer.run())
        await asyncio.sleep(0.3)
        idle_start = trimmer.trims  # nothing served yet: nothing to give back
        with trimmer.request():
            await asyncio.sleep(0.4)  # a long request: no trim under it
            during = trimmer.trims
        await asyncio.sleep(0.4)
        after_one = trimmer.trims
        await asyncio.sleep(0.3)
        task.cancel()
        return idle_start, during, after_one, trimmer.trims

    assert asyncio.run(scenario()) == (0, 0, 1, 1)


@pytest.mark.slow
def test_a_real_server_returns_to_its_idle_memory_after_a_burst_of_large_uploads(garbage26_model, tmp_path):
    """The issue's must-show, on a real server: 100 clients at once, each a ~5 MB 12-megapixel
    JPEG, then RSS back to at most 1.5x idle within 60 s (benchmarks/speed/load.py --burst)."""
    out = tmp_path / "burst.json"
    run = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "load.py"), str(garbage26_model), "--burst", "100",
                          "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=ROOT)
    result = json.loads(out.read_text())
    assert run.returncode == 0 and result["passed"], (run.stdout, run.stderr, result["rss_mib"])
    assert result["burst"]["statuses"] == {"200": 100}
