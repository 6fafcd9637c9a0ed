"""``binwise import-weights``: every supported format to a model file, and one clear error line
(exit code 2, no traceback) for every broken or hostile file."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from binwise.cli import main
from binwise.model.file import ModelFile, load_model, save_model
from binwise.paths import resolve_pretrained
from binwise.preprocessing import IMAGENET
from binwise.taxonomy.classes import GARBAGE26
from binwise.weights.mindspore_ckpt import write_ckpt

from test_weights_mindspore import BROKEN as BROKEN_CKPT, broken_ckpt_bytes, random_model
from test_weights_torchvision import BROKEN as BROKEN_PTH, RunsCommand, hostile_files, torchvision_model


def import_weights_cli(capsys, *args):
    code = main(["import-weights", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A MindSpore .ckpt and a torchvision .pth of random weights, with their models."""
    directory = tmp_path_factory.mktemp("sources")
    ckpt_model = ModelFile(random_model(width_mult=0.35), GARBAGE26, IMAGENET)
    write_ckpt(directory / "garbage.ckpt", ckpt_model)
    pth_model = torchvision_model(num_classes=3, width_mult=0.35)
    torch.save(pth_model.state_dict(), directory / "three.pth")
    torch.save(torchvision_model(width_mult=0.35).state_dict(), directory / "imagenet.pth")
    return directory, ckpt_model.model, pth_model


def same_outputs(a, b) -> bool:
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_ckpt_to_model_file(capsys, tmp_path, sources):
    directory, model, _ = sources
    code, out, err = import_weights_cli(capsys, directory / "garbage.ckpt", "--out", tmp_path / "m.safetensors")
    assert code == 0 and err == ""
    assert out.count("\n") == 1 and "mindspore-ckpt" in out and "26 classes (garbage26)" in out
    loaded = load_model(tmp_path / "m.safetensors")
    assert same_outputs(loaded.model, model) and loaded.taxonomy == GARBAGE26


def test_pth_with_a_class_names_file(capsys, tmp_path, sources):
    directory, _, model = sources
    (tmp_path / "bins.txt").write_text("glass\n\npaper\nmetal\n", encoding="utf-8")
    code, out, _ = import_weights_cli(capsys, directory / "three.pth", "--out", tmp_path / "m.safetensors",
                                      "--classes", tmp_path / "bins.txt")
    assert code == 0 and "torchvision-pth" in out and "3 classes (bins)" in out
    loaded = load_model(tmp_path / "m.safetensors")
    assert loaded.taxonomy.classes_en == ("glass", "paper", "metal")
    assert same_outputs(loaded.model, model)


def test_tflite_to_model_file(capsys, tmp_path):
    code, out, _ = import_weights_cli(capsys, resolve_pretrained(), "--out", tmp_path / "m.safetensors")
    assert code == 0 and "(tflite)" in out and "1000 classes (imagenet)" in out and "padding tf_same" in out
    assert load_model(tmp_path / "m.safetensors").taxonomy.classes_en[0] == "tench"


def test_binwise_model_file_passes_through_with_new_class_names(capsys, tmp_path, sources):
    directory, model, _ = sources
    save_model(tmp_path / "in.safetensors", ModelFile(model, GARBAGE26, IMAGENET))
    (tmp_path / "names.txt").write_text("\n".join(f"class {i}" for i in range(26)), encoding="utf-8")
    code, out, _ = import_weights_cli(capsys, tmp_path / "in.safetensors", "--out", tmp_path / "out.safetensors",
                                      "--classes", tmp_path / "names.txt")
    assert code == 0 and "(binwise)" in out
    assert load_model(tmp_path / "out.safetensors").taxonomy.classes_en[25] == "class 25"


def expect_one_error_line(capsys, source, out, *words):
    code, stdout, err = import_weights_cli(capsys, source, "--out", out)
    assert code == 2 and stdout == ""
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith("binwise import-weights: error: ") and str(source) in err
    for word in words:
        assert word in err
    assert not out.exists()


@pytest.mark.parametrize("kind", list(BROKEN_CKPT))
def test_broken_ckpt(capsys, tmp_path, sources, kind):
    directory, model, _ = sources
    good = (directory / "garbage.ckpt").read_bytes()
    source = tmp_path / "broken.ckpt"
    source.write_bytes(broken_ckpt_bytes(kind, ModelFile(model, GARBAGE26, IMAGENET), good))
    expect_one_error_line(capsys, source, tmp_path / "m.safetensors")


@pytest.mark.parametrize("kind", list(BROKEN_PTH))
def test_broken_pth(capsys, tmp_path, sources, kind):
    good = sources[0] / "imagenet.pth"
    made = BROKEN_PTH[kind][0](good.read_bytes(), torch.load(good, weights_only=True))
    source = tmp_path / "broken.pth"
    if isinstance(made, bytes):
        source.write_bytes(made)
    else:
        torch.save(made, source)
    expect_one_error_line(capsys, source, tmp_path / "m.safetensors")


def test_pickle_payloads(capsys, tmp_path):
    marker = tmp_path / "payload-ran"
    for name in hostile_files(tmp_path, marker):
        expect_one_error_line(capsys, tmp_path / name, tmp_path / "m.safetensors", "refused")
    assert not marker.exists()


def test_broken_tflite(capsys, tmp_path):
    source = tmp_path / "broken.tflite"
    source.write_bytes(resolve_pretrained().read_bytes()[:50_000])
    expect_one_error_line(capsys, source, tmp_path / "m.safetensors")


@pytest.mark.parametrize("content, problem", [
    (b"", "empty file"),
    (b"just some text that is not weights\n", "unrecognised weights format"),
    (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}", "not a binwise model file"),
])
def test_unrecognised_files(capsys, tmp_path, content, problem):
    source = tmp_path / "weights.bin"
    source.write_bytes(content)
    expect_one_error_line(capsys, source, tmp_path / "m.safetensors", problem)


def test_missing_source_and_bad_classes(capsys, tmp_path, sources):
    expect_one_error_line(capsys, tmp_path / "nothing.ckpt", tmp_path / "m.safetensors", "no such weights file")
    directory, _, _ = sources
    code, _, err = import_weights_cli(capsys, directory / "three.pth", "--out", tmp_path / "m.safetensors",
                                      "--classes", "garbage26")
    assert code == 2 and "3 outputs but 26 class names were given" in err
    code, _, err = import_weights_cli(capsys, directory / "three.pth", "--out", tmp_path / "m.safetensors")
    assert code == 2 and "--classes FILE" in err
    code, _, err = import_weights_cli(capsys, directory / "three.pth", "--out", tmp_path / "m.safetensors",
                                      "--classes", tmp_path / "no-such-names.txt")
    assert code == 2 and "neither a preset (garbage26) nor a file" in err


def test_pickle_payload_through_the_real_command(tmp_path):
    """As a user runs it: a separate process, a .pth whose pickle would run a shell command."""
    marker = tmp_path / "payload-ran"
    torch.save({"features.0.0.weight": RunsCommand(f"touch {marker}")}, tmp_path / "evil.pth")
    result = subprocess.run([sys.executable, "-m", "binwise.cli", "import-weights", str(tmp_path / "evil.pth"),
                             "--out", str(tmp_path / "m.safetensors")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "refused: the file holds Python objects" in result.stderr
    assert not marker.exists() and not (tmp_path / "m.safetensors").exists()
