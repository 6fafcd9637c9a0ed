"""torchvision MobileNetV2 .pth import: the same logits as torchvision's own model (random weights:
no official weights can be downloaded here), and refusing hostile or broken files."""

import os
import pickle

import numpy as np
import pytest
import torch
import torchvision

from binwise.errors import BinwiseError
from binwise.images import load_for_model
from binwise.preprocessing import IMAGENET
from binwise.taxonomy.classes import Taxonomy
from binwise.weights import import_weights
from binwise.weights.torchvision_pth import read_torchvision
from model_checks import randomize_batchnorm, relative_l2

# Same float32 operations in the same order: measured exactly 0.
RELATIVE_L2_BOUND = 1e-5


def torchvision_model(seed=0, **kwargs):
    """torchvision's MobileNetV2 with random weights and batch-norm parameters far from defaults."""
    torch.manual_seed(seed)
    return randomize_batchnorm(torchvision.models.mobilenet_v2(**kwargs))


@pytest.fixture(scope="module")
def photos(garbage26_data):
    files = sorted((garbage26_data / "test").glob("*/*.jpg"))[::65][:2]
    return torch.from_numpy(np.stack([load_for_model(p, IMAGENET) for p in files]))



@pytest.fixture(scope="module")
def imagenet_pth(tmp_path_factory):
    model = torchvision_model()
    path = tmp_path_factory.mktemp("pth") / "mobilenet_v2.pth"
    torch.save(model.state_dict(), path)
    return path, model


def test_imagenet_state_dict_gives_torchvisions_logits(imagenet_pth, photos):
    path, reference = imagenet_pth
    imported = read_torchvision(path)
    with torch.no_grad():
        assert relative_l2(imported.model(photos), reference(photos)) <= RELATIVE_L2_BOUND
    assert imported.taxonomy.name == "imagenet" and imported.taxonomy.num_classes == 1000
    assert imported.preprocessing == IMAGENET
    assert imported.model.config.padding == "symmetric" and imported.model.config.dropout == 0.2
    assert not imported.model.training
    assert imported.provenance["imported_from"] == "torchvision-pth"


def test_wrapped_state_dict_of_another_width_and_class_count(tmp_path, photos):
    reference = torchvision_model(seed=1, num_classes=5, width_mult=0.5)
    # a training script's checkpoint: DataParallel names under "state_dict", with other entries
    wrapped = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}, "epoch": 7}
    torch.save(wrapped, tmp_path / "finetuned.pth")
    classes = Taxonomy.from_names(["glass", "paper", "metal", "plastic", "trash"])
    imported = read_torchvision(tmp_path / "finetuned.pth", classes)
    with torch.no_grad():
        assert relative_l2(imported.model(photos), reference(photos)) <= RELATIVE_L2_BOUND
    assert imported.model.config.width_mult == 0.5 and imported.taxonomy == classes
    with pytest.raises(BinwiseError, match="5 outputs; say what the classes are"):
        read_torchvision(tmp_path / "finetuned.pth")


def test_format_comes_from_content_not_suffix(imagenet_pth, tmp_path):
    path, _ = imagenet_pth
    renamed = tmp_path / "weights.ckpt"
    renamed.write_bytes(path.read_bytes())
    assert import_weights(renamed).provenance["imported_from"] == "torchvision-pth"


class RunsCommand:
    """Unpickling this calls os.system: what a hostile .pth does."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def hostile_files(directory, marker):
    state = torchvision_model().state_dict()
    payload = RunsCommand(f"touch {marker}")
    torch.save({**state, "features.0.0.weight": payload}, directory / "zip-payload.pth")
    (directory / "legacy-payload.pth").write_bytes(pickle.dumps({"state_dict": payload}, protocol=2))
    (directory / "plain-pickle-payload.pth").write_bytes(pickle.dumps(payload, protocol=5))
    return ["zip-payload.pth", "legacy-payload.pth", "plain-pickle-payload.pth"]


def test_pickle_payloads_are_refused_and_never_run(tmp_path):
    marker = tmp_path / "payload-ran"
    for name in hostile_files(tmp_path, marker):
        with pytest.raises(BinwiseError, match="refused: the file holds Python objects") as raised:
            import_weights(tmp_path / name)
        assert "\n" not in str(raised.value) and str(raised.value).startswith(str(tmp_path / name))
    assert not marker.exists()


BROKEN = {
    "empty": (lambda good, state: b"", "empty file"),
    "truncated": (lambda good, state: good[: len(good) // 2], "damaged or truncated"),
    "zip garbage": (lambda good, state: b"PK\x03\x04" + bytes(range(256)) * 4, "damaged or truncated"),
    "unknown name": (lambda good, state: {**state, "fc.weight": torch.zeros(3)}, "unknown parameter 'fc.weight'"),
    "extra layer": (lambda good, state: {**state, "features.0.se.weight": torch.zeros(3)},
                    r"1 unexpected tensors \(first: backbone.features.0.se.weight"),
    "missing": (lambda good, state: {k: v for k, v in state.items() if k != "features.4.conv.3.running_var"},
                r"1 missing tensors \(first: backbone.features.4.conv.3.running_var"),
    "wrong shape": (lambda good, state: {**state, "features.4.conv.1.0.weight": torch.zeros(144, 1, 5, 5)},
                    r"1 tensors of the wrong shape \(first: backbone.features.4.conv.1.0.weight"),
    "not a tensor": (lambda good, state: {**state, "features.0.0.weight": [1.0, 2.0]},
                     "'features.0.0.weight' is a list, not a tensor"),
    "integer tensor": (lambda good, state: {**state, "classifier.1.bias": torch.zeros(1000, dtype=torch.int64)},
                       "'classifier.1.bias' has type torch.int64"),
    "a list": (lambda good, state: [1, 2, 3], "expected a state dict of tensors, found list"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_files_get_one_clear_error(tmp_path, imagenet_pth, kind):
    path, model = imagenet_pth
    made = BROKEN[kind][0](path.read_bytes(), model.state_dict())
    broken = tmp_path / "broken.pth"
    if isinstance(made, bytes):
        broken.write_bytes(made)
    else:
        torch.save(made, broken)
    with pytest.raises(BinwiseError, match=BROKEN[kind][1]) as raised:
        read_torchvision(broken)
    assert "\n" not in str(raised.value) and str(raised.value).startswith(str(broken))
