"""Statuses (ok / unsure / unknown): calibration, thresholds, and the status in every output."""

from __future__ import annotations

import csv
import dataclasses
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from inference_models import tiny_onnx
from PIL import Image

from binwise.model import status
from binwise.cli import main
from binwise.inference.classifier import Classifier
from binwise.serving.app import create_app
from binwise.taxonomy.classes import GARBAGE26


def overconfident_validation(count: int = 3000, classes: int = 10, seed: int = 0):
    """Logits whose softmax at temperature 1 is calibrated by construction (labels drawn from
    it), then scaled by 3: a model three times too sure of itself."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (count, classes))
    logits[np.arange(count), rng.integers(0, classes, count)] += 2.5
    labels = np.array([rng.choice(classes, p=p) for p in status.softmax(logits)])
    return 3 * logits, labels


def test_temperature_scaling_lowers_ece_on_validation():
    logits, labels = overconfident_validation()
    temperature = status.fit_temperature(logits, labels)
    before = status.expected_calibration_error(status.softmax(logits), labels)
    after = status.expected_calibration_error(status.softmax(logits, temperature), labels)
    assert temperature == pytest.approx(3, rel=0.1)
    assert before > 0.1 and after < 0.03 and after < before / 4
    # one scale for every logit: the top class never changes
    assert np.array_equal(status.softmax(logits, temperature).argmax(1), logits.argmax(1))


def test_min_confidence_reaches_the_target_accuracy_with_the_most_coverage():
    logits, labels = overconfident_validation(seed=1)
    p = status.softmax(logits, status.fit_temperature(logits, labels))
    confidence, right = p.max(1), p.argmax(1) == labels
    for target in (0.9, 0.95, 0.99):
        threshold = status.choose_min_confidence(confidence, right, target)
        answered = confidence >= threshold
        assert confidence[answered].mean() >= target  # the calibrated model expects the target
        assert right[answered].mean() >= target - 0.01  # and, calibrated, comes close to it here
        lower = confidence < threshold
        if lower.any():  # answering one more confidence level would miss the target
            assert confidence[confidence >= confidence[lower].max()].mean() < target
    assert status.choose_min_confidence(np.array([0.9, 0.8]), np.array([False, False]), 0.99) > 0.9


def test_two_confident_mistakes_among_few_photos_do_not_silence_a_calibrated_model():
    """A small validation split (160 photos) whose confidences are calibrated, with two mistakes
    among its most confident: counting mistakes alone answered almost nothing."""
    rng = np.random.default_rng(0)
    confidence = np.sort(rng.uniform(0.5, 1.0, 160))[::-1]
    confidence[:80] = np.linspace(0.9999, 0.985, 80)
    right = rng.random(160) < confidence
    right[:80] = True
    right[[5, 24]] = False
    threshold = status.choose_min_confidence(confidence, right, 0.99)
    assert (confidence >= threshold).sum() >= 60


def test_held_out_mistakes_veto_a_tail_the_temperature_makes_too_sure():
    """Confidences of 0.999 that are right only 90% of the time: the count refutes them."""
    rng = np.random.default_rng(0)
    confidence = np.full(500, 0.999) - rng.uniform(0, 1e-4, 500)
    right = rng.random(500) < 0.9
    threshold = status.choose_min_confidence(confidence, right, 0.99)
    answered = confidence >= threshold
    assert answered.sum() <= 60 and (not answered.any() or right[answered].mean() >= 0.9)


def test_binomial_tail_matches_the_sum_of_its_terms():
    from math import comb
    n, p = 40, 0.05
    for k in (0, 1, 3, 10):
        exact = sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))
        assert status.binomial_tail(k, n, p) == pytest.approx(exact, abs=1e-12)


def test_decide_ok_unsure_with_a_shared_bin_and_unknown():
    thresholds = status.Thresholds(min_confidence=0.8, min_similarity=0.5)
    p = np.zeros(4)
    p[[0, 1, 2]] = 0.9, 0.06, 0.04
    assert status.decide(p, 0.7, thresholds) == ("ok", [0])
    p[[0, 1, 2]] = 0.5, 0.4, 0.1
    assert status.decide(p, 0.7, thresholds) == ("unsure", [0, 1])
    assert status.decide(p, 0.3, thresholds) == ("unknown", [])
    assert status.decide(p, None, thresholds)[0] == "unsure"  # no similarity: never unknown


@pytest.fixture(scope="module")
def photos(garbage26_data, tmp_path_factory):
    """A photo the fixture head is 99.8% sure of, one it is 98.6% sure of, and a grey square."""
    folder = tmp_path_factory.mktemp("photos")
    grey = folder / "grey.png"
    Image.new("RGB", (300, 300), (128, 128, 128)).save(grey)
    return {"sure": sorted((garbage26_data / "test" / "Battery").glob("*.jpg"))[0],
            "less sure": sorted((garbage26_data / "test" / "Eggshell").glob("*.jpg"))[0], "grey": grey}


def test_api_statuses_and_overrides(calibrated_garbage26_model, photos):
    clf = Classifier.load(calibrated_garbage26_model)
    assert clf.calibration.fitted and clf.status_note is None
    sure, less_sure, grey = clf.predict([photos["sure"], photos["less sure"], photos["grey"]])
    assert (sure.status, less_sure.status, grey.status) == ("ok", "ok", "unknown")
    assert sure.bin.id == "hazardous" and sure.choices[0].en == "Battery" and sure.similarity > 0.5
    assert grey.bin is None and grey.choices == [] and grey.similarity < 0.5
    clf.set_thresholds(min_confidence=0.99)
    p = clf.predict(photos["less sure"])
    assert p.status == "unsure" and p.choices[0].en == "Eggshell" and len(p.choices) >= 2
    bins = {GARBAGE26.class_bins[c.index] for c in p.choices}
    assert (p.bin.id if p.bin else None) == (bins.pop() if len(bins) == 1 else None)
    assert clf.set_thresholds(min_similarity=-1).predict(photos["grey"]).status != "unknown"
    with pytest.raises(Exception, match="min_confidence must be between"):
        clf.set_thresholds(min_confidence=2)


def test_uncalibrated_onnx_model_is_unsure_below_half_and_never_unknown(photos):
    clf = Classifier.load(tiny_onnx())
    assert not clf.calibration.fitted and "no calibration" in clf.status_note
    p = clf.predict(photos["grey"])
    assert p.similarity is None and p.status == ("ok" if p.top[0].probability >= 0.5 else "unsure")


def test_cli_table_json_and_csv_show_the_status(calibrated_garbage26_model, photos, capsys):
    paths = [str(photos["sure"]), str(photos["less sure"]), str(photos["grey"])]
    args = ["predict", str(calibrated_garbage26_model), *paths, "--min-confidence", "0.99"]
    assert main(args + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["status"] for r in rows] == ["ok", "unsure", "unknown"]
    assert rows[0]["bin"]["id"] == "hazardous" and rows[2]["bin"] is None and rows[2]["similarity"] < 0.5
    assert main(args + ["--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["status"] for r in table] == ["ok", "unsure", "unknown"] and table[2]["bin"] == ""
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "  ok  " in lines[0] and "not sure: Eggshell" in lines[1] and "does not look like garbage" in lines[2]


def test_service_answers_the_status(calibrated_garbage26_model, photos):
    clf = Classifier.load(calibrated_garbage26_model)
    with TestClient(create_app(clf)) as client:
        answers = [client.post("/v1/classify", files={"file": (p.name, p.read_bytes())}).json()
                   for p in (photos["sure"], photos["grey"])]
        model = client.get("/v1/model").json()
    assert [a["status"] for a in answers] == ["ok", "unknown"]
    assert answers[0]["bin"]["id"] == "hazardous" and answers[1]["bin"] is None and answers[1]["choices"] == []
    assert model["calibration"]["fitted"] and model["calibration"]["min_similarity"] == 0.5


def test_the_onnx_export_carries_the_unknown_score(calibrated_garbage26_model, photos, tmp_path):
    import onnx

    from binwise.export import export_onnx

    exported = export_onnx(calibrated_garbage26_model, tmp_path / "scored.onnx")
    assert [o.name for o in onnx.load(str(exported)).graph.output] == ["logits", "similarity"]
    sources = [photos["sure"], photos["less sure"], photos["grey"]]
    in_torch = Classifier.load(calibrated_garbage26_model).predict(sources)
    in_onnx = Classifier.load(exported).predict(sources)
    assert Classifier.load(exported).status_note is None
    assert [p.status for p in in_onnx] == [p.status for p in in_torch] == ["ok", "ok", "unknown"]
    assert [p.similarity for p in in_onnx] == pytest.approx([p.similarity for p in in_torch], abs=1e-5)


def test_uncalibrated_probabilities_undo_the_temperature(calibrated_garbage26_model, photos):
    clf = Classifier.load(calibrated_garbage26_model)
    clf.calibration = dataclasses.replace(clf.calibration, temperature=2.5)
    pixels = np.stack([clf.load_image(p) for p in photos.values()])
    logits, _ = clf.runner(pixels)
    calibrated = clf.predict_arrays(pixels)
    assert np.allclose(clf.uncalibrated(calibrated), status.softmax(logits), atol=1e-5)
    assert not np.allclose(calibrated, status.softmax(logits), atol=1e-3)


def test_a_sure_class_in_a_costly_bin_to_be_wrong_in_becomes_unsure():
    from binwise.model.status import BinCosts, Thresholds, choose_max_cost, decide_rows
    from binwise.taxonomy.classes import GARBAGE26
    from binwise.taxonomy.costs import HAZARDOUS_ELSEWHERE

    costs = BinCosts.of(GARBAGE26)
    # 95% Seashell (dry) and 5% Battery (hazardous): answering "dry" is expected to cost 0.05 x 10
    risky = np.full(26, 0.0)
    risky[0], risky[22] = 0.95, 0.05
    safe = np.full(26, 0.0)
    safe[0], safe[1] = 0.95, 0.05  # the rest is Lighter, dry as well: nothing to lose
    rows = np.stack([risky, safe])
    assert costs.expected(rows) == pytest.approx([0.05 * HAZARDOUS_ELSEWHERE, 0.0])
    assert list(decide_rows(rows, None, Thresholds(0.9))[0]) == ["ok", "ok"]
    out, choices = decide_rows(rows, None, Thresholds(0.9, max_cost=0.1), costs)
    assert list(out) == ["unsure", "ok"] and choices[0] == [0, 22]
    # fitting: answers whose expected cost is above 0.2 were the ones that cost
    expected = np.array([0.0, 0.01, 0.1, 0.2, 0.9, 1.5])
    realized = np.array([0.0, 0.0, 0.0, 0.0, 10.0, 10.0])
    assert choose_max_cost(expected, realized, target=0.03) == 0.2
    assert choose_max_cost(expected[:4], realized[:4], target=0.03) == 0.2  # all fit: the largest checked
    assert choose_max_cost(np.array([0.5]), np.array([10.0]), target=0.03) == 0.03  # never below the target
