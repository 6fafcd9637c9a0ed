"""The service's Prometheus metrics and its readiness, read with Prometheus' own text parser."""

from __future__ import annotations

import io
import json
import time
import urllib.request

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from binwise.inference.classifier import Classifier
from binwise.serving.app import create_app


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    return Classifier.load(garbage26_model)


def samples(text: str) -> dict:
    """{(name, sorted label items): value} of every sample in a /metrics page."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_counters_move_as_requests_arrive(classifier, garbage26_data):
    battery = sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0].read_bytes()
    with TestClient(create_app(classifier)) as client:
        before = samples(client.get("/metrics").text)
        for _ in range(3):
            assert client.post("/v1/classify", files={"file": ("b.jpg", battery, "image/jpeg")}).status_code == 200
        assert client.post("/v1/classify", files={"file": ("x.jpg", b"not a photo", "image/jpeg")}).status_code == 415
        client.get("/no/such/page/123")
        after = samples(client.get("/metrics").text)
    ok = ("binwise_requests_total", (("code", "200"), ("route", "/v1/classify")))
    assert after[ok] - before.get(ok, 0) == 3
    assert after[("binwise_requests_total", (("code", "415"), ("route", "/v1/classify")))] == 1
    # unknown paths share one label, so scanners cannot grow the label set
    assert after[("binwise_requests_total", (("code", "404"), ("route", "unmatched")))] == 1
    assert after[("binwise_request_seconds_count", (("route", "/v1/classify"),))] == 4
    answered = {labels: v for (name, labels), v in after.items() if name == "binwise_answers_total"}
    assert sum(answered.values()) == 3
    assert all(dict(labels)["class"] in classifier.taxonomy.classes_en for labels in answered)
    assert sum(v for (name, _), v in after.items() if name == "binwise_batches_total") >= 3
    assert after[("binwise_model_info", (("backend", classifier.backend), ("model", classifier.model_id)))] == 1
    budget = {labels: v for (name, labels), v in after.items() if name == "binwise_memory_budget_bytes"}
    assert budget[(("budget", "upload"), ("state", "used"))] == 0 < budget[(("budget", "upload"), ("state", "total"))]
    assert (("budget", "decode"), ("state", "total")) in budget
    # every upload waited for the upload budget, every photo for the decode budget and the batch queue
    # (the one that is not a photo never reaches a decode)
    waits = {"upload": 4, "decode": 3}
    for name, count in waits.items():
        key = ("binwise_memory_budget_wait_seconds_count", (("budget", name),))
        assert after[key] - before[key] == count
    queued = ("binwise_batch_queue_wait_seconds_count", ())
    assert after[queued] - before[queued] == 3
    assert after[("binwise_batch_queue_wait_seconds_bucket", (("le", "+Inf"),))] == after[queued]


def test_readiness_waits_for_a_scored_photo_and_metrics_need_the_api_key(classifier):
    with TestClient(create_app(classifier, api_key="s3cret")) as client:
        deadline = time.monotonic() + 30
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/healthz").status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_a_real_server_exposes_metrics_and_logs_requests_as_json(garbage26_model, tmp_path):
    from binwise.serving.process import serving

    image = io.BytesIO()
    Image.new("RGB", (300, 200), (200, 30, 30)).save(image, "JPEG")
    log = tmp_path / "serve.log"
    with serving(garbage26_model, log, "--json-access-log") as (url, _):
        request = urllib.request.Request(f"{url}/v1/classify", data=image.getvalue(),
                                         headers={"Content-Type": "image/jpeg"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/readyz", timeout=10) as response:
            assert response.status == 200
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            text = response.read().decode()
    found = samples(text)
    assert found[("binwise_requests_total", (("code", "200"), ("route", "/v1/classify")))] == 1
    assert found[("binwise_batch_queue_wait_seconds_count", ())] == 1
    assert found[("binwise_memory_budget_wait_seconds_count", (("budget", "upload"),))] == 1
    assert found[("binwise_memory_budget_wait_seconds_count", (("budget", "decode"),))] == 1
    # --json-access-log: one JSON line per request instead of uvicorn's text lines
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    classified = [line for line in lines if line["route"] == "/v1/classify"]
    assert len(classified) == 1 and classified[0]["status"] == 200 and classified[0]["method"] == "POST"
    assert classified[0]["client"] == "127.0.0.1" and classified[0]["seconds"] > 0
    assert '"POST /v1/classify HTTP/1.1" 200' not in log.read_text()
