import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from inference_models import garbage26_test_photos, tiny_model, tiny_onnx, tiny_onnx_int8

from binwise.cli import main
from binwise.errors import BinwiseError
from binwise.export import export_onnx
from binwise.export.onnx_file import fold_pads_into_convs, pixels_as_quantized_input
from binwise.export.weight_grid import uint8_grid
from binwise.images import load_crop, normalize
from binwise.model.file import load_model, read_metadata
from binwise.inference.classifier import Classifier
from binwise.taxonomy.classes import GARBAGE26

REPO = Path(__file__).resolve().parents[1]


def onnx_logits(path, pixels: np.ndarray) -> np.ndarray:
    return Classifier.load(path).runner(pixels)


def test_onnx_logits_match_pytorch_at_any_batch_size():
    """The ONNX model takes uint8 crops and normalises them itself, as images.normalize does."""
    model_file = load_model(tiny_model())
    photos = garbage26_test_photos()[::13]
    pixels = np.stack([load_crop(p, model_file.preprocessing) for p in photos])
    noise = np.random.default_rng(0).integers(0, 256, size=(3, 224, 224, 3), dtype=np.uint8)
    for batch in (pixels[:1], pixels[:5], noise):
        with torch.inference_mode():
            expected = model_file.model(torch.from_numpy(normalize(batch, model_file.preprocessing))).numpy()
        got = onnx_logits(tiny_onnx(), batch)
        assert got.shape == expected.shape
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.ptp(expected) > 0.3  # logits that differ, so the comparison means something


def test_onnx_graph_takes_uint8_pixels_and_has_no_pad_nodes():
    graph = onnx.load(str(tiny_onnx())).graph
    pixels = graph.input[0].type.tensor_type
    assert pixels.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in pixels.shape.dim[1:]] == [224, 224, 3]
    ops = [node.op_type for node in graph.node]
    # the tiny model has TF 'SAME' padding: its stride-2 convs' Pads are folded into the Convs
    assert "Pad" not in ops
    padded = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert [0, 0, 1, 1] in padded


def test_fold_pads_into_convs_keeps_pads_it_cannot_fold():
    from onnx import helper, numpy_helper

    def graph(mode: str, value: float, pads: list[int]):
        return helper.make_graph(
            [helper.make_node("Pad", ["x", "pads", "value"], ["padded"], mode=mode),
             helper.make_node("Conv", ["padded", "w"], ["y"], pads=[1, 1, 1, 1])],
            "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 1, 8, 8])],
            [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
            [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
             numpy_helper.from_array(np.array(value, np.float32), "value"),
             numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")])

    foldable = graph("constant", 0.0, [0, 0, 0, 0, 0, 0, 1, 2])
    assert fold_pads_into_convs(foldable) == 1
    assert [n.op_type for n in foldable.node] == ["Conv"] and foldable.node[0].input[0] == "x"
    assert list(foldable.node[0].attribute[-1].ints) == [1, 1, 2, 3]
    for kept in (graph("reflect", 0.0, [0, 0, 0, 0, 0, 0, 1, 1]), graph("constant", 1.0, [0, 0, 0, 0, 0, 0, 1, 1]),
                 graph("constant", 0.0, [0, 1, 0, 0, 0, 0, 1, 1])):
        assert fold_pads_into_convs(kept) == 0 and len(kept.node) == 2


def test_onnx_file_carries_the_model_metadata():
    graph = onnx.load(str(tiny_onnx()))
    assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["binwise"])
    source = json.loads(json.dumps(read_metadata(tiny_model()).to_dict()))
    for key in ("architecture", "taxonomy", "preprocessing", "provenance"):
        assert meta[key] == source[key]
    assert meta["export"]["precision"] == "fp32" and meta["export"]["source"].startswith("tiny.safetensors@")
    onnx_classifier, torch_classifier = Classifier.load(tiny_onnx()), Classifier.load(tiny_model())
    assert onnx_classifier.taxonomy == torch_classifier.taxonomy
    assert onnx_classifier.preprocessing == torch_classifier.preprocessing
    assert onnx_classifier.model_id.startswith("tiny.onnx@")


def int8_follows_fp32(int8_path) -> None:
    assert int8_path.stat().st_size < 0.5 * tiny_onnx().stat().st_size
    photos = garbage26_test_photos()[::5]
    pixels = np.stack([load_crop(p, Classifier.load(tiny_model()).preprocessing) for p in photos])
    fp32, int8 = onnx_logits(tiny_onnx(), pixels), onnx_logits(int8_path, pixels)
    # an untrained random model quantizes poorly (trained: benchmarks/checks/int8_accuracy.py), but its
    # int8 logits must still follow the fp32 ones
    assert np.corrcoef(fp32.ravel(), int8.ravel())[0, 1] > 0.5


def test_int8_qdq_export_uses_standard_onnx_operators_only():
    graph = onnx.load(str(tiny_onnx_int8("qdq")))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and not any(op.startswith("QLinear") for op in ops)
    assert {node.domain for node in graph.graph.node} <= {"", "ai.onnx"}
    assert [o.domain for o in graph.opset_import] == [""]  # nothing else is even declared
    meta = json.loads({p.key: p.value for p in graph.metadata_props}["binwise"])
    assert (meta["export"]["precision"], meta["export"]["int8_format"]) == ("int8", "qdq")
    int8_follows_fp32(tiny_onnx_int8("qdq"))


def conv_weights(path) -> list[np.ndarray]:
    """The quantized weights of every convolution of a QDQ model (what its weight input dequantizes)."""
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    conv_weights = {node.input[1] for node in graph.node if node.op_type == "Conv"}
    return [constants[n.input[0]] for n in graph.node
            if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights and n.input[0] in constants]


def test_int8_weight_ranges(tmp_path):
    unsigned = conv_weights(tiny_onnx_int8("qdq"))  # the default
    assert unsigned and all(w.dtype == np.uint8 for w in unsigned)
    reduced = conv_weights(export_onnx(tiny_model(), tmp_path / "reduced.onnx", int8=True, calibration_count=26,
                                       weight_range="reduced"))
    assert reduced and all(w.dtype == np.int8 and -64 <= w.min() and w.max() <= 64 for w in reduced)
    full_path = export_onnx(tiny_model(), tmp_path / "full.onnx", int8=True, calibration_count=26, weight_range="full")
    assert all(w.dtype == np.int8 for w in conv_weights(full_path))
    assert min(int(w.min()) for w in conv_weights(full_path)) < -64
    int8_follows_fp32(full_path)
    with pytest.raises(BinwiseError, match="unknown weight range 'int4'"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", int8=True, weight_range="int4")


def test_uint8_grid_is_found_only_where_the_values_lie_on_one():
    rng = np.random.default_rng(0)
    step, zero_point = 0.0123, 131
    on_grid = (step * (rng.integers(0, 255, 500) - zero_point)).astype(np.float32)  # levels 0..254, not 255
    found = uint8_grid(on_grid)
    assert found is not None and found[0] == pytest.approx(step, rel=1e-5)
    assert np.allclose((on_grid / found[0] + found[1]), np.round(on_grid / step + zero_point), atol=1e-3)
    assert uint8_grid(on_grid + rng.normal(0, step / 10, 500).astype(np.float32)) is None  # moved off it
    assert uint8_grid(step * np.arange(-200, 200, dtype=np.float32)) is None  # 400 levels
    assert uint8_grid(step * (np.arange(0, 10) + 0.5)) is None  # a grid without zero on it


def test_unsigned_int8_weights_on_a_uint8_grid_are_exact(tmp_path):
    """Weights dequantized from a uint8 file (the ImageNet backbone) keep that grid: onnxruntime's
    own scale, (max - min) / 255, would miss it when the top level is unused."""
    from onnx import numpy_helper

    model_file = load_model(tiny_model())
    snapped = {}
    with torch.no_grad():
        for norm in model_file.model.modules():  # the export folds batch norm into the weights: make it x -> x
            if isinstance(norm, torch.nn.BatchNorm2d):
                norm.weight.copy_(torch.sqrt(norm.running_var + norm.eps))
                norm.bias.copy_(norm.running_mean)
        for name, weight in model_file.model.named_parameters():
            if weight.dim() == 4 and weight.shape[1] > 1:  # pointwise and full convs (depthwise stay float)
                step = float(weight.max() - weight.min()) / 254  # levels 0..254 of a uint8 grid
                zero_point = round(-float(weight.min()) / step)
                weight.copy_(step * (torch.round(weight / step + zero_point) - zero_point))
                snapped[name] = weight.clone()
    from binwise.model.file import save_model

    save_model(tmp_path / "grid.safetensors", model_file)
    graph = onnx.load(str(export_onnx(tmp_path / "grid.safetensors", tmp_path / "grid.onnx", int8=True,
                                      calibration_count=26, first_conv="int8"))).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    dequantized = [(constants[n.input[0]].astype(np.float64) - constants[n.input[2]]) * constants[n.input[1]]
                   for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in constants
                   and constants[n.input[0]].ndim == 4]
    originals = [w.numpy().astype(np.float64) for w in snapped.values()]
    assert len(dequantized) == len(originals)
    for exact in dequantized:  # each equals the snapped weight it came from, to float32 rounding
        assert any(exact.shape == original.shape and np.abs(exact - original).max()
                   < 1e-3 * (original.max() - original.min()) / 254 for original in originals)


def test_int8_depthwise_in_float(tmp_path):
    from onnx import helper, numpy_helper

    path = export_onnx(tiny_model(), tmp_path / "dw.onnx", int8=True, calibration_count=26, depthwise="float")
    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if any(a.name == "group" and helper.get_attribute_value(a) > 1 for a in n.attribute)]
    assert depthwise and all(constants[n.input[1]].dtype == np.float32 for n in depthwise)  # not dequantized
    assert len(conv_weights(path)) == len(convs) - len(depthwise) - 1  # every other Conv but the first is int8
    int8_follows_fp32(path)


def test_int8_first_conv_in_float_by_default(tmp_path):
    from onnx import numpy_helper

    def first_conv_weight(path):
        graph = onnx.load(str(path)).graph
        constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        first = next(n for n in graph.node if n.op_type == "Conv")
        producer = next((n for n in graph.node if first.input[1] in n.output), None)
        return constants[first.input[1]] if producer is None else constants[producer.input[0]]

    assert first_conv_weight(tiny_onnx_int8("qdq")).dtype == np.float32  # not dequantized
    quantized = export_onnx(tiny_model(), tmp_path / "first.onnx", int8=True, calibration_count=26, first_conv="int8")
    assert first_conv_weight(quantized).dtype == np.uint8
    int8_follows_fp32(quantized)
    with pytest.raises(BinwiseError, match="unknown first convolution precision 'int4'"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", int8=True, first_conv="int4")


def test_int8_symmetric_activations_are_tensorrts_form(tmp_path):
    """Every QuantizeLinear/DequantizeLinear has an int8 zero point of 0 (TensorRT's parser takes
    nothing else), no bias is an int32 DequantizeLinear, weights stay in [-127, 127]; binwise runs
    the file's QDQ nodes as written on the CPU."""
    from onnx import numpy_helper

    path = export_onnx(tiny_model(), tmp_path / "trt.onnx", int8=True, calibration_count=26, weight_range="full",
                       activations="symmetric")
    graph = onnx.load(str(path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq and all(len(n.input) == 3 for n in qdq)
    zero_points = [constants[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    dequantized = [constants[n.input[0]] for n in qdq if n.op_type == "DequantizeLinear" and n.input[0] in constants]
    assert dequantized and all(w.dtype == np.int8 and w.min() >= -127 for w in dequantized)  # no int32 biases
    assert {node.domain for node in graph.node} <= {"", "ai.onnx"}
    assert json.loads({p.key: p.value for p in onnx.load(str(path)).metadata_props}["binwise"])["export"][
        "activations"] == "symmetric"
    assert Classifier.load(path).runner.simulated and not Classifier.load(tiny_onnx_int8("qdq")).runner.simulated
    int8_follows_fp32(path)
    with pytest.raises(BinwiseError, match="symmetric int8 activations need symmetric weights: add --int8-weights"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", int8=True, activations="symmetric")
    with pytest.raises(BinwiseError, match="unknown int8 activations 'int4'"):
        export_onnx(tiny_model(), tmp_path / "x.onnx", int8=True, activations="int4", weight_range="full")
    assert not (tmp_path / "x.onnx").exists()


def test_int8_qoperator_export_is_fused_and_close_to_fp32(tmp_path):
    # the pixels become the first convolution's quantized input when it is int8 with symmetric weights
    path = export_onnx(tiny_model(), tmp_path / "qop.onnx", int8=True, calibration_count=26, int8_format="qoperator",
                       weight_range="reduced", first_conv="int8")
    graph = onnx.load(str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert {"QuantizeLinear", "QLinearConv", "DequantizeLinear"} <= ops
    # [-1, 1] normalisation: the uint8 pixels are the first QLinearConv's quantized input as they are
    assert [node.op_type for node in graph.graph.node[:2]] == ["Transpose", "QLinearConv"]
    assert not {"Cast", "Mul", "QLinearMul"} & ops
    int8_follows_fp32(path)
    int8_follows_fp32(tiny_onnx_int8("qoperator"))  # the defaults: normalisation and first convolution in float


def test_cli_export_and_its_errors(tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_model()), "--out", str(out)]) == 0
    assert Classifier.load(out).backend == "onnxruntime"
    assert main(["export", str(tiny_model()), "--format", "mindspore-ckpt", "--int8"]) == 2
    assert "--int8 does not apply to mindspore-ckpt" in capsys.readouterr().err
    assert main(["export", str(tiny_model()), "--int8", "--int8-activations", "symmetric", "--out", str(out)]) == 2
    assert "need symmetric weights: add --int8-weights full" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.safetensors")]) == 2
    assert "missing.safetensors: no such model file" in capsys.readouterr().err


@pytest.mark.parametrize("argv, refusal", [
    (["--format", "tflite", "--int8", "--int8-weights", "reduced"], "tflite export does not take --int8-weights"),
    (["--format", "tflite", "--int8", "--int8-format", "qoperator", "--int8-depthwise", "int8"],
     "tflite export does not take --int8-format, --int8-depthwise"),
    (["--allow-padding-change"], "onnx export does not take --allow-padding-change"),
    (["--format", "mindspore-ckpt", "--mindspore-python", "python3"], "does not take --mindspore-python"),
    (["--int8-weights", "reduced"], "--int8-weights set how --int8 quantizes; add --int8"),
    (["--int8", "--calibration-count", "0"], "--calibration-count must be at least 1"),
])
def test_export_refuses_an_option_its_format_does_not_take(tmp_path, capsys, argv, refusal):
    out = tmp_path / "m.out"
    assert main(["export", str(tiny_model()), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert refusal in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_cli_export_mindspore_checkpoint(tmp_path, capsys):
    from binwise.weights.mindspore_ckpt import read_ckpt

    out = tmp_path / "m.ckpt"
    assert main(["export", str(tiny_model()), "--format", "mindspore-ckpt", "--out", str(out)]) == 2
    assert "padding" in capsys.readouterr().err and not out.exists()
    assert main(["export", str(tiny_model()), "--format", "mindspore-ckpt", "--out", str(out),
                 "--allow-padding-change"]) == 0
    back = read_ckpt(out, taxonomy=GARBAGE26).model.state_dict()
    for name, tensor in load_model(tiny_model()).model.state_dict().items():
        if tensor.is_floating_point():
            assert torch.equal(back[name], tensor), name


@pytest.mark.slow
def test_int8_keeps_accuracy_of_a_real_garbage26_model(tmp_path):
    """benchmarks/checks/int8_accuracy.py: int8 agrees with fp32 on >= 99% of the test photos and loses
    at most 1 point of top-1 accuracy."""
    out = tmp_path / "int8.json"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "int8_accuracy.py"), "--json", str(out)],
                   check=True, cwd=REPO, timeout=3000)
    results = json.loads(out.read_text())
    assert results["test_photos"] == 130
    assert results["onnx_fp32_agreement_with_torch"] == 1.0
    for int8_format in ("qdq", "qoperator"):
        assert results[f"int8_{int8_format}_agreement_with_fp32"] >= 0.99
        assert results[f"int8_{int8_format}_drop_points"] <= 1.0


@pytest.mark.filterwarnings("ignore")
def test_onnx_with_float_input_is_refused_with_a_clear_message(tmp_path):
    """ONNX files from before pixels were uint8 took normalised float input."""
    from binwise.errors import BinwiseError
    from binwise.export.onnx_file import _write_with_metadata

    old = tmp_path / "float.onnx"
    torch.onnx.export(load_model(tiny_model()).model, torch.zeros(1, 3, 224, 224), str(tmp_path / "raw.onnx"),
                      dynamo=False, input_names=["input"])
    _write_with_metadata(tmp_path / "raw.onnx", str(old), read_metadata(tiny_model()).to_dict())
    with pytest.raises(BinwiseError, match="float.onnx: ONNX model takes tensor.float. input.*export it again"):
        Classifier.load(old)


def normalisation_graph(scale: list[float], offset: list[float], weights: np.ndarray):
    """uint8 pixels -> Cast, Mul, Add, QuantizeLinear -> a 3x3 QLinearConv (padding 1) -> float."""
    from onnx import TensorProto, helper, numpy_helper

    constant = lambda values, name, dtype=np.float32: numpy_helper.from_array(np.array(values, dtype), name)  # noqa: E731
    return helper.make_graph(
        [helper.make_node("Cast", ["pixels"], ["x"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Add", ["ax", "b"], ["y"]),
         helper.make_node("QuantizeLinear", ["y", "s", "z"], ["q"]),
         helper.make_node("QLinearConv", ["q", "s", "z", "w", "ws", "wz", "os", "oz", "bias"], ["conv"],
                          pads=[1, 1, 1, 1]),
         helper.make_node("DequantizeLinear", ["conv", "os", "oz"], ["out"])],
        "g", [helper.make_tensor_value_info("pixels", TensorProto.UINT8, [1, 3, 6, 6])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [constant(np.reshape(scale, (1, 3, 1, 1)), "a"), constant(np.reshape(offset, (1, 3, 1, 1)), "b"),
         constant(0.0095, "s"), constant(126, "z", np.uint8), constant(weights, "w", np.int8),
         constant([0.01, 0.01], "ws"), constant([0, 0], "wz", np.int8), constant(0.05, "os"),
         constant(128, "oz", np.uint8), constant([3000, -3000], "bias", np.int32)])


def test_pixels_become_the_quantized_input_only_for_one_normalisation_for_all_channels():
    import onnxruntime as ort
    import torch.nn.functional as F
    from onnx import helper

    rng = np.random.default_rng(0)
    weights = rng.integers(-60, 60, size=(2, 3, 3, 3))
    pixels = rng.integers(0, 256, size=(1, 3, 6, 6), dtype=np.uint8)
    uniform = normalisation_graph([1 / 127.5] * 3, [-1.0] * 3, weights)
    model = helper.make_model(uniform, opset_imports=[helper.make_opsetid("", 17)])
    before = ort.InferenceSession(model.SerializeToString()).run(None, {"pixels": pixels})[0]
    assert pixels_as_quantized_input(model.graph)
    assert [n.op_type for n in model.graph.node] == ["QLinearConv", "DequantizeLinear"]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"pixels": pixels})[0]
    exact = F.conv2d(torch.from_numpy(pixels / 127.5 - 1), torch.from_numpy(weights * 0.01), padding=1)
    # the bias was quantized with the calibrated input scale (0.0095), not the pixels' 1 / 127.5
    exact = (exact + torch.tensor([3000, -3000]).view(1, 2, 1, 1) * 0.0095 * 0.01).numpy()
    # inside the border the pixels-as-input model is as exact as the output's quantization allows
    inside = (slice(None), slice(None), slice(1, -1), slice(1, -1))
    assert np.abs(after - exact)[inside].max() <= 0.05 / 2 + 1e-6
    assert np.abs(after - exact).max() <= np.abs(before - exact).max() + 0.05
    per_channel = normalisation_graph([1 / 58.4, 1 / 57.1, 1 / 57.4], [-2.12, -2.04, -1.80], weights)
    assert not pixels_as_quantized_input(per_channel) and len(per_channel.node) == 6
