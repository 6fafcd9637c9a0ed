"""The feedback loop: the SQLite store, POST /v1/feedback, binwise feedback list/export, and the
store's durability under a kill -9 of a real server."""

from __future__ import annotations

import hashlib
import io
import json
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from test_service import assert_error

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.serving.feedback import NOT_GARBAGE, check_note, resolve_correction
from binwise.serving.feedback.store import new_row
from binwise.serving.feedback.stores import open_store
from binwise.taxonomy.classes import GARBAGE26


def noise_png(seed: int, size: int = 48) -> bytes:
    """A small PNG of its own (distinct bytes for each seed)."""
    import numpy as np

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def row_for(photo: bytes, corrected: str = "Cardboard", model: str = "m1"):
    return new_row(photo, model=model, predicted="Paper", predicted_status="ok", corrected=corrected, note="",
                   client="127.0.0.1")


def assert_store_is_sound(db: Path) -> list:
    """Integrity check clean, every row's photo present and named by its content; the rows."""
    store = open_store(str(db), create=False)
    try:
        assert store.integrity_problems() == []
        rows = store.rows()
        for row in rows:
            photo = store.photo_path(row)
            assert hashlib.sha256(photo.read_bytes()).hexdigest() == row.photo_sha256 == photo.name.split(".")[0]
        return rows
    finally:
        store.close()


@pytest.mark.parametrize("given, expected", [("Cardboard", (12, "Cardboard")), ("cardboard ", (12, "Cardboard")),
                                             ("硬纸板", (12, "Cardboard")), ("12", (12, "Cardboard")),
                                             ("not garbage", (None, NOT_GARBAGE)), ("不是垃圾", (None, NOT_GARBAGE))])
def test_a_correction_is_a_class_by_english_or_chinese_name_or_index_or_not_garbage(given, expected):
    assert resolve_correction(GARBAGE26, given) == expected


@pytest.mark.parametrize("given", ["Cardbord", "26", "-1", "", "²", "1²", "٣", "9" * 5000, "0" * 5000 + "1"])
def test_anything_else_is_not_a_correction(given):
    with pytest.raises(BinwiseError, match="not a class of this model") as refused:
        resolve_correction(GARBAGE26, given)
    assert refused.value.kind == "unknown_class"


def test_notes_are_bounded_and_plain_text():
    assert check_note("  the lid is metal ") == "the lid is metal"
    with pytest.raises(BinwiseError, match="at most 500"):
        check_note("x" * 501)
    with pytest.raises(BinwiseError, match="control characters"):
        check_note("evil\x1b[2Jclear")


def test_sqlite_store_is_idempotent_and_safe_from_threads(tmp_path):
    db = tmp_path / "fb" / "feedback.sqlite"
    store = open_store(str(db))
    photos = [noise_png(i) for i in range(10)]
    # 8 threads post each photo twice with the same class, and photo 0 also as another class
    jobs = [(p, "Cardboard") for p in photos] * 2 + [(photos[0], NOT_GARBAGE)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: store.add(row_for(*job), job[0]), jobs * 2))
    store.close()
    ids = {(r.photo_sha256, r.corrected): r.id for r, _ in results}
    assert len(ids) == 11 and sum(not already for _, already in results) == 11
    rows = assert_store_is_sound(db)
    assert sorted(r.id for r in rows) == sorted(ids.values())
    assert len(list((tmp_path / "fb" / "photos").rglob("*.png"))) == 10  # photo 0 stored once for both rows


def test_a_full_store_refuses_new_rows_but_still_answers_old_ones(tmp_path):
    store = open_store(str(tmp_path / "feedback.sqlite"), max_rows=1)
    first = noise_png(1)
    store.add(row_for(first), first)
    assert store.add(row_for(first), first)[1] is True
    with pytest.raises(BinwiseError, match="limit of 1 rows") as full:
        store.add(row_for(noise_png(2)), noise_png(2))
    assert full.value.kind == "feedback_store_full"
    store.close()


def test_opening_the_store_removes_a_crashed_writes_temporary_file(tmp_path):
    store = open_store(str(tmp_path / "feedback.sqlite"))
    store.close()
    leftover = tmp_path / "photos" / "ab" / ".abc.png.x1y2.tmp"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a photo")
    open_store(str(tmp_path / "feedback.sqlite")).close()
    assert not leftover.exists()


# --- the API, in process on the quick garbage26 model


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    from binwise.inference.classifier import Classifier

    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def photo(garbage26_data) -> bytes:
    return sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0].read_bytes()


@pytest.fixture
def served(classifier, tmp_path):
    """A TestClient of an app recording into a new SQLite store, and the store's path."""
    from binwise.serving.app import create_app

    db = tmp_path / "feedback.sqlite"
    app = create_app(classifier, max_upload_bytes=1024 * 1024, feedback_store=open_store(str(db)), feedback_rate=5)
    with TestClient(app) as client:
        yield client, db


def post(client, photo: bytes, **fields):
    return client.post("/v1/feedback", files={"file": ("photo.jpg", photo, "image/jpeg")}, data=fields)


def test_feedback_is_recorded_once_with_the_models_own_answer(served, classifier, photo):
    client, db = served
    assert client.get("/v1/model").json()["feedback"] is True
    first = post(client, photo, **{"class": "电池", "note": "it is a battery"})
    assert first.status_code == 200, first.text
    answer = first.json()
    expected = classifier.predict(photo, top_k=1)
    assert answer["recorded"] is True and answer["already_recorded"] is False
    assert answer["predicted"] == {"class": expected.top[0].en, "status": expected.status}
    assert answer["corrected"] == {"index": 22, "en": "Battery", "zh": "电池"}
    assert answer["photo_sha256"] == hashlib.sha256(photo).hexdigest() and answer["model"] == classifier.model_id
    again = post(client, photo, **{"class": "Battery"})
    assert again.status_code == 200 and again.json()["already_recorded"] is True
    assert again.json()["id"] == answer["id"] and again.json()["note"] == "it is a battery"
    # a raw body names the class in the query
    raw = client.post("/v1/feedback?class=not+garbage", content=photo, headers={"content-type": "image/jpeg"})
    assert raw.status_code == 200 and raw.json()["corrected"]["en"] == NOT_GARBAGE
    rows = assert_store_is_sound(db)
    assert [(r.corrected, r.note, r.client) for r in rows] == [("Battery", "it is a battery", "testclient"),
                                                               (NOT_GARBAGE, "", "testclient")]


@pytest.mark.parametrize("odd", ["²", "9" * 5000])
def test_digits_python_cannot_read_are_an_unknown_class_not_a_500(served, photo, odd):
    client, _ = served  # they answered 500 with Python's error text in the body
    assert_error(post(client, photo, **{"class": odd}), 422, "unknown_class", "not a class of this model")


def test_bad_feedback_gets_a_clear_json_error_never_a_500(served, photo):
    client, db = served
    assert_error(post(client, photo, **{"class": "Batery"}), 422, "unknown_class", "'Batery'", "not garbage")
    assert_error(post(client, photo), 422, "missing_class", "'class'")
    assert_error(post(client, photo, **{"class": "Battery", "note": "a\x00b"}), 422, "invalid_note", "control")
    assert_error(post(client, b"this is no photo", **{"class": "Battery"}), 415, "not_an_image", "photo.jpg")
    assert_error(post(client, b"\xff\xd8\xff" + b"\0" * (2 * 1024 * 1024), **{"class": "Battery"}), 413,
                 "upload_too_large")
    assert open_store(str(db), create=False).rows() == []


def test_each_client_gets_its_rate_and_then_429_with_retry_after(served, photo):
    client, _ = served
    for _ in range(5):
        assert post(client, photo, **{"class": "Battery"}).status_code == 200
    refused = post(client, photo, **{"class": "Battery"})
    assert_error(refused, 429, "too_many_feedbacks", "at most 5 feedbacks a minute")
    assert 1 <= int(refused.headers["retry-after"]) <= 60


def test_many_addresses_of_one_network_share_one_rate_limit(classifier, photo, tmp_path):
    """The audit's poisoning: wrong labels posted from 8 addresses of one network were all accepted."""
    from binwise.serving.app import create_app

    db = tmp_path / "feedback.sqlite"
    app = create_app(classifier, feedback_store=open_store(str(db)), feedback_rate=5, trust_forwarded_for=True)
    with TestClient(app) as client:
        answers = [client.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Cardboard"},
                               headers={"X-Forwarded-For": f"198.51.100.{10 + i}"}).status_code for i in range(8)]
        elsewhere = client.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Battery"},
                                headers={"X-Forwarded-For": "203.0.113.9"}).status_code
    assert answers == [200] * 5 + [429] * 3 and elsewhere == 200
    assert {r.client for r in assert_store_is_sound(db)} >= {"198.51.100.10", "203.0.113.9"}  # the address is kept


def test_a_network_past_its_photo_bytes_gets_429(classifier, photo, tmp_path):
    from binwise.serving.app import create_app

    store = open_store(str(tmp_path / "feedback.sqlite"), network_bytes=len(photo) + 100)
    with TestClient(create_app(classifier, feedback_store=store)) as client:
        first = post(client, photo, **{"class": "Battery"})
        second = post(client, noise_png(5), **{"class": "Battery"})
    assert first.status_code == 200
    assert_error(second, 429, "feedback_network_full", "this network has sent")


def test_unreviewed_feedback_never_reaches_training(tmp_path, capsys):
    db = tmp_path / "feedback.sqlite"
    store = open_store(str(db))
    store.add(row_for(noise_png(1), "Battery"), noise_png(1))
    store.close()
    out = tmp_path / "export"
    assert main(["feedback", "export", str(db), str(out)]) == 2
    err = capsys.readouterr().err
    assert "only when a person has checked it" in err and "--reviewed" in err and not out.exists()
    assert main(["feedback", "export", str(db), str(out), "--reviewed"]) == 0
    assert len(list((out / "Battery").iterdir())) == 1


def test_photo_bytes_are_budgeted_per_network_and_in_all(tmp_path):
    """One address stored 239 MB in 8 s when only rows were counted."""
    photos = [noise_png(i, size=24) for i in range(4)]
    size = len(photos[0])
    store = open_store(str(tmp_path / "feedback.sqlite"), network_bytes=int(1.5 * size), max_bytes=int(3.5 * size))
    store.add(row_for(photos[0]), photos[0], "198.51.100.0/24")
    store.add(row_for(photos[0], "Paper"), photos[0], "198.51.100.0/24")  # the same photo costs nothing again
    with pytest.raises(BinwiseError, match="this network has sent") as refused:
        store.add(row_for(photos[1]), photos[1], "198.51.100.0/24")
    assert refused.value.kind == "feedback_network_full"
    store.add(row_for(photos[1]), photos[1], "203.0.113.0/24")
    store.add(row_for(photos[2]), photos[2], "192.0.2.0/24")
    with pytest.raises(BinwiseError, match="MiB of photos") as full:
        store.add(row_for(photos[3]), photos[3], "100.64.0.0/24")
    assert full.value.kind == "feedback_store_full"
    assert len(store.rows()) == 4
    store.close()


def test_the_rate_limit_is_a_sliding_window_per_client_kept_in_the_store(tmp_path):
    store = open_store(str(tmp_path / "feedback.sqlite"))
    assert store.admit("a", 2, 60, now=1000.0) is None and store.admit("a", 2, 60, now=1001.0) is None
    assert store.admit("a", 2, 60, now=1002.0) == pytest.approx(58.0)
    assert store.admit("b", 2, 60, now=1002.0) is None  # each client its own count
    store.close()
    reopened = open_store(str(tmp_path / "feedback.sqlite"))  # a restart keeps the count
    assert reopened.admit("a", 2, 60, now=1003.0) == pytest.approx(57.0)
    assert reopened.admit("a", 2, 60, now=1060.5) is None  # the post at 1000 has left the window
    assert reopened.admit("a", 2, 60, now=1060.6) == pytest.approx(0.4)
    reopened.close()


def test_forwarded_for_names_the_client_only_when_trusted(classifier, photo, tmp_path):
    from binwise.serving.app import create_app

    for trusted, client_name in ((False, "testclient"), (True, "203.0.113.7")):
        db = tmp_path / f"{trusted}.sqlite"
        app = create_app(classifier, feedback_store=open_store(str(db)), trust_forwarded_for=trusted)
        with TestClient(app) as client:
            response = client.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Battery"},
                                   headers={"X-Forwarded-For": "10.9.9.9, 203.0.113.7"})
            assert response.status_code == 200, response.text
        assert [r.client for r in open_store(str(db), create=False).rows()] == [client_name]


def test_feedback_uploads_draw_on_the_services_upload_budget(classifier, photo, tmp_path):
    from binwise.serving.app import create_app

    app = create_app(classifier, feedback_store=open_store(str(tmp_path / "f.sqlite")), body_timeout_s=0.2)
    with TestClient(app) as client:
        budget = app.state.upload_budget
        budget.used = budget.total  # other uploads hold all of it
        response = post(client, photo, **{"class": "Battery"})
        assert response.status_code == 503 and response.json()["error"] == "upload_busy", response.text
        budget.used = 0
        assert post(client, photo, **{"class": "Battery"}).status_code == 200


def test_without_a_store_there_is_no_feedback(classifier, photo):
    from binwise.serving.app import create_app

    with TestClient(create_app(classifier)) as client:
        assert client.get("/v1/model").json()["feedback"] is False
        assert_error(post(client, photo, **{"class": "Battery"}), 404, "not_found")


def phone_photo(jpeg: bytes, orientation: int = 6) -> bytes:
    """``jpeg`` as a phone writes it: EXIF with GPS, make, serial number and orientation, an XMP packet
    and a comment."""
    img = Image.open(io.BytesIO(jpeg))
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "PhoneMaker", "Phone 15", orientation  # make, model, orientation
    exif[0xA431] = "SERIAL-123456"  # body serial number
    exif.get_ifd(0x8825).update({1: "N", 2: (31.0, 14.0, 3.5), 3: "E", 4: (121.0, 28.0, 12.0)})  # GPS
    out = io.BytesIO()
    img.save(out, format="JPEG", exif=exif, quality=90, comment=b"taken at home")
    data = out.getvalue()
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><exif:GPSLatitude>31,14N</exif:GPSLatitude></x:xmpmeta>"
    return data[:2] + b"\xff\xe1" + (len(xmp) + 2).to_bytes(2, "big") + xmp + data[2:]


@pytest.mark.parametrize("kind", ["jpeg", "png"])
def test_stored_and_exported_photos_keep_their_pixels_and_lose_their_metadata(served, photo, tmp_path, kind):
    from PIL import ImageOps

    client, db = served
    sent = phone_photo(photo)
    if kind == "png":  # a PNG with an eXIf chunk and a text chunk
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Location", "31.23N 121.47E")
        buffer = io.BytesIO()
        with Image.open(io.BytesIO(sent)) as img:
            img.save(buffer, format="PNG", exif=img.getexif(), pnginfo=info)
        sent = buffer.getvalue()
    assert b"PhoneMaker" in sent and b"SERIAL-123456" in sent
    assert client.post("/v1/feedback", files={"file": (f"p.{kind}", sent)}, data={"class": "Battery"}).status_code == 200
    (row,) = assert_store_is_sound(db)
    out = tmp_path / "export"
    assert main(["feedback", "export", str(db), str(out), "--reviewed"]) == 0
    (exported,) = (out / "Battery").iterdir()
    for kept in (open_store(str(db), create=False).read_photo(row), exported.read_bytes()):
        for secret in (b"PhoneMaker", b"Phone 15", b"SERIAL-123456", b"GPSLatitude", b"taken at home", b"Location"):
            assert secret not in kept
        with Image.open(io.BytesIO(kept)) as img:
            assert 0x8825 not in img.getexif() and not img.getexif().get_ifd(0x8825)
            kept_pixels = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        with Image.open(io.BytesIO(sent)) as img:
            sent_pixels = np.asarray(ImageOps.exif_transpose(img).convert("RGB"))
        assert np.array_equal(kept_pixels, sent_pixels)  # the same pixels, upright as the phone meant


# --- the command line


def test_list_and_export_an_imagefolder_idempotently(tmp_path, capsys):
    db = tmp_path / "feedback.sqlite"
    store = open_store(str(db))
    photos = [noise_png(i) for i in range(3)]
    store.add(row_for(photos[0], "Cardboard"), photos[0])
    store.add(row_for(photos[1], "Battery"), photos[1])
    store.add(row_for(photos[2], NOT_GARBAGE), photos[2])
    assert main(["feedback", "list", str(db)]) == 0
    table = capsys.readouterr().out
    assert "Paper -> Cardboard" in table and "Paper -> not garbage" in table and "3 feedback rows" in table
    assert main(["feedback", "list", str(db), "--json", "--limit", "1"]) == 0
    assert [r["corrected"] for r in json.loads(capsys.readouterr().out)] == [NOT_GARBAGE]

    out = tmp_path / "export"
    assert main(["feedback", "export", str(db), str(out), "--reviewed"]) == 0
    assert "3 written" in capsys.readouterr().out
    sha = [hashlib.sha256(p).hexdigest() for p in photos]
    assert (out / "Cardboard" / f"{sha[0]}.png").read_bytes() == photos[0]
    assert (out / "Battery" / f"{sha[1]}.png").is_file() and (out / ".not-garbage" / f"{sha[2]}.png").is_file()
    (out / "Battery" / "mine.jpg").write_bytes(b"a user's own file")
    # a later correction of photo 0 moves it; everything else stays
    store.add(row_for(photos[0], "Paper", model="m2"), photos[0])
    store.close()
    assert main(["feedback", "export", str(db), str(out), "--reviewed"]) == 0
    assert "1 written, 2 already there, 1 moved away" in capsys.readouterr().out
    assert not (out / "Cardboard" / f"{sha[0]}.png").exists() and (out / "Paper" / f"{sha[0]}.png").is_file()
    assert (out / "Battery" / "mine.jpg").is_file()


def test_export_writes_only_names_it_recomputed_and_nothing_outside_its_folder(tmp_path, capsys):
    """Rows tampered with by someone holding the database credentials: a photo name that climbs out
    of the export folder, and a photo whose bytes were swapped on disk."""
    import sqlite3

    db = tmp_path / "store" / "feedback.sqlite"
    db.parent.mkdir()
    store = open_store(str(db))
    photos = [noise_png(i) for i in range(3)]
    for photo in photos:
        store.add(row_for(photo, "Cardboard"), photo)
    swapped = store.photo_path(store.rows()[1])
    store.close()
    with sqlite3.connect(db) as raw:
        raw.execute("UPDATE feedback SET photo_sha256 = '../../../escaped' WHERE id = 1")
    swapped.write_bytes(noise_png(99))
    out = tmp_path / "deep" / "er" / "export"
    assert main(["feedback", "export", str(db), str(out), "--reviewed"]) == 0
    captured = capsys.readouterr()
    assert "1 written" in captured.out
    assert "row 1: photo name '../../../escaped'" in captured.err and "row 2: its photo's bytes do not hash" in captured.err
    written = sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(tmp_path / "store"))
    assert written == [out / "Cardboard" / f"{hashlib.sha256(photos[2]).hexdigest()}.png"]


def test_the_cli_names_a_missing_database_in_one_line(tmp_path, capsys):
    assert main(["feedback", "list", str(tmp_path / "none.sqlite")]) == 2
    assert capsys.readouterr().err.strip().endswith("none.sqlite: no feedback database here (binwise serve "
                                                    "--feedback-db creates it)")


# --- durability


def test_every_acknowledged_feedback_survives_a_kill_9_of_the_server(tmp_path):
    """50 clients post feedback (distinct and repeated photos) while 4 others classify; the server
    is killed with SIGKILL mid-run. Every feedback answered 200 is in the store with its photo."""
    import signal
    import time

    import httpx
    from inference_models import tiny_onnx

    from binwise.serving.process import serving

    db = tmp_path / "store" / "feedback.sqlite"
    photos = [noise_png(i) for i in range(60)]
    acknowledged: list[dict] = []
    lock, stop = threading.Lock(), threading.Event()
    classified, refused = [], []

    def feedback_client(k: int) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(1000):
                if stop.is_set():
                    return
                photo = photos[(k * 7 + i) % len(photos)]  # clients share photos: repeats and races
                corrected = GARBAGE26.classes_en[(k + i) % 3]
                try:
                    response = client.post("/v1/feedback", files={"file": ("p.png", photo, "image/png")},
                                           data={"class": corrected})
                except httpx.TransportError:
                    return  # the server is gone
                if response.status_code != 200:  # (an assert here would only end this thread)
                    refused.append(response.text)
                    return
                with lock:
                    acknowledged.append({**response.json(), "sha": hashlib.sha256(photo).hexdigest(),
                                         "class": corrected})

    def classify_client() -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                try:
                    response = client.post("/v1/classify", files={"file": ("p.png", photos[0], "image/png")})
                except httpx.TransportError:
                    return
                classified.append(response.status_code)

    with serving(tiny_onnx(), tmp_path / "serve.log", "--feedback-db", str(db), "--feedback-rate", "100000",
                 "--log-level", "warning") as (url, process):
        threads = [threading.Thread(target=feedback_client, args=(k,)) for k in range(50)]
        threads += [threading.Thread(target=classify_client) for _ in range(4)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acknowledged) < 150 and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)  # mid-run: requests in every stage of their way
        process.wait()
        stop.set()
        for t in threads:
            t.join(60)
    assert not refused and len(acknowledged) >= 150 and classified and set(classified) == {200}
    rows = {r.id: r for r in assert_store_is_sound(db)}
    for ack in acknowledged:
        row = rows.get(ack["id"])
        assert row is not None, f"acknowledged feedback {ack['id']} lost"
        assert (row.photo_sha256, row.corrected) == (ack["sha"], ack["class"])
    # one row per photo and class, however often and however concurrently it was posted
    assert len({(r.photo_sha256, r.corrected) for r in rows.values()}) == len(rows)
    with sqlite3.connect(db) as plain:  # what any SQLite tool sees
        assert plain.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    # every photo file is named by its content; a write the kill cut short left at most a
    # temporary dot-file, which is no photo and which opening the store again removes
    for path in (db.parent / "photos").rglob("*.*"):
        if path.name.startswith("."):
            assert path.name.endswith(".tmp")
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == path.name.split(".")[0]
    open_store(str(db)).close()
    assert not list((db.parent / "photos").rglob(".*"))


def test_a_postgres_url_without_psycopg_names_the_extra_in_one_line(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if the 'postgres' extra were not installed
    monkeypatch.delitem(sys.modules, "binwise.serving.feedback.postgres_store", raising=False)
    assert main(["feedback", "list", "postgresql://binwise@127.0.0.1:5432/feedback"]) == 2
    error = capsys.readouterr().err
    assert "this needs psycopg" in error and "install the 'postgres' extra" in error
    assert len(error.strip().splitlines()) == 1
