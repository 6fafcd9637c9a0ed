"""Shared, session-scoped fixtures: real models, built once and cached.

Built models are kept in pytest's cache folder (``.pytest_cache``), named by a hash of everything
they are built from, so a rerun reuses them and any change to the inputs or to this recipe
rebuilds them.
"""

from __future__ import annotations

import hashlib
import inspect

import numpy as np
import pytest

from binwise.errors import BinwiseError

# Photos per class used to fit the quick garbage26 head: enough for a model that is right on
# most test photos (about 70% of classes, 80% of bins), few enough to build in seconds.
QUICK_HEAD_PHOTOS_PER_CLASS = 10


@pytest.fixture(scope="session")
def garbage26_data():
    """The garbage26 photo folder (``train/``, ``test/``), found via binwise.paths."""
    from binwise.paths import resolve_data

    try:
        return resolve_data()
    except BinwiseError as e:
        pytest.skip(f"garbage26 photos not available: {e}")


@pytest.fixture(scope="session")
def pretrained_weights():
    """The real ImageNet weights (the TFLite file), found via binwise.paths."""
    from binwise.paths import resolve_pretrained

    try:
        return resolve_pretrained()
    except BinwiseError as e:
        pytest.skip(f"pretrained weights not available: {e}")


@pytest.fixture(scope="session")
def garbage26_model(request, garbage26_data, pretrained_weights):
    """A real garbage26 model file: the TFLite ImageNet MobileNetV2 backbone with a linear head
    fitted on the pooled features of the first few train photos of each class."""
    from binwise.fileio import sha256_of_file
    from binwise.taxonomy.classes import GARBAGE26

    pretrained = pretrained_weights
    photos, labels = [], []
    for index, name in enumerate(GARBAGE26.classes_en):
        files = sorted((garbage26_data / "train" / name).glob("*.jpg"))[:QUICK_HEAD_PHOTOS_PER_CLASS]
        photos += files
        labels += [index] * len(files)
    recipe = hashlib.sha256()
    recipe.update(sha256_of_file(pretrained).encode())
    recipe.update(inspect.getsource(build_quick_garbage26_model).encode())
    for photo in photos:
        recipe.update(sha256_of_file(photo).encode())
    path = request.config.cache.mkdir("binwise-models") / f"garbage26-quick-{recipe.hexdigest()[:16]}.safetensors"
    if not path.exists():
        build_quick_garbage26_model(pretrained, photos, labels, path)
    return path


def build_quick_garbage26_model(pretrained, photos, labels, path) -> None:
    import torch

    from binwise.images import load_for_model
    from binwise.model.network import MobileNetV2
    from binwise.model.file import ModelFile, save_model
    from binwise.taxonomy.classes import GARBAGE26
    from binwise.weights.tflite import read_tflite

    imagenet = read_tflite(pretrained)
    model = MobileNetV2(**{**imagenet.model.config.to_dict(), "num_classes": GARBAGE26.num_classes})
    model.backbone.load_state_dict(imagenet.model.backbone.state_dict())
    model.eval()
    pixels = torch.from_numpy(np.stack([load_for_model(p, imagenet.preprocessing) for p in photos]))
    with torch.no_grad():
        features = torch.cat([model.backbone(chunk).mean((2, 3)) for chunk in pixels.split(32)])
    targets = torch.tensor(labels)

    # multinomial logistic regression on the pooled features, full batch
    head = model.head.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def loss():
        optimizer.zero_grad()
        value = torch.nn.functional.cross_entropy(head(features), targets) + 1e-3 * head.weight.square().sum()
        value.backward()
        return value

    optimizer.step(loss)
    save_model(path, ModelFile(model, GARBAGE26, imagenet.preprocessing, provenance={
        "source": f"test fixture: {pretrained.name} backbone, linear head fitted on {len(photos)} "
                  f"garbage26 train photos"}))


# the calibration the calibrated fixture model gets: garbage photos score ok when the quick head is
# sure of them, and a photo unlike the reference photos (a grey square, a cat) scores unknown
FIXTURE_CALIBRATION = {"temperature": 1.0, "min_confidence": 0.5, "min_similarity": 0.5,
                       "target_accuracy": 0.99, "unknown_rate": 0.02, "method": "fixed, for tests"}


@pytest.fixture(scope="session")
def calibrated_garbage26_model(request, garbage26_model, garbage26_data):
    """``garbage26_model`` with ``FIXTURE_CALIBRATION`` and reference features (the unknown score)
    of the same train photos its head was fitted on."""
    import torch

    from binwise.images import load_for_model
    from binwise.model.file import load_model, save_model
    from binwise.taxonomy.classes import GARBAGE26

    path = request.config.cache.mkdir("binwise-models") / f"calibrated-{garbage26_model.name}"
    if path.exists():
        return path
    model_file = load_model(garbage26_model)
    photos = [p for name in GARBAGE26.classes_en
              for p in sorted((garbage26_data / "train" / name).glob("*.jpg"))[:QUICK_HEAD_PHOTOS_PER_CLASS]]
    pixels = torch.from_numpy(np.stack([load_for_model(p, model_file.preprocessing) for p in photos]))
    with torch.no_grad():
        model_file.reference_features = torch.cat([model_file.model.backbone(chunk).mean((2, 3))
                                                   for chunk in pixels.split(32)])
    model_file.calibration = dict(FIXTURE_CALIBRATION)
    save_model(path, model_file)
    return path
