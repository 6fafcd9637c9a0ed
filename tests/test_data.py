import json

import numpy as np
import pytest
import torch
from PIL import Image

from binwise.cli import main
from binwise.data.dataset import check_dataset, load_dataset, stratified_split
from binwise.data.loader import PhotoDataset, collate, single_view
from binwise.training.augment import cpu_transform
from binwise.training.config import TUTORIAL_AUGMENT
from binwise.errors import BinwiseError
from binwise.preprocessing import IMAGENET, MINUS_ONE_TO_ONE
from binwise.taxonomy.classes import GARBAGE26

COLOURS = {"blue": (20, 40, 220), "green": (30, 200, 40), "red": (220, 30, 30)}


def make_tree(root, per_class=6, test_per_class=2, colours=COLOURS, size=(64, 48), seed=0):
    """A tiny ImageFolder dataset of noisy single-colour photos, one colour per class."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("test", test_per_class)):
        for name, colour in colours.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = np.clip(np.array(colour) + rng.normal(0, 25, (size[1], size[0], 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}_{i}.jpg", quality=90)
    return root


def test_folder_names_sorted_and_test_split(tmp_path):
    make_tree(tmp_path, per_class=4, test_per_class=2)
    ds = load_dataset(tmp_path)
    assert ds.taxonomy.classes_en == ("blue", "green", "red")
    assert ds.taxonomy.class_bins == ()
    assert len(ds.train) == 12 and len(ds.test) == 6
    assert all(s.path.parent.name == ds.taxonomy.classes_en[s.label] for s in ds.train + ds.test)


def test_garbage26_folders_get_the_tutorial_order(tmp_path):
    for name in sorted(GARBAGE26.classes_en):
        (tmp_path / "train" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "train" / name / "a.png")
    ds = load_dataset(tmp_path)
    assert ds.taxonomy is GARBAGE26
    assert [s.path.parent.name for s in ds.train] == sorted(GARBAGE26.classes_en)
    assert all(GARBAGE26.classes_en[s.label] == s.path.parent.name for s in ds.train)


def test_real_garbage26_layout(garbage26_data):
    ds = load_dataset(garbage26_data)
    assert ds.taxonomy is GARBAGE26
    assert (len(ds.train), len(ds.test)) == (2204, 130)
    assert ds.class_counts(ds.test) == [5] * 26


def test_single_folder_layout_has_no_test_split(tmp_path):
    make_tree(tmp_path, per_class=3, test_per_class=0)
    ds = load_dataset(tmp_path / "train")
    assert len(ds.train) == 9 and ds.test == []


def test_unknown_test_class_is_an_error(tmp_path):
    make_tree(tmp_path, per_class=2, test_per_class=1)
    (tmp_path / "test" / "purple").mkdir()
    with pytest.raises(BinwiseError, match="purple"):
        load_dataset(tmp_path)


def test_stratified_split_is_seeded_and_per_class(tmp_path):
    make_tree(tmp_path, per_class=10, test_per_class=0)
    samples = load_dataset(tmp_path).train
    rest, held = stratified_split(samples, 0.2, seed=3)
    assert sorted(map(str, [s.path for s in rest + held])) == sorted(str(s.path) for s in samples)
    assert [sum(s.label == c for s in held) for c in range(3)] == [2, 2, 2]
    assert stratified_split(samples, 0.2, seed=3) == (rest, held)
    assert stratified_split(samples, 0.2, seed=4)[1] != held


def test_train_transform_shape_and_normalisation():
    img = Image.new("RGB", (300, 200), (255, 255, 255))
    out = cpu_transform(MINUS_ONE_TO_ONE, TUTORIAL_AUGMENT)(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.float32
    # white stays white under jitter of a flat image except brightness, which only darkens it here
    assert out.max() <= 1.0 + 1e-6 and out.min() >= -1.0 - 1e-6
    other = cpu_transform(IMAGENET, TUTORIAL_AUGMENT)(Image.new("RGB", (300, 200), (0, 0, 0)))
    assert torch.allclose(other[0], torch.full((224, 224), -0.485 / 0.229), atol=1e-5)


def test_unreadable_photos_are_skipped_and_named(tmp_path):
    make_tree(tmp_path, per_class=2, test_per_class=0)
    broken = tmp_path / "train" / "red" / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    ds = load_dataset(tmp_path)
    items = [PhotoDataset(ds.train, single_view(cpu_transform(IMAGENET, TUTORIAL_AUGMENT)))[i] for i in range(len(ds.train))]
    batch = collate(items)
    assert batch.images.shape == (6, 3, 224, 224)
    assert len(batch.skipped) == 1 and str(broken) in batch.skipped[0]


def test_check_data_counts_duplicates_and_unreadable(tmp_path, capsys):
    make_tree(tmp_path, per_class=3, test_per_class=1)
    (tmp_path / "test" / "red" / "copy.jpg").write_bytes((tmp_path / "train" / "red" / "red_0.jpg").read_bytes())
    (tmp_path / "train" / "blue" / "copy.jpg").write_bytes((tmp_path / "train" / "blue" / "blue_1.jpg").read_bytes())
    (tmp_path / "train" / "green" / "empty.png").write_bytes(b"")
    report = check_dataset(tmp_path)
    assert report["splits"]["train"]["per_class"] == {"blue": 4, "green": 4, "red": 3}
    assert len(report["unreadable"]) == 1 and "empty.png" in report["unreadable"][0]
    assert len(report["duplicates_across_splits"]) == 1 and len(report["duplicates_within_split"]) == 1
    assert report["sizes"]["width"] == {"min": 64, "median": 64, "max": 64}
    assert main(["check-data", str(tmp_path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["test"]["photos"] == 4
