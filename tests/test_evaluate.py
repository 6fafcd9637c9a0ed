import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from binwise.cli import main
from binwise.training.config import HEAD
from binwise.evaluation.evaluate import classification_report, evaluate
from binwise.training.schedules import ScheduleConfig
from binwise.taxonomy.classes import GARBAGE26, Taxonomy
from binwise.training.run import train
from binwise.training.run_spec import RunSpec

from test_data import make_tree
from test_train import pretrained  # noqa: F401  (fixture)


def test_report_on_known_predictions():
    taxonomy = Taxonomy.from_names(["a", "b", "c"])
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    # predictions: a a | a b | c b   -> 4 of 6 right
    logits = torch.tensor([[3., 1, 0], [3, 0, 1], [2, 1, 0], [0, 3, 1], [0, 1, 3], [0, 3, 2]])
    r = classification_report(logits, labels, taxonomy)
    assert r["count"] == 6 and r["top1"] == pytest.approx(4 / 6)
    assert r["top5"] == 1.0  # three classes: every label is in the top 3
    assert r["confusion"] == [[2, 0, 0], [1, 1, 0], [0, 1, 1]]
    a, b, c = r["per_class"]
    assert (a["precision"], a["recall"]) == pytest.approx((2 / 3, 1.0))
    assert (b["precision"], b["recall"]) == pytest.approx((0.5, 0.5))
    assert (c["precision"], c["recall"], c["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    assert "bin_accuracy" not in r


def test_bin_accuracy_counts_wrong_class_in_the_right_bin():
    # Seashell(0) -> Lighter(1): both dry, right bin; Newspaper(8) -> Battery(22): wrong bin
    labels = torch.tensor([0, 8, 18, 22])
    predicted = torch.tensor([1, 22, 18, 22])
    logits = torch.nn.functional.one_hot(predicted, 26).float()
    r = classification_report(logits, labels, GARBAGE26)
    assert r["top1"] == 0.5 and r["bin_accuracy"] == 0.75
    assert r["bins"] == ["dry", "recyclable", "wet", "hazardous"]
    assert r["bin_confusion"][1][3] == 1 and sum(map(sum, r["bin_confusion"])) == 4


def test_costs_weigh_a_hazardous_item_elsewhere_most_and_count_its_misses():
    import numpy as np

    from binwise.evaluation.evaluate import cost_report, hazardous_answered_wrong
    from binwise.model.status import Calibration, Thresholds
    from binwise.taxonomy.costs import HAZARDOUS_ELSEWHERE, RECYCLABLE_AS_RESIDUAL, bin_costs

    costs = bin_costs(GARBAGE26)  # dry, recyclable, wet, hazardous
    assert costs[3, 0] == costs[3, 2] == HAZARDOUS_ELSEWHERE and costs[1, 0] == RECYCLABLE_AS_RESIDUAL
    assert np.all(np.diag(costs) == 0) and costs[0, 3] < costs[3, 0]
    # Battery(22) -> Seashell(0): hazardous into dry; Newspaper(8) -> Seashell(0): recyclable into dry
    labels = np.array([22, 22, 8, 18])
    probabilities = np.full((4, 26), 0.001)
    for row, guess in enumerate([0, 22, 0, 18]):
        probabilities[row, guess] = 1 - 0.025
    r = classification_report(probabilities, labels, GARBAGE26)
    report = cost_report(np.asarray(r["bin_confusion"]), GARBAGE26)
    assert report["cost_per_photo"] == pytest.approx((HAZARDOUS_ELSEWHERE + RECYCLABLE_AS_RESIDUAL) / 4)
    assert (report["hazardous_items"], report["hazardous_missed"], report["hazardous_miss_rate"]) == (2, 1, 0.5)
    assert report["hazardous_miss_rate_ci95"][0] < 0.5 < report["hazardous_miss_rate_ci95"][1]
    sure = Calibration(thresholds=Thresholds(0.9))
    assert hazardous_answered_wrong(probabilities, labels, None, sure, GARBAGE26) == 1
    assert hazardous_answered_wrong(probabilities, labels, None, Calibration(thresholds=Thresholds(0.99)), GARBAGE26) == 0


def test_eval_command_on_a_trained_model(pretrained, tmp_path, capsys):  # noqa: F811
    data = make_tree(tmp_path / "data", per_class=6, test_per_class=3)
    (data / "test" / "red" / "broken.jpg").write_bytes(b"nope")
    config = replace(HEAD, epochs=3, batch_size=8, views=0, workers=0, engine="torch", val_fraction=0.0,
                     schedule=ScheduleConfig(lr_max=0.01))
    metrics = train(RunSpec(config, data, tmp_path / "run", pretrained, tmp_path / "cache"))
    assert metrics["unreadable_photos"] and "broken.jpg" in metrics["unreadable_photos"][0]
    out = tmp_path / "eval"
    assert main(["eval", str(tmp_path / "run" / "model.safetensors"), str(data), "--out", str(out),
                 "--workers", "0"]) == 0
    printed = capsys.readouterr()
    assert "top-1" in printed.out and "broken.jpg" in printed.err
    report = json.loads((out / "report.json").read_text())
    # the eval command sees the same photos through the same eval path as training's report
    assert report["count"] == 9 and report["top1"] == pytest.approx(metrics["test_top1"], abs=1e-6)
    assert len(report["misclassified"]) == round(9 * (1 - report["top1"]))
    assert len(report["unreadable"]) == 1
    for name in ("confusion.png", "misclassified.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"


def test_eval_relabels_to_the_model_class_order(pretrained, tmp_path):  # noqa: F811
    data = make_tree(tmp_path / "data", per_class=4, test_per_class=2)
    config = replace(HEAD, epochs=2, batch_size=8, views=0, workers=0, engine="torch", val_fraction=0.0)
    train(RunSpec(config, data, tmp_path / "run", pretrained, tmp_path / "cache"))
    # a one-folder dataset of red and blue photos: its own order is (blue, red), the model's (blue, green, red)
    other = tmp_path / "other"
    for name, count in (("red", 3), ("blue", 1)):
        (other / name).mkdir(parents=True)
        for photo in sorted((data / "train" / name).glob("*.jpg"))[:count]:
            (other / name / photo.name).write_bytes(photo.read_bytes())
    report = evaluate(tmp_path / "run" / "model.safetensors", other, workers=0, split="train")
    assert report["count"] == 4 and report["classes"] == ["blue", "green", "red"]
    assert [sum(row) for row in report["confusion"]] == [1, 0, 3]


def test_eval_of_the_onnx_export_gives_the_same_report(tmp_path):
    from inference_models import tiny_model, tiny_onnx

    from binwise.paths import resolve_data

    torch_report = evaluate(tiny_model(), resolve_data(), workers=2)
    onnx_report = evaluate(tiny_onnx(), resolve_data(), tmp_path / "eval", workers=2)
    assert onnx_report["count"] == torch_report["count"] == 130
    # fp32 in two runtimes: the same answers, up to a photo whose top two classes tie in float error
    assert abs(onnx_report["top1"] - torch_report["top1"]) <= 1 / 130
    differences = np.abs(np.array(onnx_report["confusion"]) - np.array(torch_report["confusion"]))
    assert differences.sum() <= 2
    same = {m["path"] for m in torch_report["misclassified"]} & {m["path"] for m in onnx_report["misclassified"]}
    assert len(same) >= len(torch_report["misclassified"]) - 1
    assert {p.name for p in (tmp_path / "eval").iterdir()} >= {"report.json", "confusion.png", "misclassified.png"}
