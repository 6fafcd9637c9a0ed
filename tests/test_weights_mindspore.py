"""MindSpore .ckpt import and export: round trips and broken files here; the cross-check against
MindSpore itself (the tutorial's network run in .venv-mindspore, see tests/mindspore_reference/)
when that venv exists."""

import binascii
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from binwise.errors import BinwiseError
from binwise.images import load_for_model
from binwise.model.network import MobileNetV2
from binwise.model.file import ModelFile, load_model
from binwise.preprocessing import IMAGENET
from binwise.taxonomy.classes import GARBAGE26, Taxonomy
from binwise.weights import import_weights
from binwise.weights.mindspore_ckpt import (decode_checkpoint, encode_checkpoint, mindspore_names,
                                            read_ckpt, write_ckpt)
from inference_models import tiny_model
from model_checks import randomize_batchnorm, relative_l2

REPO = Path(__file__).resolve().parents[1]
MINDSPORE_PYTHON = REPO / ".venv-mindspore" / "bin" / "python"
REFERENCE = REPO / "tests" / "mindspore_reference"
# float32 in both frameworks; measured about 1e-7 (a different summation order, nothing more)
RELATIVE_L2_BOUND = 1e-4


def random_model(num_classes=26, width_mult=1.0, padding="symmetric", seed=0):
    """Random weights with batch-norm parameters far from their defaults, so a dropped or swapped
    BN tensor changes the outputs."""
    torch.manual_seed(seed)
    return randomize_batchnorm(MobileNetV2(num_classes=num_classes, width_mult=width_mult, padding=padding))



def logits(model, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(pixels)).numpy()


@pytest.fixture(scope="module")
def small_model_file():
    return ModelFile(random_model(width_mult=0.35), GARBAGE26, IMAGENET)


@pytest.fixture(scope="module")
def small_ckpt(tmp_path_factory, small_model_file):
    path = tmp_path_factory.mktemp("ckpt") / "small.ckpt"
    write_ckpt(path, small_model_file)
    return path


def test_write_then_read_keeps_every_tensor(small_ckpt, small_model_file):
    imported = read_ckpt(small_ckpt)
    original = small_model_file.model.state_dict()
    for name, tensor in imported.model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(tensor, original[name]), name
    assert imported.model.config.width_mult == 0.35
    assert imported.model.config.padding == "symmetric"
    assert imported.taxonomy == GARBAGE26 and imported.preprocessing == IMAGENET
    assert not imported.model.training
    assert imported.provenance["imported_from"] == "mindspore-ckpt"


def test_written_file_has_the_tutorial_names_and_nothing_else(small_ckpt, small_model_file):
    entries = decode_checkpoint(small_ckpt.read_bytes(), small_ckpt)
    assert set(entries) == set(mindspore_names(small_model_file.model).values())
    # the stem and last ConvBNReLU, a block without expansion, one with it, and the classifier
    for tag in ("features.0.features.0.weight", "features.0.features.1.gamma",
                "features.1.conv.0.features.0.weight", "features.1.conv.1.weight", "features.1.conv.2.beta",
                "features.2.conv.0.features.1.moving_mean", "features.2.conv.3.moving_variance",
                "features.18.features.1.moving_variance", "head.1.weight", "head.1.bias"):
        assert tag in entries, tag
    assert {kind for kind, _, _ in entries.values()} == {"Float32"}
    assert entries["head.1.weight"][1] == [26, 1280]


def test_write_refuses_tf_same_padding_unless_asked(tmp_path):
    model_file = ModelFile(random_model(width_mult=0.35, padding="tf_same"), GARBAGE26, IMAGENET)
    with pytest.raises(BinwiseError, match="pads symmetrically"):
        write_ckpt(tmp_path / "m.ckpt", model_file)
    assert not (tmp_path / "m.ckpt").exists()
    write_ckpt(tmp_path / "m.ckpt", model_file, allow_padding_change=True)
    assert read_ckpt(tmp_path / "m.ckpt").model.config.padding == "symmetric"


def test_write_accepts_a_model_file_path(tmp_path, small_model_file, small_ckpt):
    from binwise.model.file import save_model

    save_model(tmp_path / "m.safetensors", small_model_file)
    write_ckpt(tmp_path / "m.ckpt", tmp_path / "m.safetensors")
    assert (tmp_path / "m.ckpt").read_bytes() == small_ckpt.read_bytes()


def training_checkpoint(model_file) -> dict:
    """A checkpoint as another wrapping of the network saves it during training: backbone under
    "backbone.", the head as head.head.1, momentum slots for every parameter, loop scalars."""
    state = model_file.model.state_dict()
    tensors = {}
    for bw, ms in mindspore_names(model_file.model).items():
        name = "head." + ms if ms.startswith("head.") else "backbone." + ms
        tensors[name] = state[bw]
    tensors.update({f"moments.{name}": torch.zeros_like(t) for name, t in list(tensors.items())})
    tensors["learning_rate"] = torch.tensor(0.01)
    tensors["momentum"] = torch.tensor(0.9)
    tensors["global_step"] = torch.tensor([670], dtype=torch.int32)
    return tensors


def test_reads_training_checkpoints_with_prefixes_optimizer_state_slices_and_crc(tmp_path, small_model_file):
    # slices of 4 KiB split every larger tensor into several messages, as MindSpore does at 512 MB
    data = encode_checkpoint(training_checkpoint(small_model_file), slice_bytes=4096)
    path = tmp_path / "mobilenetV2-10_67.ckpt"
    path.write_bytes(data + b"crc_num" + binascii.crc32(data).to_bytes(10, "big"))
    imported = read_ckpt(path)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 96, 96)).astype(np.float32)
    assert np.array_equal(logits(imported.model, pixels), logits(small_model_file.model, pixels))


def test_class_names_from_the_class_count_or_the_caller(tmp_path):
    numbered = Taxonomy.from_names([str(i) for i in range(1000)])
    write_ckpt(tmp_path / "imagenet.ckpt", ModelFile(random_model(1000, 0.35), numbered, IMAGENET))
    assert read_ckpt(tmp_path / "imagenet.ckpt").taxonomy.name == "imagenet"

    three = Taxonomy.from_names(["glass", "paper", "metal"])
    model_file = ModelFile(random_model(3, 0.35), three, IMAGENET)
    write_ckpt(tmp_path / "three.ckpt", model_file)
    with pytest.raises(BinwiseError, match="3 outputs; say what the classes are"):
        read_ckpt(tmp_path / "three.ckpt")
    assert read_ckpt(tmp_path / "three.ckpt", three).taxonomy == three
    with pytest.raises(BinwiseError, match="3 outputs but 26 class names"):
        read_ckpt(tmp_path / "three.ckpt", GARBAGE26)


def edited_checkpoint(model_file, edit) -> bytes:
    state = model_file.model.state_dict()
    tensors = {ms: state[bw] for bw, ms in mindspore_names(model_file.model).items()}
    edit(tensors)
    return encode_checkpoint(tensors)


def _wrong_shape(t):
    t["features.3.conv.1.features.0.weight"] = torch.zeros(144, 1, 5, 5)


def _unknown_name(t):
    t["features.3.attention.weight"] = torch.zeros(3)


def _missing(t):
    del t["features.5.conv.3.moving_variance"]


def _integer_weight(t):
    t["features.0.features.0.weight"] = t["features.0.features.0.weight"].to(torch.int32)


def _no_head(t):
    del t["head.1.weight"], t["head.1.bias"]


# kind -> (what the maker edits: the good file's bytes or its tensors, maker, expected message)
BROKEN = {
    "empty": ("bytes", lambda good: b"", "empty file"),
    "garbage": ("bytes", lambda good: bytes(range(256)) * 8, "not a MindSpore checkpoint"),
    "protobuf-looking garbage": ("bytes", lambda good: b"\x0a\xff\xff\xff\x0f" + b"x" * 100,
                                 "not a MindSpore checkpoint"),
    "no tag": ("bytes", lambda good: b"\x0a\x02\x18\x01", r"required fields are missing \(first: value\[0\].tag"),
    "truncated": ("bytes", lambda good: good[: len(good) // 2], "not a MindSpore checkpoint, or a truncated one"),
    "bad crc": ("bytes", lambda good: good + b"crc_num" + (12345).to_bytes(10, "big"), "CRC32 does not match"),
    "wrong shape": ("tensors", _wrong_shape, r"wrong shape \(first: backbone.features.3.conv.1.0.weight"),
    "unknown name": ("tensors", _unknown_name, "unknown parameter 'features.3.attention.weight'"),
    "missing": ("tensors", _missing, "1 parameters .* missing .*features.5.conv.3.moving_variance"),
    "integer weight": ("tensors", _integer_weight, "has type 'Int32', expected floating point"),
    "no head": ("tensors", _no_head, "no classifier weight"),
}


def broken_ckpt_bytes(kind: str, model_file, good: bytes) -> bytes:
    edits, make, _ = BROKEN[kind]
    return make(good) if edits == "bytes" else edited_checkpoint(model_file, make)


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_checkpoints_get_one_clear_error(tmp_path, small_model_file, small_ckpt, kind):
    path = tmp_path / f"{kind.replace(' ', '-')}.ckpt"
    path.write_bytes(broken_ckpt_bytes(kind, small_model_file, small_ckpt.read_bytes()))
    with pytest.raises(BinwiseError, match=BROKEN[kind][2]) as raised:
        read_ckpt(path)
    assert str(raised.value).startswith(str(path)) and "\n" not in str(raised.value)


def test_size_mismatch_between_dims_and_content(tmp_path, small_model_file):
    from binwise.weights.mindspore_ckpt import _checkpoint_class

    message = _checkpoint_class()()
    value = message.value.add()
    value.tag = "features.0.features.0.weight"
    value.tensor.dims.extend([16, 3, 3, 3])
    value.tensor.tensor_type = "Float32"
    value.tensor.tensor_content = b"\0" * 100
    path = tmp_path / "short.ckpt"
    path.write_bytes(message.SerializeToString() + edited_checkpoint(
        small_model_file, lambda t: t.pop("features.0.features.0.weight")))
    with pytest.raises(BinwiseError, match="holds 100 bytes, but Float32 .16, 3, 3, 3. needs 1728"):
        read_ckpt(path)


# --- the cross-check against MindSpore -------------------------------------------------------------

@pytest.fixture(scope="module")
def mindspore_run(tmp_path_factory, garbage26_data, request):
    """One MindSpore process doing every job (its import and set-up cost more than the jobs).

    Jobs: (1) load a binwise export of random weights; (2) build and randomly initialise the
    tutorial's network and save it as a training checkpoint; (3) when the TFLite reader is there,
    load the export of a real garbage26 model (TFLite ImageNet backbone, TF 'SAME' padding, so
    MindSpore's pad_mode "same" network). Inputs are two garbage26 test photos.
    """
    if not MINDSPORE_PYTHON.exists():
        pytest.skip("MindSpore cross-check needs .venv-mindspore: run `bash scripts/setup-mindspore.sh`")
    work = tmp_path_factory.mktemp("mindspore")
    photos = sorted((garbage26_data / "test").glob("*/*.jpg"))[::65][:2]
    pixels = np.stack([load_for_model(p, IMAGENET) for p in photos])
    np.save(work / "input.npy", pixels)
    exported = ModelFile(random_model(seed=1), GARBAGE26, IMAGENET)
    write_ckpt(work / "binwise.ckpt", exported)
    jobs = [{"action": "load", "ckpt": str(work / "binwise.ckpt"), "input": str(work / "input.npy"),
             "logits": str(work / "binwise_in_mindspore.npy"), "num_classes": 26},
            {"action": "save", "ckpt": str(work / "mindspore.ckpt"), "input": str(work / "input.npy"),
             "logits": str(work / "mindspore.npy"), "num_classes": 26, "seed": 2}]
    run = {"pixels": pixels, "exported": exported, "work": work}
    try:
        real = load_model(request.getfixturevalue("garbage26_model"))
    except pytest.skip.Exception:
        real = None
    if real is not None:
        real_pixels = np.stack([load_for_model(p, real.preprocessing) for p in photos])
        np.save(work / "real_input.npy", real_pixels)
        write_ckpt(work / "real.ckpt", real, allow_padding_change=True)
        jobs.append({"action": "load", "ckpt": str(work / "real.ckpt"), "input": str(work / "real_input.npy"),
                     "logits": str(work / "real_in_mindspore.npy"), "num_classes": 26, "pad_mode": "same"})
        run.update(real=real, real_pixels=real_pixels)
    (work / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run([str(MINDSPORE_PYTHON), "crosscheck.py", str(work / "jobs.json")], cwd=REFERENCE,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return run


def test_mindspore_computes_binwise_logits_from_an_exported_ckpt(mindspore_run):
    work = mindspore_run["work"]
    expected = logits(mindspore_run["exported"].model, mindspore_run["pixels"])
    error = relative_l2(np.load(work / "binwise_in_mindspore.npy"), expected)
    print(f"binwise -> .ckpt -> MindSpore: relative L2 {error:.2e}")
    assert error <= RELATIVE_L2_BOUND


def test_binwise_computes_mindspore_logits_from_its_saved_ckpt(mindspore_run):
    work = mindspore_run["work"]
    imported = import_weights(work / "mindspore.ckpt")
    assert imported.taxonomy == GARBAGE26
    error = relative_l2(logits(imported.model, mindspore_run["pixels"]), np.load(work / "mindspore.npy"))
    print(f"MindSpore save_checkpoint -> binwise: relative L2 {error:.2e}")
    assert error <= RELATIVE_L2_BOUND


def test_real_garbage26_model_exports_to_mindspore(mindspore_run):
    if "real" not in mindspore_run:
        pytest.skip("the garbage26 model fixture (TFLite weights) is not available")
    expected = logits(mindspore_run["real"].model, mindspore_run["real_pixels"])
    error = relative_l2(np.load(mindspore_run["work"] / "real_in_mindspore.npy"), expected)
    print(f"real garbage26 model -> .ckpt -> MindSpore (pad_mode same): relative L2 {error:.2e}")
    assert error <= RELATIVE_L2_BOUND
    assert (np.load(mindspore_run["work"] / "real_in_mindspore.npy").argmax(1) == expected.argmax(1)).all()


def test_binwise_export_mindir_runs_in_mindspore_with_binwise_logits_and_labels(tmp_path, garbage26_data):
    if not MINDSPORE_PYTHON.exists():
        pytest.skip("the MINDIR export needs .venv-mindspore: run `bash scripts/setup-mindspore.sh`")
    from binwise.cli import main
    from binwise.model.file import save_model

    photos = sorted((garbage26_data / "test").glob("*/*.jpg"))[::65][:2]
    symmetric = tmp_path / "symmetric.safetensors"
    save_model(symmetric, ModelFile(random_model(width_mult=0.35, seed=3), GARBAGE26, IMAGENET))
    jobs, expected = [], {}
    for name, model_path in (("symmetric", symmetric), ("tf_same", tiny_model())):
        assert main(["export", str(model_path), "--format", "mindir", "--out", str(tmp_path / f"{name}.mindir"),
                     "--mindspore-python", str(MINDSPORE_PYTHON)]) == 0
        model_file = load_model(model_path)
        pixels = np.stack([load_for_model(p, model_file.preprocessing) for p in photos])  # normalised NCHW
        np.save(tmp_path / f"{name}_input.npy", pixels)
        expected[name] = logits(model_file.model, pixels)
        jobs.append({"action": "mindir", "mindir": str(tmp_path / f"{name}.mindir"),
                     "input": str(tmp_path / f"{name}_input.npy"), "logits": str(tmp_path / f"{name}_logits.npy"),
                     "user_info": str(tmp_path / f"{name}_user_info.json")})
    (tmp_path / "jobs.json").write_text(json.dumps(jobs))
    result = subprocess.run([str(MINDSPORE_PYTHON), "crosscheck.py", str(tmp_path / "jobs.json")], cwd=REFERENCE,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in expected:
        error = relative_l2(np.load(tmp_path / f"{name}_logits.npy"), expected[name])
        print(f"binwise -> MINDIR ({name} padding) -> MindSpore: relative L2 {error:.2e}")
        assert error <= RELATIVE_L2_BOUND
        meta = json.loads(json.loads((tmp_path / f"{name}_user_info.json").read_text())["binwise"])
        assert meta["taxonomy"]["classes"][22] == {"en": "Battery", "zh": "电池", "bin": "hazardous"}
        assert meta["export"]["format"] == "mindir"


def test_mindir_export_without_mindspore_names_what_to_install(tmp_path, monkeypatch, capsys):
    from binwise.cli import main

    monkeypatch.setenv("BINWISE_MINDSPORE_PYTHON", str(tmp_path / "no-python"))
    assert main(["export", str(tiny_model()), "--format", "mindir", "--out", str(tmp_path / "x.mindir")]) == 2
    err = capsys.readouterr().err
    assert "no such Python for MindSpore (from $BINWISE_MINDSPORE_PYTHON)" in err and "Traceback" not in err
    assert not (tmp_path / "x.mindir").exists()


def test_a_checkpoint_too_large_for_a_memory_limit_is_one_line(tmp_path):
    """A 900 MB checkpoint (below the 1 GB size check) under a memory limit of the process."""
    import subprocess
    import sys

    from inference_models import tiny_model

    from binwise.weights.mindspore_ckpt import write_ckpt

    big = tmp_path / "big.ckpt"
    write_ckpt(big, tiny_model(), allow_padding_change=True)  # a real checkpoint's start ...
    with open(big, "r+b") as f:
        f.truncate(900 * 2**20)  # ... made 900 MB long, sparse: no disk used
    script = f"""
import resource, sys
from binwise.cli import main
import binwise.weights.mindspore_ckpt, torch  # what the command imports, before the limit
size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (size + 400 * 2**20, resource.RLIM_INFINITY))
sys.exit(main(["import-weights", {str(big)!r}, "--out", {str(tmp_path / "out.safetensors")!r}]))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr[-2000:]
    assert "out of memory" in done.stderr
