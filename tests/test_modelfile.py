import json
import subprocess
import sys

import pytest
import torch

from binwise import ModelFile, load_model, save_model
from binwise.errors import BinwiseError
from binwise.model.network import MobileNetV2
from binwise.preprocessing import MINUS_ONE_TO_ONE
from binwise.taxonomy.classes import GARBAGE26, Taxonomy


@pytest.fixture
def garbage_model_file():
    torch.manual_seed(0)
    model = MobileNetV2(num_classes=26, width_mult=0.35, padding="tf_same").eval()
    # non-default BN statistics, so a round trip that dropped them would show
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return ModelFile(model, GARBAGE26, MINUS_ONE_TO_ONE, provenance={"source": "test"}, metrics={"top1": 0.5})


def test_round_trip_keeps_outputs_labels_and_preprocessing(tmp_path, garbage_model_file):
    path = tmp_path / "m.safetensors"
    save_model(path, garbage_model_file)
    loaded = load_model(path)
    assert not loaded.model.training
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), garbage_model_file.model(x))
    assert loaded.taxonomy == GARBAGE26
    assert loaded.preprocessing == MINUS_ONE_TO_ONE
    assert loaded.model.config == garbage_model_file.model.config
    assert loaded.provenance == {"source": "test"} and loaded.metrics == {"top1": 0.5}
    assert loaded.taxonomy.bin_of(22).zh == "有害垃圾"
    assert loaded.taxonomy.classes_en[0] == "Seashell"


def test_no_bins_taxonomy_round_trips(tmp_path):
    tax = Taxonomy.from_names(["a", "b", "c"], name="abc")
    save_model(tmp_path / "m.safetensors", ModelFile(MobileNetV2(num_classes=3, width_mult=0.35), tax,
                                                     MINUS_ONE_TO_ONE))
    assert load_model(tmp_path / "m.safetensors").taxonomy == tax


def test_class_count_must_match(tmp_path):
    with pytest.raises(ValueError, match="26 classes"):
        save_model(tmp_path / "m.safetensors", ModelFile(MobileNetV2(num_classes=3, width_mult=0.35),
                                                         GARBAGE26, MINUS_ONE_TO_ONE))


@pytest.mark.parametrize("content, problem", [
    (b"", "not a binwise model file"),
    (b"\x00" * 3, "not a binwise model file"),
    (b"hello world, this is not a model", "not a binwise model file"),
    (b"\x80\x04\x95" + b"cos\nsystem\n(S'touch /tmp/pwned'\ntR." * 3, "not a binwise model file"),
])
def test_garbage_files_give_one_clear_error(tmp_path, content, problem):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(content)
    with pytest.raises(BinwiseError, match=problem) as e:
        load_model(path)
    assert str(path) in str(e.value)


def test_truncated_file_is_reported(tmp_path, garbage_model_file):
    path = tmp_path / "m.safetensors"
    save_model(path, garbage_model_file)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(BinwiseError, match="damaged") as e:
        load_model(path)
    assert str(path) in str(e.value)


def test_wrong_shapes_are_reported(tmp_path, garbage_model_file):
    path = tmp_path / "m.safetensors"
    save_model(path, garbage_model_file)
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open
    with safe_open(path, "pt") as f:
        meta = f.metadata()
    tensors = load_file(path)
    tensors["head.classifier.weight"] = torch.zeros(10, 7)
    del tensors["backbone.features.0.0.weight"]
    save_file(tensors, path, metadata=meta)
    with pytest.raises(BinwiseError, match="missing tensors .*wrong shape"):
        load_model(path)


def test_plain_safetensors_without_metadata(tmp_path):
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, tmp_path / "plain.safetensors")
    with pytest.raises(BinwiseError, match="without binwise metadata"):
        load_model(tmp_path / "plain.safetensors")


def test_missing_file(tmp_path):
    with pytest.raises(BinwiseError, match="no such model file"):
        load_model(tmp_path / "nope.safetensors")


def test_info_cli(tmp_path, garbage_model_file):
    path = tmp_path / "m.safetensors"
    save_model(path, garbage_model_file)
    out = subprocess.run([sys.executable, "-m", "binwise.cli", "info", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert "Battery 电池  -> hazardous 有害垃圾" in out
    assert "tf_same" in out and "mean [0.5, 0.5, 0.5]" in out
    meta = json.loads(subprocess.run([sys.executable, "-m", "binwise.cli", "info", "--json", str(path)],
                                     capture_output=True, text=True, check=True).stdout)
    assert meta["taxonomy"]["classes"][0] == {"en": "Seashell", "zh": "贝壳", "bin": "dry"}


def test_info_cli_on_bad_file_is_one_line(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"junk")
    r = subprocess.run([sys.executable, "-m", "binwise.cli", "info", str(path)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and str(path) in r.stderr and "Traceback" not in r.stderr


def test_files_are_written_with_the_users_umask(tmp_path):
    import os

    from binwise.fileio import atomic_write

    old = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", lambda tmp: open(tmp, "w").write("{}"))
        os.umask(0o077)
        atomic_write(tmp_path / "b.json", lambda tmp: open(tmp, "w").write("{}"))
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644  # readable by others, as other tools write
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600


def test_metadata_is_read_once_into_a_typed_object_that_writes_the_same_json(tmp_path, garbage_model_file):
    from binwise.model.file import read_metadata
    from binwise.model.metadata import ModelMeta

    garbage_model_file.calibration = {"temperature": 0.8, "min_confidence": 0.9, "min_similarity": 0.5}
    save_model(tmp_path / "m.safetensors", garbage_model_file)
    meta = read_metadata(tmp_path / "m.safetensors")
    assert isinstance(meta, ModelMeta) and meta.taxonomy == GARBAGE26
    assert meta.to_dict() == garbage_model_file.metadata()
    assert ModelMeta.parse(json.dumps(meta.to_dict()), "copy").to_dict() == meta.to_dict()
    assert meta.statuses().temperature == 0.8 and meta.statuses().thresholds.min_similarity == 0.5
    with pytest.raises(BinwiseError, match="copy: .*taxonomy"):
        ModelMeta.parse(json.dumps({**meta.to_dict(), "taxonomy": {"classes": []}}), "copy")
