"""The shared feedback store: replicas on one PostgreSQL server, started by the tests on loopback."""

from __future__ import annotations

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from postgres_server import postgres_server
from test_feedback import noise_png, row_for

from binwise.cli import main
from binwise.serving.feedback.stores import open_store

psycopg = pytest.importorskip("psycopg", reason="psycopg is not installed (the 'postgres' extra; "
                              "scripts/setup-dev.sh installs it)")


@pytest.fixture(scope="module")
def server_url():
    with postgres_server() as server:
        yield server.url


@pytest.fixture
def pg_url(server_url, request):
    """A new, empty database on the test server for each test."""
    name = "t_" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:12]
    with psycopg.connect(server_url, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name}")
    return server_url.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    from binwise.inference.classifier import Classifier

    return Classifier.load(garbage26_model)


def test_two_replicas_share_rows_and_photos(pg_url, classifier, garbage26_data):
    from binwise.serving.app import create_app

    photo = sorted((garbage26_data / "test" / "Cans").glob("*.jpg"))[0].read_bytes()
    replicas = [TestClient(create_app(classifier, feedback_store=open_store(pg_url))) for _ in range(2)]
    with replicas[0] as a, replicas[1] as b:
        first = a.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Cans", "note": "a can"})
        assert first.status_code == 200 and first.json()["already_recorded"] is False
        again = b.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "易拉罐"})
        assert again.status_code == 200, again.text
        assert again.json()["already_recorded"] is True and again.json()["id"] == first.json()["id"]
        other = b.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Metalware"})
        assert other.status_code == 200 and other.json()["id"] != first.json()["id"]
    store = open_store(pg_url)
    rows = store.rows()
    assert [(r.corrected, r.note) for r in rows] == [("Cans", "a can"), ("Metalware", "")]
    assert all(store.read_photo(r) == photo for r in rows)
    store.close()


def test_replicas_share_one_rate_limit(pg_url, classifier):
    from binwise.serving.app import create_app

    photos = [noise_png(i) for i in range(4)]
    replicas = [TestClient(create_app(classifier, feedback_store=open_store(pg_url), feedback_rate=3))
                for _ in range(2)]
    with replicas[0] as a, replicas[1] as b:
        answers = [(a, b)[i % 2].post("/v1/feedback", files={"file": ("p.png", photo)}, data={"class": "Paper"})
                   for i, photo in enumerate(photos)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]  # three a minute across both
    assert "at most 3 feedbacks a minute" in answers[3].json()["detail"]


def test_concurrent_posts_from_one_client_never_pass_its_limit(pg_url):
    stores = [open_store(pg_url) for _ in range(4)]
    start = threading.Barrier(4)

    def admit_many(k: int) -> list:
        start.wait()
        return [stores[k].admit("203.0.113.7", 10, 60, now=1000.0 + k + i / 100) for i in range(8)]

    with ThreadPoolExecutor(4) as pool:
        admitted = [wait for batch in pool.map(admit_many, range(4)) for wait in batch if wait is None]
    assert len(admitted) == 10
    for store in stores:
        store.close()


def test_the_same_feedback_posted_to_replicas_at_once_is_one_row(pg_url):
    stores = [open_store(pg_url) for _ in range(4)]
    photos = [noise_png(i) for i in range(5)]
    start = threading.Barrier(8)

    def post_all(k: int):
        start.wait()
        return [stores[k % 4].add(row_for(p), p) for p in photos * 3]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(post_all, range(8)) for r in batch]
    assert sum(not already for _, already in results) == 5
    assert len({row.id for row, _ in results}) == 5
    assert stores[0].count() == 5
    for store in stores:
        store.close()


def test_list_and_export_from_a_postgres_url(pg_url, tmp_path, capsys):
    store = open_store(pg_url)
    photos = [noise_png(i) for i in range(2)]
    store.add(row_for(photos[0], "Battery"), photos[0])
    store.add(row_for(photos[1], "not garbage"), photos[1])
    store.close()
    assert main(["feedback", "list", pg_url, "--json"]) == 0
    assert [r["corrected"] for r in json.loads(capsys.readouterr().out)] == ["Battery", "not garbage"]
    assert main(["feedback", "export", pg_url, str(tmp_path / "out"), "--reviewed"]) == 0
    sha = hashlib.sha256(photos[0]).hexdigest()
    assert (tmp_path / "out" / "Battery" / f"{sha}.png").read_bytes() == photos[0]
    assert len(list((tmp_path / "out" / ".not-garbage").iterdir())) == 1


def test_the_review_queue_on_postgres_gains_the_region_column_and_exports_what_reviewers_agree_on(pg_url, tmp_path):
    from test_review import item_for

    from binwise.serving.feedback import review

    with psycopg.connect(pg_url, autocommit=True) as old:  # a store from before regions
        old.execute("CREATE TABLE feedback (id BIGSERIAL PRIMARY KEY, time TEXT NOT NULL, model TEXT NOT NULL, "
                    "photo_sha256 TEXT NOT NULL, photo_suffix TEXT NOT NULL, predicted TEXT NOT NULL, predicted_status "
                    "TEXT NOT NULL, corrected TEXT NOT NULL, note TEXT NOT NULL, client TEXT NOT NULL, "
                    "UNIQUE (photo_sha256, corrected, model))")
    store = open_store(pg_url)
    store.add(row_for(noise_png(9), "Battery"), noise_png(9))
    assert [r.region for r in store.rows()] == [""]
    item = item_for(store, noise_png(1), [0.5, 0.5])
    assert review.add_item(store, review.ReviewItem(None, *[getattr(item, n) for n in review.ITEM_COLUMNS[1:]]),
                           noise_png(1))[1] is True  # one per photo and model
    for reviewer in ("ana", "bo"):
        review.add_review(store, item.id, reviewer, "Paper")
    assert review.export_reviewed(store, tmp_path / "out").per_class == {"Paper": 1}
    store.close()


def test_an_unreachable_database_is_one_line_without_the_password(server_url, capsys):
    url = server_url.replace("binwise@", "binwise:s3cret@").rsplit(":", 1)[0] + ":1/postgres"
    assert main(["feedback", "list", url]) == 2
    error = capsys.readouterr().err
    assert "cannot connect to the feedback database" in error and "s3cret" not in error
    assert len(error.strip().splitlines()) == 1


def test_two_binwise_serve_processes_behind_one_address_share_one_store(pg_url, tmp_path):
    import httpx
    from inference_models import tiny_onnx

    from binwise.serving.process import serving

    photos = [noise_png(i) for i in range(6)]
    with serving(tiny_onnx(), tmp_path / "a.log", "--feedback-db", pg_url) as (a, _), \
            serving(tiny_onnx(), tmp_path / "b.log", "--feedback-db", pg_url) as (b, _):
        answers = []
        for i, photo in enumerate(photos * 2):  # round robin, as a load balancer would: each photo twice
            response = httpx.post(f"{(a, b)[i % 2]}/v1/feedback", files={"file": ("p.png", photo)},
                                  data={"class": "Paper"}, timeout=30)
            assert response.status_code == 200, response.text
            answers.append(response.json())
    assert [x["already_recorded"] for x in answers] == [False] * 6 + [True] * 6
    assert [x["id"] for x in answers[:6]] == [x["id"] for x in answers[6:]]
    assert "feedback recorded in postgresql://binwise@127.0.0.1" in (tmp_path / "a.log").read_text()


def test_a_database_crash_keeps_every_acknowledged_feedback_and_the_service_reconnects(classifier, garbage26_data):
    """The server stopped as a crash stops it (no checkpoint, connections cut): posts meanwhile
    get 503 with the store's kind, the rows acknowledged before are there after its WAL replay,
    and the same replica writes again without a restart."""
    from binwise.serving.app import create_app

    photos = [p.read_bytes() for p in sorted((garbage26_data / "test" / "Cans").glob("*.jpg"))[:3]]
    with postgres_server() as server, TestClient(create_app(classifier,
                                                            feedback_store=open_store(server.url))) as client:
        def post(photo: bytes):
            return client.post("/v1/feedback", files={"file": ("p.jpg", photo)}, data={"class": "Cans"})

        acknowledged = [post(photo).json()["id"] for photo in photos[:2]]
        server.crash()
        for _ in range(2):  # the broken connection, then no server to connect to
            down = post(photos[2])
            assert down.status_code == 503 and down.json()["error"] == "feedback_store_unavailable", down.text
        server.start()
        after = post(photos[2])
        assert after.status_code == 200 and after.json()["already_recorded"] is False, after.text
        again = post(photos[0]).json()
        assert again["already_recorded"] is True and again["id"] == acknowledged[0]

        store = open_store(server.url)
        rows = store.rows()
        assert sorted(r.id for r in rows) == sorted([*acknowledged, after.json()["id"]])
        assert sorted(store.read_photo(r) for r in rows) == sorted(photos)
        store.close()
