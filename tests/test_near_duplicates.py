"""Near-duplicate photos (burst shots, copies) never straddle a split, and check-data names them."""

import numpy as np
from PIL import Image

from binwise.cli import main
from binwise.data.dataset import load_dataset, stratified_split
from binwise.data.near_duplicates import MOST, group_ids, signatures
from binwise.training.config import TrainConfig
from binwise.training.splits import make_splits


def scene(rng) -> np.ndarray:
    """A 192x144 photo of a few coloured rectangles on a grey board: every scene looks different."""
    pixels = np.full((144, 192, 3), 128, np.float64)
    for _ in range(4):
        x, y = rng.integers(0, 120), rng.integers(0, 80)
        pixels[y:y + rng.integers(40, 90), x:x + rng.integers(40, 90)] = rng.integers(0, 256, 3)
    return pixels


def burst(pixels: np.ndarray, rng) -> Image.Image:
    """Another shot of the same scene: shifted by a pixel, a little sensor noise."""
    shifted = np.roll(pixels, (int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(0, 1))
    return Image.fromarray(np.clip(shifted + rng.normal(0, 3, shifted.shape), 0, 255).astype(np.uint8))


def make_bursts(root, classes=("can", "jar", "box"), scenes=12, shots=(1, 3), seed=0) -> dict:
    """A flat folder: per class ``scenes`` scenes, each photographed 1 to 3 times; returns the scene of
    every file."""
    rng = np.random.default_rng(seed)
    scene_of = {}
    for name in classes:
        (root / name).mkdir(parents=True)
        for k in range(scenes):
            pixels = scene(rng)
            for shot in range(int(rng.integers(shots[0], shots[1] + 1))):
                path = root / name / f"{name}{k:02d}_{shot}.jpg"
                burst(pixels, rng).save(path, quality=85)
                scene_of[path] = f"{name}{k}"
    return scene_of


def test_burst_shots_are_grouped_and_different_scenes_are_not(tmp_path):
    scene_of = make_bursts(tmp_path)
    paths = sorted(scene_of)
    ids = group_ids(paths)
    for a, ga in zip(paths, ids):
        for b, gb in zip(paths, ids):
            assert (ga == gb) == (scene_of[a] == scene_of[b]), (a.name, b.name)


def test_near_duplicates_never_straddle_a_split(tmp_path):
    scene_of = make_bursts(tmp_path, scenes=20)
    splits = make_splits(load_dataset(tmp_path), TrainConfig(val_fraction=0.15, test_fraction=0.2))
    side = {}
    for name, part in (("train", splits.train), ("val", splits.val), ("test", splits.test)):
        for sample in part:
            side.setdefault(scene_of[sample.path], set()).add(name)
    assert all(len(sides) == 1 for sides in side.values())
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(scene_of)
    for part, share in ((splits.test, 0.2), (splits.val, 0.15)):  # still near the asked shares, per class
        for label in range(3):
            n = sum(s.label == label for s in splits.train + splits.val + splits.test)
            assert abs(sum(s.label == label for s in part) - share * n) <= 3


def test_without_near_duplicates_the_split_is_the_plain_one(tmp_path):
    make_bursts(tmp_path, shots=(1, 1))
    samples = load_dataset(tmp_path).train
    groups = dict(zip((s.path for s in samples), group_ids([s.path for s in samples])))
    assert len(set(groups.values())) == len(samples)
    assert stratified_split(samples, 0.25, 3, groups) == stratified_split(samples, 0.25, 3)


def test_a_chain_larger_than_a_group_may_be_is_dissolved(tmp_path):
    rng = np.random.default_rng(0)
    pixels = scene(rng)
    paths = []
    for k in range(MOST + 5):  # one scene, shot again and again
        paths.append(tmp_path / f"{k}.jpg")
        burst(pixels, rng).save(paths[-1])
    assert group_ids(paths) == list(range(len(paths)))


def test_unreadable_photos_pair_with_nothing(tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not a photo")
    assert not signatures([tmp_path / "broken.jpg"]).any()


def test_check_data_lists_test_photos_with_a_look_alike_in_train(tmp_path, capsys):
    rng = np.random.default_rng(1)
    for name in ("can", "jar"):
        for split in ("train", "test"):
            (tmp_path / split / name).mkdir(parents=True)
        for k in range(3):
            burst(scene(rng), rng).save(tmp_path / "train" / name / f"{k}.jpg")
        burst(scene(rng), rng).save(tmp_path / "test" / name / "new.jpg")
    leaked = scene(rng)
    burst(leaked, rng).save(tmp_path / "train" / "can" / "shot1.jpg")
    burst(leaked, rng).save(tmp_path / "test" / "can" / "shot2.jpg")
    assert main(["check-data", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "near-duplicates across splits" in out and ": 1 pairs" in out
    assert "test/can/shot2.jpg" in out and "train/can/shot1.jpg" in out
