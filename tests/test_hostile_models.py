"""Hostile and careless model files: every one is refused in one line naming the file, exit 2.

Each case is the small test model (``inference_models.tiny_model``) with one thing changed in its
safetensors header, its metadata or its tensors, written here (nothing is committed). ``info``
reads the metadata only; ``predict`` builds the model; ``serve`` must refuse to start.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from binwise.cli import main
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx


def split_safetensors(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + length]), data[8 + length:]


def join_safetensors(header: dict | bytes, body: bytes) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + body


def with_metadata(change) -> bytes:
    """The tiny model with ``change(meta)`` applied to its binwise metadata (or returning new text)."""
    header, body = split_safetensors(tiny_model().read_bytes())
    meta = json.loads(header["__metadata__"]["binwise"])
    result = change(meta)
    header["__metadata__"]["binwise"] = result if isinstance(result, str) else json.dumps(meta)
    return join_safetensors(header, body)


def set_path(path: str, value):
    """A change that sets meta[a][b]... = value for path 'a.b...'."""
    def change(meta):
        *parents, last = path.split(".")
        target = meta
        for key in parents:
            target = target[key]
        target[last] = value
    return change


def with_tensor_values(name_part: str, value: float) -> bytes:
    """The tiny model with every float32 of the first tensor whose name contains ``name_part`` set to ``value``."""
    header, body = split_safetensors(tiny_model().read_bytes())
    name = next(k for k in header if name_part in k)
    start, end = header[name]["data_offsets"]
    body = bytearray(body)
    body[start:end] = np.full((end - start) // 4, value, np.float32).tobytes()
    return join_safetensors(header, bytes(body))


def with_tensor_dtype(name_part: str, dtype) -> bytes:
    """The tiny model with the first tensor whose name contains ``name_part`` stored as ``dtype``."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save

    tensors = load_file(str(tiny_model()))
    name = next(k for k in tensors if name_part in k)
    tensors[name] = tensors[name].astype(dtype)
    with safe_open(str(tiny_model()), "np") as f:
        return save(tensors, metadata=f.metadata())


def with_reference(array: np.ndarray) -> bytes:
    """The tiny model with a ``novelty.reference`` tensor (the unknown score's training features) of these values."""
    header, body = split_safetensors(tiny_model().read_bytes())
    data = array.astype(np.float16).tobytes()
    header["novelty.reference"] = {"dtype": "F16", "shape": list(array.shape), "data_offsets": [len(body), len(body) + len(data)]}
    return join_safetensors(header, body + data)


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


METADATA_CASES = {
    "metadata-is-a-list": (lambda m: "[1, 2, 3]", "metadata is not a JSON object"),
    "metadata-nested-200k-deep": (lambda m: nested(200_000), "nested too deeply"),
    "metadata-not-json": (lambda m: "{not json", "unreadable binwise metadata"),
    "format-is-other": (set_path("format", "keras"), "format 'keras'"),
    "format-version-text": (set_path("format_version", "1"), "format_version '1' is not an integer"),
    "format-version-future": (set_path("format_version", 99), "newer than this binwise"),
    "no-architecture": (lambda m: m.pop("architecture"), "no 'architecture' object"),
    "architecture-is-a-list": (set_path("architecture", [1]), "no 'architecture' object"),
    "architecture-resnet": (set_path("architecture.name", "resnet50"), "unsupported architecture 'resnet50'"),
    "ten-names-for-26-outputs": (lambda m: m["taxonomy"].update(classes=m["taxonomy"]["classes"][:10]),
                                 "26 outputs but the taxonomy names 10 classes"),
    "num-classes-2-to-the-31": (set_path("architecture.num_classes", 2**31), "outputs but the taxonomy"),
    "num-classes-true": (set_path("architecture.num_classes", True), "outputs but the taxonomy"),
    "width-40": (set_path("architecture.width_mult", 40), "width_mult 40 is outside"),
    "width-negative": (set_path("architecture.width_mult", -1), "width_mult -1 is outside"),
    "width-text": (set_path("architecture.width_mult", "wide"), "width_mult 'wide' is outside"),
    "last-channel-huge": (set_path("architecture.last_channel", 10**9), "last_channel 1000000000 is not a channel count"),
    "residual-setting-huge": (set_path("architecture.inverted_residual_setting", [[6, 10**9, 1, 1]]),
                              "inverted_residual_setting must be rows"),
    "dropout-5": (set_path("architecture.dropout", 5), "dropout 5 is not in [0, 1)"),
    "padding-reflect": (set_path("architecture.padding", "reflect"), "padding must be one of"),
    "activation-relu": (set_path("architecture.activation", "relu"), "activation must be null"),
    "activation-softmax": (set_path("architecture.activation", "softmax"), "activation must be null"),
    "std-zero": (set_path("preprocessing.std", [0, 0, 0]), "std must be positive"),
    "std-negative": (set_path("preprocessing.std", [0.5, -0.5, 0.5]), "std must be positive"),
    "mean-nan": (set_path("preprocessing.mean", [math.nan, 0.5, 0.5]), "mean must be three finite numbers"),
    "mean-two-values": (set_path("preprocessing.mean", [0.5, 0.5]), "mean must be three finite numbers"),
    "resize-0": (set_path("preprocessing.resize_size", 0), "resize_size 0 is not an integer"),
    "input-size-text": (set_path("preprocessing.input_size", "224"), "input_size '224' is not an integer"),
    "input-size-40000": (set_path("preprocessing.input_size", 40000), "input_size 40000 is not an integer"),
    "interpolation-lanczos": (set_path("preprocessing.interpolation", "lanczos"), "interpolation must be one of"),
    "no-classes": (set_path("taxonomy.classes", []), "taxonomy.classes must be a list of 1 to"),
    "classes-a-dict": (set_path("taxonomy.classes", {"a": 1}), "taxonomy.classes must be a list of 1 to"),
    "class-name-a-number": (lambda m: m["taxonomy"]["classes"][3].update(en=7), "taxonomy class 3 needs an English name"),
    "class-name-10k-long": (lambda m: m["taxonomy"]["classes"][3].update(en="x" * 10_000),
                            "taxonomy class 3 needs an English name"),
    "class-in-undefined-bin": (lambda m: m["taxonomy"]["classes"][5].update(bin="moon"), "taxonomy class 5"),
    "bins-a-string": (set_path("taxonomy.bins", "dry,wet"), "taxonomy.bins must be a list of objects"),
    "bin-without-id": (lambda m: m["taxonomy"]["bins"][0].pop("id") and None, "needs an id and an English name"),
    "provenance-a-list": (set_path("provenance", [1, 2]), "'provenance' is not a JSON object"),
    "class-bin-a-list": (lambda m: m["taxonomy"]["classes"][5].update(bin=["dry"]), "taxonomy class 5"),
    "class-names-repeat": (lambda m: m["taxonomy"]["classes"][5].update(en=m["taxonomy"]["classes"][4]["en"]),
                           "class names repeat"),
    "calibration-a-list": (set_path("calibration", [1]), "'calibration' is not a JSON object"),
    "mix-without-unknown": (set_path("calibration", {"temperature": 1, "min_confidence": 0.5, "held_out_mix": {
        "statuses": {"ok": 5, "unsure": 1}, "top_classes": [0] * 26}}), "held_out_mix.statuses must count"),
    "mix-for-3-classes": (set_path("calibration", {"temperature": 1, "min_confidence": 0.5, "held_out_mix": {
        "statuses": {"ok": 5, "unsure": 1, "unknown": 0}, "top_classes": [1, 2, 3]}}),
        "held_out_mix.top_classes must count photos for each of the 26 classes"),
    "temperature-zero": (set_path("calibration", {"temperature": 0, "min_confidence": 0.5}),
                         "calibration temperature '0' is not a number"),
    "temperature-negative": (set_path("calibration", {"temperature": -1, "min_confidence": 0.5}),
                             "calibration temperature '-1' is not a number"),
    "min-confidence-nan": (set_path("calibration", {"temperature": 1, "min_confidence": math.nan}),
                           "min_confidence 'nan' is not a probability"),
    "min-similarity-2": (set_path("calibration", {"temperature": 1, "min_confidence": 0.5, "min_similarity": 2}),
                         "min_similarity '2' is not a cosine similarity"),
}

FILE_CASES = {
    "header-length-huge": (lambda: struct.pack("<Q", 2**40) + tiny_model().read_bytes()[8:], "bad header length"),
    "header-not-json": (lambda: join_safetensors(b"{\x00\x01 garbage", b""), "unreadable header"),
    "header-a-list": (lambda: join_safetensors(b"[1, 2]", b""), "header is not a JSON object"),
    "header-nested-deep": (lambda: join_safetensors(nested(100_000).encode(), b""), "nested too deeply"),
    "no-binwise-metadata": (lambda: join_safetensors({"__metadata__": {"other": "x"}}, b""), "without binwise metadata"),
    "metadata-not-text": (lambda: join_safetensors({"__metadata__": {"binwise": 5}}, b""), "without binwise metadata"),
    "truncated-tensors": (lambda: tiny_model().read_bytes()[:-1000], "model file is damaged"),
    "nan-weights": (lambda: with_tensor_values("head.classifier.weight", math.nan), "not finite"),
    "infinite-weights": (lambda: with_tensor_values("features.0.0.weight", math.inf), "not finite"),
    "int8-weights": (lambda: with_tensor_dtype("features.3.conv.0.0.weight", np.int8), "a type weights never have"),
    "bool-weights": (lambda: with_tensor_dtype("head.classifier.weight", np.bool_), "(first: head.classifier.weight bool"),
    "empty-file": (lambda: b"", "bad header length"),
    "reference-wrong-shape": (lambda: with_reference(np.ones((4, 7))), "novelty.reference has shape (4, 7)"),
    "reference-empty": (lambda: with_reference(np.ones((0, 1280))), "novelty.reference has shape (0, 1280)"),
    "reference-nan": (lambda: with_reference(np.full((3, 1280), np.nan)), "novelty.reference is not finite"),
}

CASES = {**{name: (lambda change=change: with_metadata(change), problem)
            for name, (change, problem) in METADATA_CASES.items()}, **FILE_CASES}


@pytest.fixture(scope="module")
def photo():
    return str(garbage26_test_photos(1)[0])


def refused_in_one_line(capsys, command: list[str], path, problem: str) -> None:
    assert main(command) == 2, command
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if not line.startswith("binwise predict: note:")]
    assert len(lines) == 1 and str(path) in lines[0] and problem in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("name", list(CASES))
def test_a_hostile_model_file_is_refused_in_one_line(name, tmp_path, capsys, photo):
    make, problem = CASES[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(make())
    loads_tensors = name in ("truncated-tensors", "nan-weights", "infinite-weights", "int8-weights", "bool-weights") \
        or name.startswith("reference-")
    if not loads_tensors:  # info reads only the metadata, so it sees metadata problems only
        refused_in_one_line(capsys, ["info", str(path)], path, problem)
    refused_in_one_line(capsys, ["predict", str(path), photo], path, problem)


@pytest.mark.parametrize("name", ["std-zero", "ten-names-for-26-outputs", "nan-weights"])
def test_serve_refuses_to_start_with_a_hostile_model(name, tmp_path, capsys):
    make, problem = CASES[name]
    path = tmp_path / f"{name}.safetensors"
    path.write_bytes(make())
    refused_in_one_line(capsys, ["serve", str(path), "--port", "1"], path, problem)


def test_an_onnx_export_with_hostile_metadata_is_refused(tmp_path, capsys, photo):
    import onnx

    for name, change, problem in (("std-zero", set_path("preprocessing.std", [0, 0, 0]), "std must be positive"),
                                  ("ten-names", lambda m: m["taxonomy"].update(classes=m["taxonomy"]["classes"][:10]),
                                   "26 outputs but the taxonomy names 10 classes"),
                                  ("input-160", set_path("preprocessing.input_size", 160),
                                   "input has shape ['batch', 224, 224, 3], not (batch, 160, 160, 3)")):
        model = onnx.load(str(tiny_onnx()))
        entry = next(p for p in model.metadata_props if p.key == "binwise")
        meta = json.loads(entry.value)
        change(meta)
        entry.value = json.dumps(meta)
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        refused_in_one_line(capsys, ["predict", str(path), photo], path, problem)
        refused_in_one_line(capsys, ["info", str(path)], path, problem)


def onnx_with_binwise_metadata(path, nodes, output_shape, extra_initializers=()):
    """A small ONNX graph taking uint8 pixels, carrying the tiny model's binwise metadata."""
    import onnx
    from onnx import TensorProto, helper

    meta = {p.key: p.value for p in onnx.load(str(tiny_onnx())).metadata_props}["binwise"]
    graph = helper.make_graph(
        nodes, "hostile", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["batch", 224, 224, 3])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, output_shape)], list(extra_initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="binwise", value=meta)
    onnx.save(model, str(path))
    return path


def test_onnx_graphs_binwise_does_not_export_are_refused_before_they_run(tmp_path, capsys, photo):
    from onnx import TensorProto, helper

    cast = helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT)
    mean = helper.make_node("ReduceMean", ["x"], ["logits"], axes=[1, 2], keepdims=0)
    loop_body = helper.make_graph([], "body", [], [])
    loop = helper.make_node("Loop", ["", ""], ["logits"], body=loop_body)  # a Loop could run for ever
    custom = helper.make_node("Evil", ["x"], ["logits"], domain="com.example")
    external = helper.make_tensor("w", TensorProto.FLOAT, [3], [0.0, 0.0, 0.0])
    external.data_location = TensorProto.EXTERNAL
    external.ClearField("float_data")
    external.external_data.add(key="location", value="/etc/passwd")
    cases = [
        ("loop", [cast, loop], ["batch", 26], "operators binwise does not export (Loop)"),
        ("custom-domain", [cast, custom], ["batch", 26], "com.example.Evil"),
        ("three-outputs", [cast, mean], ["batch", 3], "output has shape ['batch', 3], not (batch, 26)"),
        ("external-data", [cast, helper.make_node("Mul", ["x", "w"], ["y"]), mean], ["batch", 26],
         "weights in external files"),
    ]
    for name, nodes, shape, problem in cases:
        initializers = [external] if name == "external-data" else []
        path = onnx_with_binwise_metadata(tmp_path / f"{name}.onnx", nodes, shape, initializers)
        refused_in_one_line(capsys, ["predict", str(path), photo], path, problem)


def test_a_tflite_graph_that_does_not_fit_its_metadata_is_refused(tmp_path, capsys, photo):
    pytest.importorskip("ai_edge_litert")
    from binwise.export.tflite_file import with_metadata
    from binwise.model.file import read_metadata
    from binwise.paths import resolve_pretrained

    # ImageNet's 1001 outputs under the tiny model's 26 class names
    path = tmp_path / "imagenet-as-garbage.tflite"
    meta = {**read_metadata(tiny_model()).to_dict(), "export": {"format": "tflite", "precision": "int8", "source": "test"}}
    path.write_bytes(with_metadata(resolve_pretrained().read_bytes(), meta))
    refused_in_one_line(capsys, ["predict", str(path), photo], path, "to (batch, 26) as its metadata says")


def test_a_small_pth_that_unpacks_to_gigabytes_is_refused_before_loading(tmp_path, capsys):
    import zipfile

    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            block = bytes(1 << 20)
            for _ in range(600):  # 600 MB of zeros, about 0.6 MB deflated
                entry.write(block)
    assert path.stat().st_size < 5 << 20
    refused_in_one_line(capsys, ["import-weights", str(path), "--out", str(tmp_path / "m.safetensors")], path,
                        "unpacks to 600 MB")
