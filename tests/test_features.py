import pytest
import torch

from binwise.data.dataset import load_dataset
from binwise.training.feature_cache import backbone_fingerprint, extract_features, make_extractor
from binwise.model.network import MobileNetV2
from binwise.preprocessing import IMAGENET, MINUS_ONE_TO_ONE, Preprocessing

from test_data import make_tree

SMALL = Preprocessing(input_size=64, resize_size=72)  # a fully convolutional backbone takes any size


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return MobileNetV2(num_classes=3, width_mult=0.35, padding="tf_same").eval()


@pytest.fixture
def tree(tmp_path):
    return load_dataset(make_tree(tmp_path / "data", per_class=3, test_per_class=0))


def extract(model, samples, cache, **kw):
    kw.setdefault("engine", "torch")  # ONNX export has its own test
    return extract_features(model, SMALL, samples, cache_dir=cache, workers=0, **kw)


def test_features_are_cached_and_reused(tiny, tree, tmp_path):
    first = extract(tiny, tree.train, tmp_path / "cache", views=1)
    assert first.features.shape == (9, 2, 1280) and first.computed == 18 and first.reused == 0
    again = extract(tiny, tree.train, tmp_path / "cache", views=1)
    assert again.computed == 0 and again.reused == 18
    assert torch.equal(first.features, again.features) and torch.equal(first.labels, again.labels)
    # more views computes only the new ones
    more = extract(tiny, tree.train, tmp_path / "cache", views=2)
    assert more.computed == 9 and torch.equal(more.features[:, :2], first.features)
    # augmented views differ from the eval view but are the same in a fresh cache
    assert not torch.allclose(first.features[:, 0], first.features[:, 1])
    state = torch.random.get_rng_state()
    fresh = extract(tiny, tree.train, tmp_path / "other", views=1)
    torch.testing.assert_close(fresh.features, first.features, atol=1e-5, rtol=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # seeding the views left the caller's generator alone


def test_changed_photo_or_weights_miss_the_cache(tiny, tree, tmp_path):
    extract(tiny, tree.train, tmp_path / "cache")
    photo = tree.train[4].path
    photo.write_bytes(tree.train[0].path.read_bytes())  # new content for one file
    after = extract(tiny, tree.train, tmp_path / "cache")
    assert after.computed == 0  # its new content is already cached under train[0]'s digest
    torch.testing.assert_close(after.features[4], after.features[0])
    other = MobileNetV2(num_classes=3, width_mult=0.35, padding="tf_same").eval()
    assert backbone_fingerprint(other, IMAGENET) != backbone_fingerprint(tiny, IMAGENET)
    assert backbone_fingerprint(tiny, MINUS_ONE_TO_ONE) != backbone_fingerprint(tiny, IMAGENET)
    assert backbone_fingerprint(tiny, SMALL) != backbone_fingerprint(tiny, IMAGENET)
    assert extract(other, tree.train, tmp_path / "cache").computed == 9


def test_onnx_backbone_matches_torch(tiny, tree, tmp_path):
    fingerprint = backbone_fingerprint(tiny, SMALL)
    onnx = make_extractor(tiny, SMALL, "onnx", tmp_path, fingerprint)
    eager = make_extractor(tiny, SMALL, "torch", tmp_path, fingerprint)
    x = torch.randn(3, 3, 64, 64)
    torch.testing.assert_close(onnx(x), eager(x), atol=1e-4, rtol=0)
    assert (tmp_path / "onnx" / f"{fingerprint}.onnx").is_file()
    with_onnx = extract(tiny, tree.train, tmp_path, engine="onnx")  # reuses the exported file
    with_torch = extract(tiny, tree.train, tmp_path / "b", engine="torch")
    torch.testing.assert_close(with_onnx.features, with_torch.features, atol=1e-4, rtol=0)


def test_unreadable_photos_are_left_out_and_named(tiny, tree, tmp_path):
    broken = tree.train[2].path
    broken.write_bytes(b"\xff\xd8\xff garbage")
    out = extract(tiny, tree.train, tmp_path / "cache")
    assert len(out.samples) == 8 and broken not in [s.path for s in out.samples]
    assert len(out.skipped) == 1 and str(broken) in out.skipped[0]
    assert out.features.shape[0] == out.labels.shape[0] == 8
