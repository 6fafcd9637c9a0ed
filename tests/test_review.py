"""The review queue: kept photos (only with consent), reviewers' labels, agreement, export, and
the guards against a client flooding or poisoning it."""

from __future__ import annotations

import hashlib
import json
import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient
from test_feedback import noise_png
from test_service import assert_error

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.serving.feedback import review
from binwise.serving.feedback.review_routes import read_reviewer_keys
from binwise.serving.feedback.stores import open_store

UNCERTAIN = ("unsure", "unknown")
KEYS = {"ana": "ana-key-0123456789abcdef", "bo": "bo-key-0123456789abcdef", "cy": "cy-key-0123456789abcdef"}


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    from binwise.inference.classifier import Classifier

    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def battery(garbage26_data) -> bytes:
    return sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0].read_bytes()


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "reviewers.txt"
    path.write_text("# reviewers\n" + "".join(f"{name} {key}\n" for name, key in KEYS.items()))
    return path


def serve(classifier, db, **settings):
    from binwise.serving.app import create_app

    return TestClient(create_app(classifier, feedback_store=open_store(str(db)), **settings))


def classify(client, photo: bytes, **params):
    answer = client.post("/v1/classify", params=params, files={"file": ("p.png", photo, "image/png")})
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_items(db) -> list:
    store = open_store(str(db), create=False)
    try:
        return review.items(store)
    finally:
        store.close()


def test_a_kept_photo_is_never_stored_without_consent(classifier, battery, tmp_path):
    noise = noise_png(1, 224)  # no garbage: answered unsure (or unknown)
    db = tmp_path / "off" / "feedback.sqlite"
    with serve(classifier, db) as client:  # the service was not started with --keep-uncertain
        assert client.get("/v1/model").json()["keeps_uncertain"] is False
        answer = classify(client, noise)
        assert answer["status"] in UNCERTAIN and "kept" not in answer
    assert stored_items(db) == []

    db = tmp_path / "on" / "feedback.sqlite"
    with serve(classifier, db, keep_uncertain=True) as client:
        assert client.get("/v1/model").json()["keeps_uncertain"] is True
        assert classify(client, noise, keep="false")["kept"] is False  # the request refused
        assert stored_items(db) == []
        ok = classify(client, battery)
        assert ok["status"] == "ok" and ok["kept"] is False  # a sure answer is never kept
        assert classify(client, noise)["kept"] is True
        assert classify(client, noise)["kept"] is True  # the same photo: kept once
    items = stored_items(db)
    assert [(i.source, i.predicted_status in UNCERTAIN, i.client) for i in items] == [("kept", True, "testclient")]
    assert len(json.loads(items[0].probabilities)) == classifier.taxonomy.num_classes


def test_keeping_needs_a_store(classifier):
    from binwise.serving.app import create_app

    with pytest.raises(BinwiseError, match="--feedback-db"):
        create_app(classifier, keep_uncertain=True)


def test_a_client_flooding_the_queue_is_capped(classifier, tmp_path):
    db = tmp_path / "feedback.sqlite"
    with serve(classifier, db, keep_uncertain=True, keep_rate=3) as client:
        kept = [classify(client, noise_png(seed, 224))["kept"] for seed in range(6)]
    assert kept == [True] * 3 + [False] * 3  # answered all the same
    assert len(stored_items(db)) == 3
    # and in all, whatever the rate: a network adds at most its share of kept photos
    db = tmp_path / "share" / "feedback.sqlite"
    with serve(classifier, db, keep_uncertain=True, review_network_items=2) as client:
        kept = [classify(client, noise_png(seed, 224))["kept"] for seed in range(4)]
    assert kept == [True, True, False, False] and len(stored_items(db)) == 2


def item_for(store, photo: bytes, probabilities, *, signature=None, source="kept", client="10.0.0.1", model="m"):
    if signature is None:  # a photo of its own
        signature = np.random.default_rng(list(hashlib.sha256(photo).digest())).normal(size=768)
    item = review.new_item(photo, model=model, source=source, predicted="Paper", predicted_status="unsure",
                           probabilities=np.asarray(probabilities), signature=signature / np.linalg.norm(signature),
                           client=client, network=client, region="")
    return review.add_item(store, item, photo)[0]


def test_two_agreeing_reviews_export_an_item_and_one_does_not(tmp_path, capsys):
    store = open_store(str(tmp_path / "feedback.sqlite"))
    first = item_for(store, noise_png(1), [0.5, 0.4, 0.1])
    second = item_for(store, noise_png(2), [0.6, 0.3, 0.1])
    review.add_review(store, first.id, "ana", "Cardboard")
    out = tmp_path / "reviewed"
    assert review.export_reviewed(store, out).per_class == {}  # one review is not enough
    review.add_review(store, first.id, "bo", "Cardboard")
    review.add_review(store, second.id, "ana", "Cardboard")
    review.add_review(store, second.id, "bo", "Paper")  # a disagreement: undecided
    report = review.export_reviewed(store, out)
    assert report.per_class == {"Cardboard": 1} and report.written == 1
    assert [p.name.split(".")[0] for p in (out / "Cardboard").iterdir()] == [first.photo_sha256]
    found = review.report(store)
    assert found.decided == {"Cardboard": 1} and found.undecided == 1
    assert [(i.id, votes) for i, votes in found.disagreements] == [(second.id, {"ana": "Cardboard", "bo": "Paper"})]
    # a third reviewer breaks the tie; a single operator can decide alone with agree=1
    review.add_review(store, second.id, "cy", "Paper")
    assert review.export_reviewed(store, out).per_class == {"Cardboard": 1, "Paper": 1}
    third = item_for(store, noise_png(3), [0.5, 0.5, 0.0])
    review.add_review(store, third.id, "ana", "not garbage")
    assert review.export_reviewed(store, tmp_path / "solo", agree=1).not_garbage == 1
    store.close()
    # the CLI: report and export
    assert main(["review", "report", str(tmp_path / "feedback.sqlite")]) == 0
    assert "3 items: 2 decided by 2 agreeing reviewers (Cardboard 1, Paper 1), 1 not yet" in capsys.readouterr().out
    assert main(["review", "export", str(tmp_path / "feedback.sqlite"), str(tmp_path / "cli")]) == 0
    assert "2 photos in 2 class folders" in capsys.readouterr().out


def test_the_queue_puts_the_most_uncertain_first_and_shows_look_alikes_once(tmp_path):
    store = open_store(str(tmp_path / "feedback.sqlite"))
    shot = np.random.default_rng(0).normal(size=768)
    sure = item_for(store, noise_png(1), [0.9, 0.05, 0.05])
    burst = [item_for(store, noise_png(seed), [0.45, 0.45, 0.1], signature=shot + 0.01 * seed) for seed in (2, 3, 4)]
    other = item_for(store, noise_png(5), [0.1, 0.5, 0.4])
    ranked = review.queue(store, "m", reviewer="ana")
    assert [i.id for i, _ in ranked] == [burst[0].id, other.id, sure.id]
    assert sorted(a.id for a in ranked[0][1]) == [burst[1].id, burst[2].id]
    # what a reviewer has seen leaves their queue, not the others'
    review.add_review(store, burst[0].id, "ana", "skip")
    assert burst[0].id not in [i.id for i, _ in review.queue(store, "m", reviewer="ana")]
    assert review.queue(store, "m", reviewer="bo")[0][0].id == burst[0].id
    # decided: the look-alikes go with it into the export
    review.add_review(store, burst[0].id, "bo", "Paper")
    review.add_review(store, burst[0].id, "cy", "Paper")
    assert review.export_reviewed(store, tmp_path / "out").per_class == {"Paper": 3}
    assert [i.id for i, _ in review.queue(store, "m", reviewer="ana")] == [other.id, sure.id]
    store.close()


def test_networks_whose_feedback_keeps_disagreeing_with_reviewers_are_flagged(tmp_path):
    from binwise.serving.feedback.store import new_row

    store = open_store(str(tmp_path / "feedback.sqlite"))
    for seed, (client, corrected) in enumerate([("6.6.6.1", "Battery")] * 3 + [("7.7.7.7", "Paper")] * 3):
        photo = noise_png(seed)
        store.add(new_row(photo, model="m", predicted="Paper", predicted_status="ok", corrected=corrected, note="",
                          client=client), photo)
        item = item_for(store, photo, [0.6, 0.4], source="feedback", client=client)
        assert review.senders_said(store, item) == [corrected]
        for reviewer in ("ana", "bo"):
            review.add_review(store, item.id, reviewer, "Paper")
    assert review.report(store).flagged == [("6.6.6.0/24", 3, 3)]
    store.close()


def test_the_review_page_api_needs_a_reviewers_key_and_counts_people(classifier, key_file, tmp_path):
    db = tmp_path / "feedback.sqlite"
    with serve(classifier, db, keep_uncertain=True, reviewer_keys=str(key_file), api_key="service-key") as client:
        api = {"X-API-Key": "service-key"}
        for seed in (1, 2):
            r = client.post("/v1/classify", headers=api, files={"file": ("p.png", noise_png(seed, 224), "image/png")})
            assert r.json()["kept"] is True
        assert client.get("/review").status_code == 200  # the page itself is open; its API is not
        assert_error(client.get("/review/api/next"), 401, "unauthorized", "reviewer")
        assert_error(client.get("/review/api/next", headers={"X-Reviewer-Key": "service-key"}), 401, "unauthorized")
        ana, bo = ({"X-Reviewer-Key": KEYS[name]} for name in ("ana", "bo"))
        listed = client.get("/review/api/next", headers=ana, params={"count": 5}).json()
        assert listed["reviewer"] == "ana" and listed["agree"] == 2 and len(listed["items"]) == 2
        first = listed["items"][0]
        assert first["source"] == "kept" and first["status"] in UNCERTAIN and len(first["choices"]) == 5
        assert first["choices"][0]["bin"]["id"] in {"dry", "recyclable", "wet", "hazardous"}
        assert len(listed["classes"]) == classifier.taxonomy.num_classes
        photo = client.get(f"/review/api/photo/{first['id']}", headers=ana)
        assert photo.status_code == 200 and photo.headers["content-type"] == "image/png"
        assert_error(client.get("/review/api/photo/999", headers=ana), 404, "unknown_item")
        assert_error(client.post("/review/api/label", headers=ana, content=b"{"), 422, "invalid_review")
        assert_error(client.post("/review/api/label", headers=ana, json={"item": first["id"], "label": "Cardbord"}),
                     422, "unknown_class")
        for headers in (ana, ana, bo):  # ana twice is still one person
            r = client.post("/review/api/label", headers=headers, json={"item": first["id"], "label": "不是垃圾"})
            assert r.status_code == 200 and r.json()["label"] == "not garbage"
        remaining = client.get("/review/api/next", headers={"X-Reviewer-Key": KEYS["cy"]}, params={"count": 5})
        assert [i["id"] for i in remaining.json()["items"]] == [listed["items"][1]["id"]]  # the first is decided


@pytest.mark.parametrize("text, problem", [("ana short\n", "at least 16"), ("ana\n", "expected 'NAME KEY'"),
                                           ("# nobody\n", "no reviewer keys"),
                                           ("a 0123456789abcdefgh\nb 0123456789abcdefgh\n", "has the key of a")])
def test_a_bad_reviewer_key_file_is_one_line_naming_it(tmp_path, text, problem):
    path = tmp_path / "keys.txt"
    path.write_text(text)
    with pytest.raises(BinwiseError, match=problem) as refused:
        read_reviewer_keys(path)
    assert str(path) in str(refused.value)


def test_feedback_records_the_region_its_sender_was_shown(classifier, battery, tmp_path):
    db = tmp_path / "feedback.sqlite"
    with serve(classifier, db, regions=("beijing",)) as client:
        sent = client.post("/v1/feedback", files={"file": ("b.jpg", battery, "image/jpeg")},
                           data={"class": "Battery", "region": "beijing"})
        assert sent.status_code == 200 and sent.json()["region"] == "beijing"
        assert_error(client.post("/v1/feedback", files={"file": ("b.jpg", battery, "image/jpeg")},
                                 data={"class": "Battery", "region": "atlantis"}), 400, "unknown_region", "beijing")
    store = open_store(str(db), create=False)
    assert [r.region for r in store.rows()] == ["beijing"]
    # every feedback joins the review queue too
    assert [(i.source, i.region) for i in review.items(store)] == [("feedback", "beijing")]
    store.close()


def test_a_store_from_before_regions_gains_the_column_and_keeps_its_rows(tmp_path):
    db = tmp_path / "feedback.sqlite"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE feedback (id INTEGER PRIMARY KEY, time TEXT NOT NULL, model TEXT NOT NULL, "
                "photo_sha256 TEXT NOT NULL, photo_suffix TEXT NOT NULL, predicted TEXT NOT NULL, predicted_status "
                "TEXT NOT NULL, corrected TEXT NOT NULL, note TEXT NOT NULL, client TEXT NOT NULL, "
                "UNIQUE (photo_sha256, corrected, model))")
    old.execute("INSERT INTO feedback VALUES (1, 't', 'm', ?, 'png', 'Paper', 'ok', 'Cardboard', '', '1.2.3.4')",
                ("a" * 64,))
    old.commit()
    old.close()
    store = open_store(str(db), create=False)
    assert [(r.corrected, r.region) for r in store.rows()] == [("Cardboard", "")]
    store.close()


def test_the_cli_lists_the_queue_and_records_a_label(garbage26_model, classifier, tmp_path, capsys):
    db = tmp_path / "feedback.sqlite"
    with serve(classifier, db, keep_uncertain=True) as client:
        classify(client, noise_png(1, 224))
    assert main(["review", "list", str(db), "--model", str(garbage26_model), "--reviewer", "ana"]) == 0
    out = capsys.readouterr().out
    item_id = int(out.split()[0])
    assert "kept" in out and "1 items to review" in out and str(tmp_path / "photos") in out
    assert main(["review", "label", str(db), str(item_id), "电池", "--model", str(garbage26_model),
                 "--reviewer", "ana"]) == 0
    assert capsys.readouterr().out.strip() == f"item {item_id}: ana says Battery"
    assert main(["review", "list", str(db), "--model", str(garbage26_model), "--reviewer", "ana"]) == 0
    assert "0 items to review" in capsys.readouterr().out
    assert main(["review", "label", str(db), "99", "Battery", "--model", str(garbage26_model)]) == 2
    assert "no review item 99" in capsys.readouterr().err
