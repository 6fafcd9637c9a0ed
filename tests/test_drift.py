"""Drift: windows of answers tested against the model's held-out mix, at a stated false-alarm rate."""

from __future__ import annotations

import json
import logging
import urllib.request

import numpy as np
import pytest
from fastapi.testclient import TestClient

from binwise.inference.classifier import Classifier
from binwise.model.file import load_model, save_model
from binwise.model.status import STATUSES
from binwise.serving.app import create_app
from binwise.serving.drift import DriftMonitor, DriftReference, chi_square_survival

# a held-out mix like a garbage26 model's: most answered, 26 classes of uneven size
SHARES = np.random.default_rng(1).dirichlet(np.full(26, 3.0))
MIX = {"statuses": {"ok": 900, "unsure": 80, "unknown": 20}, "top_classes": np.round(SHARES * 1000).astype(int).tolist()}


def test_the_chi_square_tail_is_close_to_the_exact_one():
    # exact values: chi2.sf(x, k) from tables
    for x, k, exact in [(3.84, 1, 0.05), (5.99, 2, 0.05), (13.82, 2, 0.001), (37.65, 25, 0.05), (52.62, 25, 0.001)]:
        assert chi_square_survival(x, k) == pytest.approx(exact, rel=0.35)


def test_windows_drawn_like_the_held_out_photos_rarely_alarm():
    reference = DriftReference.from_calibration({"held_out_mix": MIX})
    monitor = DriftMonitor(reference, window=200, false_alarm=0.01)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        monitor.close_window(rng.multinomial(200, reference.statuses), rng.multinomial(200, reference.classes))
    assert monitor.windows == 3000
    assert monitor.alarms <= 2 * 0.01 * 3000  # the stated rate, with room for the approximation


def test_one_class_or_many_unknowns_alarm_in_the_first_window():
    reference = DriftReference.from_calibration({"held_out_mix": MIX})
    changes = []
    monitor = DriftMonitor(reference, window=100, false_alarm=0.001, on_change=changes.append)
    for _ in range(100):
        monitor.add("ok", int(np.argmin(SHARES)))  # only the rarest class
    assert monitor.alarm and monitor.alarms == 1 and len(changes) == 1 and changes[0]["alarm"]
    rng = np.random.default_rng(2)
    for status in rng.choice(STATUSES, size=100, p=[0.5, 0.1, 0.4]):  # 40% unknown instead of 2%
        monitor.add(str(status), int(rng.choice(26, p=SHARES)))
    assert monitor.alarm and monitor.last["p_statuses"] < 1e-6


@pytest.fixture(scope="module")
def model_with_mix(garbage26_model, garbage26_data, tmp_path_factory):
    """The quick garbage26 model, its held-out mix counted on garbage26's test photos."""
    classifier = Classifier.load(garbage26_model)
    photos = sorted((garbage26_data / "test").glob("*/*.jpg"))
    answers = classifier.predict(photos)
    mix = {"statuses": {s: sum(a.status == s for a in answers) for s in STATUSES},
           "top_classes": np.bincount([a.top[0].index for a in answers], minlength=26).tolist()}
    model_file = load_model(garbage26_model)
    # the thresholds the mix was counted under, written out
    model_file.calibration = {"temperature": classifier.calibration.temperature,
                              **classifier.calibration.thresholds.to_dict(), "held_out_mix": mix}
    path = tmp_path_factory.mktemp("drift") / "with-mix.safetensors"
    save_model(path, model_file)
    return path, photos


def test_the_service_warns_once_when_the_stream_skews(model_with_mix, caplog):
    path, photos = model_with_mix
    classifier = Classifier.load(path)
    battery = next(p for p in photos if p.parent.name == "Battery").read_bytes()
    with TestClient(create_app(classifier, drift_window=40)) as client:
        for photo in np.random.default_rng(0).permutation(photos)[:40]:  # like the held-out photos
            client.post("/v1/classify", files={"file": ("p.jpg", photo.read_bytes(), "image/jpeg")})
        calm = client.get("/v1/drift").json()
        with caplog.at_level(logging.WARNING, logger="binwise.serving.app"):
            for _ in range(80):  # only batteries
                client.post("/v1/classify", files={"file": ("b.jpg", battery, "image/jpeg")})
        skewed = client.get("/v1/drift").json()
        metrics = client.get("/metrics").text
    assert calm["windows"] == 1 and not calm["alarm"]
    assert skewed["windows"] == 3 and skewed["alarm"] and skewed["alarms"] == 2
    assert len([r for r in caplog.records if r.message.startswith("drift:")]) == 1  # once, when it crosses
    assert "binwise_drift_alarm 1.0" in metrics and 'binwise_drift_tests_total{result="alarm"} 2.0' in metrics


def test_a_model_without_a_mix_says_so(garbage26_model):
    with TestClient(create_app(Classifier.load(garbage26_model))) as client:
        report = client.get("/v1/drift").json()
    assert report["available"] is False and "held_out_mix" in report["reason"]


def test_a_real_server_raises_the_drift_alarm(model_with_mix, tmp_path):
    from binwise.serving.process import serving

    path, photos = model_with_mix
    battery = next(p for p in photos if p.parent.name == "Battery").read_bytes()
    log = tmp_path / "serve.log"
    with serving(path, log, "--drift-window", "30") as (url, _):
        for _ in range(30):
            request = urllib.request.Request(f"{url}/v1/classify", data=battery, headers={"Content-Type": "image/jpeg"})
            urllib.request.urlopen(request, timeout=60).read()
        with urllib.request.urlopen(f"{url}/v1/drift", timeout=10) as response:
            report = json.loads(response.read())
    assert report["alarm"] and report["windows"] == 1, json.dumps(report)
    assert "drift: the last 30 photos are unlike the model's held-out ones" in log.read_text()


def test_the_binomial_tail_is_exact():
    from binwise.model.status import binomial_tail

    assert binomial_tail(3, 3, 0.5) == pytest.approx(0.125)
    assert binomial_tail(2, 3, 0.5) == pytest.approx(0.5)
    assert binomial_tail(0, 10, 0.3) == 1.0
