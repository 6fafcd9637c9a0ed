"""One model, several regions' bins: per request in the service, per run in predict."""

from __future__ import annotations

import json
import re
import urllib.request
from importlib import resources

import numpy as np
import pytest
from fastapi.testclient import TestClient

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.evaluation.evaluate import cost_report
from binwise.inference.classifier import Classifier
from binwise.model.file import load_model
from binwise.model.status import BinCosts, Thresholds, decide
from binwise.serving.app import create_app
from binwise.taxonomy.checks import Problems, check_taxonomy
from binwise.taxonomy.classes import GARBAGE26
from binwise.taxonomy.costs import HAZARDOUS_ELSEWHERE, RECYCLABLE_AS_RESIDUAL
from binwise.taxonomy.files import read_region


@pytest.fixture(scope="module")
def classifier(garbage26_model):
    return Classifier.load(garbage26_model)


@pytest.fixture(scope="module")
def glass_bottle(garbage26_data):
    return sorted((garbage26_data / "test" / "Glass Bottle").glob("*.jpg"))[0]


def test_each_request_gets_its_regions_bins(classifier, glass_bottle):
    data = glass_bottle.read_bytes()
    with TestClient(create_app(classifier, regions=("beijing", "germany"))) as client:
        listed = client.get("/v1/regions").json()
        assert listed["default"] == "garbage26"
        assert [r["name"] for r in listed["regions"]] == ["garbage26", "beijing", "germany"]
        assert all(r["source"] for r in listed["regions"])

        def answer(query: str) -> dict:
            response = client.post(f"/v1/classify{query}", files={"file": ("g.jpg", data, "image/jpeg")})
            assert response.status_code == 200, response.text
            return response.json()

        own, beijing, germany = answer(""), answer("?region=beijing"), answer("?region=germany")
        # the same classes and probabilities, each under its region's bin
        assert [(t["en"], t["probability"]) for t in own["top"]] == [(t["en"], t["probability"]) for t in germany["top"]]
        assert [t["bin"] for t in beijing["top"] if t["en"] == "Broom"] == ["other"]
        assert own["top"][0]["en"] == "Glass Bottle" and own["status"] == "ok"
        assert (own["bin"]["id"], germany["bin"]["id"]) == ("recyclable", "glass")
        assert beijing["region"]["name"] == "beijing" and own["region"]["name"] == "garbage26"
        unknown = client.post("/v1/classify?region=mars", files={"file": ("g.jpg", data, "image/jpeg")})
        assert unknown.status_code == 400 and unknown.json()["error"] == "unknown_region"
        assert "garbage26, beijing, germany" in unknown.json()["detail"]
        metrics = client.get("/metrics").text
        assert 'region="germany"' in metrics and 'region="beijing"' in metrics


def test_rules_that_miss_the_models_classes_are_refused_at_start(classifier, tmp_path):
    rules = tmp_path / "town.yaml"
    rules.write_text("name: town\nclasses:\n  - {en: Battery, bin: hazardous}\n", encoding="utf-8")
    with pytest.raises(BinwiseError, match="town.yaml: the rules give no bin for the model's classes"):
        create_app(classifier, regions=(str(rules),))
    with pytest.raises(BinwiseError, match="--default-region 'beijing' is none of"):
        create_app(classifier, default_region="beijing")


def test_a_region_file_names_its_version(classifier, tmp_path):
    germany = read_region("germany", classifier.taxonomy)
    rules = tmp_path / "mine.yaml"
    rules.write_text(json.dumps({"name": "mine", "version": "2027-01-01", "source": "town hall",
                                 "classes": [{"en": c, "bin": "any"} for c in classifier.taxonomy.classes_en]}),
                     encoding="utf-8")
    mine = read_region(rules, classifier.taxonomy)
    assert (mine.name, mine.version, mine.source) == ("mine", "2027-01-01", "town hall")
    assert set(mine.taxonomy.class_bins) == {"any"} and germany.taxonomy.classes_en == classifier.taxonomy.classes_en


def test_predict_answers_with_a_regions_bins(garbage26_model, glass_bottle, capsys):
    assert main(["predict", str(garbage26_model), str(glass_bottle), "--json", "--region", "germany"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["bin"]["id"] == "glass"


def test_a_real_server_answers_two_regions_in_one_process(garbage26_model, glass_bottle, tmp_path):
    from binwise.serving.process import serving

    bins = []
    with serving(garbage26_model, tmp_path / "serve.log", "--region", "germany") as (url, _):
        for query in ("", "?region=germany"):
            request = urllib.request.Request(f"{url}/v1/classify{query}", data=glass_bottle.read_bytes(),
                                             headers={"Content-Type": "image/jpeg"})
            with urllib.request.urlopen(request, timeout=60) as response:
                bins.append(json.loads(response.read())["bin"]["id"])
    assert bins == ["recyclable", "glass"]


COSTS = "costs:\n  hazardous: {other: 50}\n  recyclable: {other: 0}\n"  # Beijing's bins: other, recyclable, kitchen, hazardous
STATED = {"hazardous": {"other": 50.0}, "recyclable": {"other": 0.0}}


def beijing_with(tmp_path, costs: str):
    """The shipped Beijing rules under another name, with a ``costs`` section."""
    shipped = (resources.files("binwise.taxonomy.rules") / "beijing.yaml").read_text(encoding="utf-8")
    path = tmp_path / "beijing-costs.yaml"
    path.write_text(shipped.replace("name: beijing", "name: beijing-costs") + costs, encoding="utf-8")
    return path


def test_a_rule_files_costs_change_the_cost_report_and_the_expected_cost(tmp_path):
    plain, costly = (read_region(r, GARBAGE26).taxonomy for r in ("beijing", beijing_with(tmp_path, COSTS)))
    assert costly.costs == (("hazardous", "other", 50.0), ("recyclable", "other", 0.0))
    confusion = np.diag([0, 0, 2, 0])
    confusion[3, 0] = confusion[1, 0] = 1  # a battery and a newspaper in other waste
    before, after = cost_report(confusion, plain), cost_report(confusion, costly)
    assert before["cost_per_photo"] == pytest.approx((HAZARDOUS_ELSEWHERE + RECYCLABLE_AS_RESIDUAL) / 4)
    assert after["cost_per_photo"] == pytest.approx(50 / 4) and after["stated_costs"] == STATED
    assert after["costs"][3][2] == HAZARDOUS_ELSEWHERE  # a pair the file leaves out costs the default
    # a seashell answered other waste, 10% likely a battery: the battery's cost there decides its status
    row = np.zeros(26)
    row[GARBAGE26.classes_en.index("Seashell")], row[GARBAGE26.classes_en.index("Battery")] = 0.9, 0.1
    assert BinCosts.of(plain).expected(row) == pytest.approx([0.1 * HAZARDOUS_ELSEWHERE])
    assert BinCosts.of(costly).expected(row) == pytest.approx([0.1 * 50])
    thresholds = Thresholds(0.5, max_cost=2.0)
    assert (decide(row, None, thresholds, BinCosts.of(plain))[0],
            decide(row, None, thresholds, BinCosts.of(costly))[0]) == ("ok", "unsure")


@pytest.mark.parametrize("costs, words", [
    ("costs:\n  hazardous: {mars: 5}\n", "costs name bins the taxonomy does not define: ['mars'] (its bins: other"),
    ("costs:\n  hazardous: {other: -1}\n", "costs: hazardous into other must be a number, 0 or more, not -1"),
    ("costs:\n  hazardous: {other: lots}\n", "costs: hazardous into other must be a number, 0 or more, not 'lots'"),
    ("costs:\n  hazardous: {other: .nan}\n", "must be a number, 0 or more, not nan"),
    ("costs:\n  hazardous: {other: true}\n", "must be a number, 0 or more, not True"),
    ("costs:\n  kitchen: {kitchen: 2}\n", "kitchen into kitchen is the right bin, so its cost is 0, not 2"),
    ("costs: [10, 1]\n", "costs must map each true bin to {bin it went into: cost}"),
    ("costs:\n  hazardous: 10\n", "costs must map each true bin to {bin it went into: cost}"),
])
def test_bad_cost_sections_are_one_error_naming_the_file(tmp_path, costs, words):
    with pytest.raises(BinwiseError, match=re.escape(words)) as caught:
        read_region(beijing_with(tmp_path, costs), GARBAGE26)
    assert str(caught.value).startswith(str(tmp_path / "beijing-costs.yaml") + ": taxonomy file: ")
    assert "\n" not in str(caught.value)


def test_a_model_files_costs_are_checked_like_a_rule_files():
    taxonomy = {**GARBAGE26.to_dict(), "costs": {"hazardous": {"landfill": 5}}}
    with pytest.raises(BinwiseError, match=re.escape("m.safetensors: invalid model metadata: costs name bins")):
        check_taxonomy(taxonomy, Problems("m.safetensors"))


def test_rebin_serve_and_eval_use_a_rule_files_costs(classifier, garbage26_model, garbage26_data, tmp_path, capsys):
    rules = beijing_with(tmp_path, COSTS)
    rebinned = tmp_path / "beijing-costs.safetensors"
    assert main(["rebin", str(garbage26_model), "--taxonomy", str(rules), "--out", str(rebinned)]) == 0
    assert load_model(rebinned).taxonomy.costs == (("hazardous", "other", 50.0), ("recyclable", "other", 0.0))
    with TestClient(create_app(classifier, regions=(str(rules),))) as client:
        listed = {r["name"]: r["costs"] for r in client.get("/v1/regions").json()["regions"]}
    assert listed == {"garbage26": {}, "beijing-costs": STATED}
    data = tmp_path / "data"
    for split in ("train", "test"):
        for name in ("Battery", "Newspaper", "Seashell"):
            (data / split / name).mkdir(parents=True)
            for photo in sorted((garbage26_data / "test" / name).glob("*.jpg"))[:2]:
                (data / split / name / photo.name).symlink_to(photo)
    capsys.readouterr()
    assert main(["eval", str(garbage26_model), str(data), "--region", str(rules), "--out", str(tmp_path / "eval"),
                 "--workers", "1"]) == 0
    assert "per photo (binwise.taxonomy.costs; 2 stated by the beijing-costs rules)" in capsys.readouterr().out
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["region"] == "beijing-costs" and report["cost"]["stated_costs"] == STATED
    assert report["cost"]["costs"][3][0] == 50 and report["bins"] == ["other", "recyclable", "kitchen", "hazardous"]
