"""One model, several regions' bins: per request in the service, per run in predict."""

from __future__ import annotations

import json
import urllib.request

import pytest
from fastapi.testclient import TestClient

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.inference.classifier import Classifier
from binwise.serving.app import create_app
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
