"""A user's own data: flat folders with honest splits, taxonomy files, rebinning, auto mode."""

import json
import re
from dataclasses import replace

import pytest

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.evaluation.evaluate import evaluate, wilson_interval
from binwise.model.file import load_model
from binwise.inference.classifier import Classifier
from binwise.training.schedules import ScheduleConfig
from binwise.taxonomy.classes import GARBAGE26
from binwise.taxonomy.files import read_taxonomy, rebinned, rule_names
from binwise.training.config import DEFAULT, HEAD
from binwise.training.run import train
from binwise.training.run_spec import RunSpec

from inference_models import tiny_model
from test_data import make_tree
from test_train import pretrained  # noqa: F401  (the tiny pretrained model fixture)

TAXONOMY = """
name: colours
bins:
  - {id: warm, en: warm colours, zh: 暖色, color: "#c62828"}
  - {id: cool, en: cool colours}
classes:
  - {en: red, zh: 红, bin: warm}
  - {en: green, bin: cool}
  - {en: blue, bin: cool}
"""


def quick(base=HEAD, **changes):
    return replace(base, epochs=6, batch_size=8, workers=0, engine="torch", schedule=ScheduleConfig(lr_max=0.05),
                   **changes).validate()


@pytest.fixture(scope="module")
def flat(tmp_path_factory):
    """A flat folder DIR/<class>/*.jpg of 20 photos per class."""
    return make_tree(tmp_path_factory.mktemp("flat"), per_class=20, test_per_class=0) / "train"


def test_wilson_interval():
    low, high = wilson_interval(95, 100)
    assert 0.88 < low < 0.89 and 0.977 < high < 0.979  # the textbook values for 95/100
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0


def test_flat_folder_gets_a_recorded_80_10_10_split_and_eval_scores_its_test_photos(pretrained, flat, tmp_path):  # noqa: F811
    metrics = train(RunSpec(quick(), flat, tmp_path / "run", pretrained, tmp_path / "cache"))
    assert metrics["photos"] == {"train": 48, "val": 6, "test": 6}
    assert metrics["test_split"] == "seeded from the folder"
    rows = json.loads((tmp_path / "run" / "splits.json").read_text())
    assert len(rows) == 60 and {r["split"] for r in rows} == {"train", "val", "test"}
    test_hashes = {r["sha256"] for r in rows if r["split"] == "test"}
    assert len(test_hashes) == 6 and not test_hashes & {r["sha256"] for r in rows if r["split"] != "test"}
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.provenance["splits"] == rows
    # eval on the same folder scores exactly the six photos the model never trained or validated on
    report = evaluate(tmp_path / "run" / "model.safetensors", flat, workers=0)
    assert report["count"] == 6 and report["excluded_as_seen"] == 54
    assert report["top1"] == pytest.approx(metrics["test_top1"], abs=1e-6)
    assert evaluate(tmp_path / "run" / "model.safetensors", flat, workers=0, split="all")["count"] == 60
    lo, hi = metrics["test_top1_ci95"]
    assert lo <= metrics["test_top1"] <= hi


def test_a_flat_folder_without_a_recorded_split_needs_split_all(pretrained, flat, tmp_path):  # noqa: F811
    with pytest.raises(BinwiseError, match="--split all"):
        evaluate(pretrained, flat, workers=0)


def test_taxonomy_file_gives_own_classes_their_bins(pretrained, tmp_path):  # noqa: F811
    data = make_tree(tmp_path / "data", per_class=8, test_per_class=3)
    (data / "taxonomy.yaml").write_text(TAXONOMY)  # picked up at the dataset's root
    metrics = train(RunSpec(quick(), data, tmp_path / "run", pretrained, tmp_path / "cache"))
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.taxonomy.classes_en == ("red", "green", "blue")  # the file's order
    assert model.taxonomy.bin_of(0).zh == "暖色" and model.taxonomy.bin_of(2).id == "cool"
    assert metrics["test_bin_accuracy"] >= metrics["test_top1"]
    answer = Classifier.load(tmp_path / "run" / "model.safetensors").predict(next((data / "test" / "red").iterdir()))
    assert answer.bin.id == model.taxonomy.bin_of(model.taxonomy.classes_en.index(answer.top[0].en)).id


def test_taxonomy_mismatch_is_one_error_naming_both_sides(pretrained, tmp_path):  # noqa: F811
    data = make_tree(tmp_path / "data", per_class=4, test_per_class=1)
    rules = tmp_path / "t.yaml"
    rules.write_text(TAXONOMY.replace("{en: blue, bin: cool}", "{en: purple, bin: cool}"))
    with pytest.raises(BinwiseError) as caught:
        train(RunSpec(quick(), data, tmp_path / "run", pretrained, tmp_path / "cache", taxonomy=rules))
    message = str(caught.value)
    assert "folders not in the taxonomy file: ['blue']" in message
    assert "classes in the taxonomy file with no folder: ['purple']" in message
    assert not (tmp_path / "run").exists()  # refused before the run directory is written


@pytest.mark.parametrize("suffix,text", [
    (".csv", "en,zh,bin\nred,红,warm\ngreen,,cool\nblue,,cool\n"),
    (".json", json.dumps({"classes": [{"en": "red", "bin": "warm"}, {"en": "green", "bin": "cool"},
                                      {"en": "blue", "bin": "cool"}]})),
    (".toml", '[[classes]]\nen = "red"\nbin = "warm"\n[[classes]]\nen = "green"\nbin = "cool"\n'
              '[[classes]]\nen = "blue"\nbin = "cool"\n'),
])
def test_taxonomy_formats(tmp_path, suffix, text):
    path = tmp_path / f"t{suffix}"
    path.write_text(text, encoding="utf-8")
    taxonomy, _ = read_taxonomy(path)
    assert taxonomy.classes_en == ("red", "green", "blue") and taxonomy.class_bins == ("warm", "cool", "cool")
    assert {b.id for b in taxonomy.bins} == {"warm", "cool"}


@pytest.mark.parametrize("text,words", [
    ("classes: []", "non-empty list"),
    ("classes:\n  - {en: a, bin: x}\n  - {en: a, bin: x}\n", "twice"),
    ("classes:\n  - {en: a, bin: x}\n  - {en: b}\n", "without a bin"),
    ("bins: [{id: x}]\nclasses:\n  - {en: a, bin: y}\n", "does not define"),
    ("classes: [unclosed", "not valid YAML"),
])
def test_bad_taxonomy_files_are_one_clear_error(tmp_path, text, words):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BinwiseError, match=words) as caught:
        read_taxonomy(path)
    assert "bad.yaml" in str(caught.value)


@pytest.mark.parametrize("name, data", [
    ("excel-bom.csv", "\ufeffen,zh,bin\nred,红,warm\ngreen,,cool\nblue,,cool\n".encode("utf-8")),
    ("excel-semicolons.csv", "en;zh;bin\r\nred;红;warm\r\ngreen;;cool\r\nblue;;cool\r\n".encode("utf-8")),
    ("excel-both.csv", "\ufeffen;bin\r\nred;warm\r\ngreen;cool\r\nblue;cool\r\n".encode("utf-8")),
])
def test_csv_files_saved_by_excel_are_read(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    taxonomy, _ = read_taxonomy(path)
    assert taxonomy.classes_en == ("red", "green", "blue") and taxonomy.class_bins == ("warm", "cool", "cool")


BILLION_LAUGHS = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
    f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(8)) \
    + "classes: *i\n"


@pytest.mark.parametrize("name, content, words", [
    ("empty.csv", b"", "taxonomy CSV is empty"),
    ("blank.csv", b"\n\n", "taxonomy CSV is empty"),
    ("tabs-wrong-header.csv", b"name,bin\nred,warm\n", "no 'en' column (its first line reads 'name,bin')"),
    ("row-without-name.csv", b"en,bin\nred,warm\n,cool\n", "line 3 has no English name"),
    ("repeated-bin-ids.yaml", b"bins: [{id: x}, {id: x}]\nclasses:\n  - {en: a, bin: x}\n", "bin ids repeat"),
    ("bomb.yaml", BILLION_LAUGHS.encode(), "anchors or aliases (line 1)"),
    ("huge.yaml", b"#" * 5_000_000, "at most 4 MB"),
    ("too-many.csv", b"en,bin\n" + b"".join(b"c%d,x\n" % i for i in range(100_001)), "at most 100,000 classes"),
    ("long-name.yaml", ("classes:\n  - {en: " + "x" * 300 + ", bin: a}\n").encode(), "taxonomy class 0 needs"),
])
def test_hostile_or_clumsy_taxonomy_files_are_refused_in_one_line_naming_the_file(tmp_path, capsys, name, content,
                                                                                   words):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BinwiseError, match=re.escape(words)) as caught:
        read_taxonomy(path)
    assert name in str(caught.value) and "\n" not in str(caught.value)
    assert main(["rebin", str(tiny_model()), "--taxonomy", str(path), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and words in err and not (tmp_path / "x.safetensors").exists()


def test_shipped_rules_cover_garbage26_and_differ_where_regions_do():
    assert set(rule_names()) >= {"shanghai", "beijing", "germany"}
    shanghai = rebinned(GARBAGE26, read_taxonomy("shanghai")[0], "shanghai")
    assert shanghai.class_bins == GARBAGE26.class_bins and shanghai.bins == GARBAGE26.bins
    beijing = rebinned(GARBAGE26, read_taxonomy("beijing")[0], "beijing")
    assert {b.zh for b in beijing.bins} == {"其他垃圾", "厨余垃圾", "可回收物", "有害垃圾"}
    germany, source = read_taxonomy("germany")
    assert source
    by_class = dict(zip(germany.classes_en, germany.class_bins))
    assert by_class["Glassware"] == "residual" and by_class["Glass Bottle"] == "glass"  # drinking glasses are not bottle glass


def test_rebin_changes_bins_not_class_probabilities(pretrained, tmp_path, capsys):  # noqa: F811
    data = make_tree(tmp_path / "data", per_class=8, test_per_class=2)
    train(RunSpec(quick(), data, tmp_path / "run", pretrained, tmp_path / "cache"))
    rules = tmp_path / "rules.yaml"
    rules.write_text(TAXONOMY)
    before, after = tmp_path / "run" / "model.safetensors", tmp_path / "rebinned.safetensors"
    assert main(["rebin", str(before), "--taxonomy", str(rules), "--out", str(after)]) == 0
    assert "3 classes in 2 bins" in capsys.readouterr().out
    old, new = load_model(before), load_model(after)
    assert new.taxonomy.classes_en == old.taxonomy.classes_en == ("blue", "green", "red")
    assert new.taxonomy.bin_of(2).id == "warm" and new.provenance["rebinned"][0]["rules"] == str(rules)
    photo = next((data / "test" / "red").iterdir())
    p_old, p_new = Classifier.load(before).predict(photo), Classifier.load(after).predict(photo)
    assert [(c.en, c.probability) for c in p_old.top] == [(c.en, c.probability) for c in p_new.top]
    assert p_new.bin.id == ("warm" if p_new.top[0].en == "red" else "cool") and p_old.bin is None
    assert main(["rebin", str(before), "--taxonomy", "germany", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "no bin for the model's classes" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["whole network on photos", "last blocks on cached activations"])
def test_auto_mode_says_what_it_chose_and_why(pretrained, flat, tmp_path, path):  # noqa: F811
    config = replace(DEFAULT, epochs=2, batch_size=8, workers=0, engine="torch", cached_views=1, trainable_blocks=2)
    if path.startswith("whole network"):
        config = replace(config, cached_views=0, trainable_blocks=None, augment=replace(DEFAULT.augment, crop_size=48))
    metrics = train(RunSpec(config.validate(), flat, tmp_path / "run", pretrained, tmp_path / "cache"))
    assert metrics["mode"] == "auto" and metrics["chosen"] in ("head", "finetune") and metrics["reason"]
    assert metrics["probe_val_acc"] is not None and metrics["finetune_val_acc"] is not None
    assert ("crop_size" in metrics["finetune_plan"]) == path.startswith("whole")
    model = load_model(tmp_path / "run" / "model.safetensors")
    assert model.provenance["chosen"] == metrics["chosen"] and model.provenance["reason"] == metrics["reason"]
    # with no time to spare, auto mode keeps the probe and says so
    tight = train(RunSpec(replace(config, time_budget=1.0), flat, tmp_path / "tight", pretrained, tmp_path / "cache"))
    assert tight["chosen"] == "head"
    assert "time budget" in tight["reason"] or "little left" in tight["reason"]


def test_layer_decay_gives_each_block_below_the_top_a_smaller_rate():
    from torch import nn

    from binwise.model.network import MobileNetV2
    from binwise.training.loop import parameter_groups

    model = MobileNetV2(num_classes=3, width_mult=0.35)
    suffix = nn.Sequential(model.backbone.features[16:], model.head)  # blocks 16, 17, 18 and the head
    groups = parameter_groups(suffix, 0.5)
    assert [g["lr_scale"] for g in groups] == [1.0, 0.5, 0.25, 0.125]
    assert groups[0]["params"] == list(model.head.parameters())
    assert sum(len(g["params"]) for g in groups) == len(list(suffix.parameters()))


def test_finetune_with_mixup_cutmix_and_layer_decay_on_cached_activations(pretrained, flat, tmp_path):  # noqa: F811
    from binwise.training.config import FINETUNE, AugmentConfig

    config = replace(FINETUNE, epochs=2, batch_size=8, workers=0, engine="torch", cached_views=1, layer_decay=0.7,
                     augment=AugmentConfig(scale_min=0.25, mixup=0.2, cutmix=1.0)).validate()
    metrics = train(RunSpec(config, flat, tmp_path / "run", pretrained, tmp_path / "cache"))
    rows = [r for r in __import__("csv").DictReader(open(tmp_path / "run" / "log.csv")) if r["phase"].startswith("finetune")]
    assert len(rows) == 2 and all(0 <= float(r["train_acc"]) <= 1 for r in rows)
    assert metrics["chosen"] == "finetune" and 0 <= metrics["test_top1"] <= 1


def test_auto_keeps_fine_tuning_when_it_fixes_more_than_it_breaks_unless_a_test_is_asked_for():
    from binwise.training.auto import keeps_finetune, mcnemar_one_sided
    from binwise.training.config import DEFAULT

    assert DEFAULT.finetune_significance == 1.0
    assert keeps_finetune(13, 8, DEFAULT.finetune_significance)  # trashnet fold 0: 4.7 points better held out
    assert not keeps_finetune(13, 8, 0.05)  # p = 0.19
    assert keeps_finetune(13, 2, 0.05)
    assert not keeps_finetune(5, 5, 1.0) and not keeps_finetune(1, 2, 1.0) and not keeps_finetune(0, 0, 1.0)
    assert mcnemar_one_sided(13, 8) == pytest.approx(0.1917, abs=1e-4)
