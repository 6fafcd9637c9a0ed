"""Importing the real ImageNet MobileNetV2 from the TFLite file, checked against the reference
TFLite interpreter (ai_edge_litert) on the sample photos, and refusing broken or foreign files."""

import io
import zipfile

import flatbuffers
import numpy as np
import pytest
import tflite
import torch

from binwise.errors import BinwiseError
from binwise.images import load_for_model
from binwise.model.network import MobileNetV2
from binwise.model.file import load_model, save_model
from binwise.fileio import sha256_of_file
from binwise.paths import resolve_imagenet_samples, resolve_pretrained
from binwise.weights.batchnorm import batchnorm_is_folded
from binwise.weights.imagenet import imagenet_taxonomy
from binwise.weights.tflite import TFLiteGraph, match_mobilenet_v2, read_tflite

interpreter_module = pytest.importorskip("ai_edge_litert.interpreter")

TOP1 = {"cat.bmp": "Egyptian cat", "parrot.jpg": "macaw", "grace_hopper.bmp": "military uniform"}

# The reference runs every layer on uint8 activations, binwise in float32 on the dequantized
# weights, so the logits cannot agree exactly: each layer adds about half a quantization step of
# rounding noise, and it clips activations to each tensor's uint8 range. Measured relative L2 error
# of the 1000 logits (benchmarks/checks/tflite_reference.py): 0.046-0.053 on the three sample photos;
# median 0.066, max 0.099 on 40 garbage26 photos, which are far from ImageNet. Bound: about twice
# the sample photos' error.
LOGITS_RELATIVE_L2_BOUND = 0.10
# Fed the reference's own (dequantized) input, each backbone layer (one conv, or one inverted
# residual block of 2-3 convs with uint8 rounding in between) reproduces the reference's output to
# within 0.36 quantization steps of that output on average and 1.4 steps at the 99.9th percentile
# (measured on cat.bmp). The largest single error is a few outputs where the reference's rounding
# inside a block tips the other way, and it depends on the exact pixels: 3.1 steps (block 17) with
# Pillow's resize, 4.4 with Pillow-SIMD's (0.03% of pixels one grey level apart), 2.3 with a resize
# that moved 0.06% of pixels by one level; the bulk does not move. The stem conv, with no rounding
# before its output, is within 0.51 steps everywhere. A wrong transposition, padding or bias would
# be off by far more, and in the bulk.
# (On other photos a layer can be further off where the reference saturates: on grace_hopper.bmp
# block 15's projection reaches -14.8 in float, clipped to -13.0 by the reference.)
LAYER_MEAN_STEPS_BOUND = 0.45
LAYER_P999_STEPS_BOUND = 1.6
LAYER_MAX_STEPS_BOUND = 6.0
STEM_STEPS_BOUND = 0.6


@pytest.fixture(scope="module")
def tflite_path():
    return resolve_pretrained()


@pytest.fixture(scope="module")
def imported(tflite_path):
    return read_tflite(tflite_path)


@pytest.fixture(scope="module")
def reference(tflite_path):
    """The reference interpreter, keeping every intermediate tensor (no delegate, so they are real)."""
    interpreter = interpreter_module.Interpreter(
        model_path=str(tflite_path), experimental_preserve_all_tensors=True, num_threads=1,
        experimental_op_resolver_type=interpreter_module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


@pytest.fixture(scope="module")
def matched(tflite_path):
    graph = TFLiteGraph(tflite_path.read_bytes(), tflite_path)
    return match_mobilenet_v2(graph, MobileNetV2(num_classes=1000, padding="tf_same"))


def photo(name):
    return resolve_imagenet_samples() / name


def run_reference(interpreter, image_chw):
    """Quantize a preprocessed float image to the reference's uint8 input and run it. Returns the
    float input both models should see (the dequantized uint8, within 1/128 of ``image_chw``)."""
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail["quantization"]
    quantized = np.clip(np.round(image_chw / scale + zero_point), 0, 255).astype(np.uint8)
    interpreter.set_tensor(detail["index"], quantized.transpose(1, 2, 0)[None])
    interpreter.invoke()
    return ((quantized.astype(np.float32) - zero_point) * scale)[None]


def reference_tensor(interpreter, index):
    """A reference tensor dequantized to float, NHWC turned to NCHW; and its quantization step."""
    detail = next(d for d in interpreter.get_tensor_details() if d["index"] == index)
    scale, zero_point = detail["quantization"]
    values = (interpreter.get_tensor(index).astype(np.float32) - zero_point) * scale
    return torch.from_numpy(np.ascontiguousarray(values.transpose(0, 3, 1, 2))), scale


def test_imported_model_describes_itself(imported, tflite_path):
    assert imported.provenance["format"] == "tflite"
    assert imported.provenance["source"] == "mobilenet_v2_1.0_224_quant.tflite"
    assert imported.provenance["sha256"] == sha256_of_file(tflite_path)
    assert "folded" in imported.provenance["batchnorm"]
    assert imported.taxonomy == imagenet_taxonomy()
    assert imported.model.config.padding == "tf_same"
    assert imported.model.config.num_classes == 1000
    assert (imported.preprocessing.input_size, imported.preprocessing.resize_size) == (224, 224)
    assert imported.preprocessing.mean == imported.preprocessing.std == (0.5, 0.5, 0.5)
    assert not imported.model.training
    assert batchnorm_is_folded(imported.model)


@pytest.mark.parametrize("name", sorted(TOP1))
def test_photos_match_reference_interpreter(imported, reference, matched, name):
    image = load_for_model(photo(name), imported.preprocessing)
    with torch.no_grad():
        top1 = int(imported.model(torch.from_numpy(image)[None])[0].argmax())
    assert imported.taxonomy.classes_en[top1] == TOP1[name]

    x = run_reference(reference, image)
    expected, step = reference_tensor(reference, matched.logits)
    expected = expected.flatten()[1:]  # drop the background logit
    with torch.no_grad():
        logits = imported.model(torch.from_numpy(x))[0]
    assert float((logits - expected).norm() / expected.norm()) < LOGITS_RELATIVE_L2_BOUND
    # Same five classes; where the order differs, the reference's own logits tie within one of its
    # quantization steps (parrot.jpg: toucan and bee eater, 7.32 vs 7.22).
    ours_top5 = logits.topk(5).indices.tolist()
    assert set(ours_top5) == set(expected.topk(5).indices.tolist())
    assert ours_top5[0] == top1
    for better, worse in zip(ours_top5, ours_top5[1:]):
        assert expected[better] >= expected[worse] - step * 1.01


def test_each_layer_matches_reference_interpreter(imported, reference, matched):
    x = run_reference(reference, load_for_model(photo("cat.bmp"), imported.preprocessing))
    layer_input = torch.from_numpy(x)
    for i, (layer, output) in enumerate(zip(imported.model.backbone.features, matched.layer_outputs)):
        expected, step = reference_tensor(reference, output)
        with torch.no_grad():
            ours = layer(layer_input)
        steps = (ours - expected).abs().flatten() / step
        if i == 0:
            assert steps.max() < STEM_STEPS_BOUND, f"stem: {steps.max():.2f} steps"
        else:
            assert steps.mean() < LAYER_MEAN_STEPS_BOUND, f"layer {i}: {steps.mean():.2f} steps on average"
            assert steps.quantile(0.999) < LAYER_P999_STEPS_BOUND, f"layer {i}: {steps.quantile(0.999):.2f} steps (99.9%)"
            assert steps.max() < LAYER_MAX_STEPS_BOUND, f"layer {i}: {steps.max():.2f} steps"
        layer_input = expected


def test_saved_import_loads_with_same_outputs(imported, tmp_path):
    path = tmp_path / "imagenet.safetensors"
    save_model(path, imported)
    loaded = load_model(path)
    x = torch.from_numpy(load_for_model(photo("parrot.jpg"), loaded.preprocessing))[None]
    with torch.no_grad():
        assert torch.equal(loaded.model(x), imported.model(x))
    assert loaded.provenance == imported.provenance
    assert loaded.taxonomy == imported.taxonomy


# --- files that are not the expected model -------------------------------------------------------

def assert_refused(path, *words):
    with pytest.raises(BinwiseError) as info:
        read_tflite(path)
    message = str(info.value)
    assert message.startswith(str(path)) and "\n" not in message
    for word in words:
        assert word in message


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "nothing.tflite", "no such file")


# cut in the header, the weights, the tables after them, the appended label archive, its directory
@pytest.mark.parametrize("keep", [0, 7, 100, 1_805_399, 3_570_000, 3_600_000, 3_610_000])
def test_truncated_file(tflite_path, tmp_path, keep):
    data = tflite_path.read_bytes()
    assert keep < len(data)
    path = tmp_path / "truncated.tflite"
    path.write_bytes(data[:keep])
    assert_refused(path)


def test_garbage_bytes(tmp_path):
    path = tmp_path / "garbage.tflite"
    path.write_bytes(np.random.default_rng(0).bytes(5000))
    assert_refused(path, "not a TFLite file")
    path.write_bytes(photo("parrot.jpg").read_bytes())
    assert_refused(path, "not a TFLite file")


def test_garbage_after_valid_identifier(tflite_path, tmp_path):
    path = tmp_path / "garbage.tflite"
    path.write_bytes(tflite_path.read_bytes()[:8] + np.random.default_rng(1).bytes(5000))
    assert_refused(path, "damaged or truncated")


def replace_label_archive(data: bytes, labels: list[str]) -> bytes:
    """The model with its appended label zip rebuilt around other labels."""
    start = data.rfind(b"PK\x03\x04")
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("imagenet_labels.txt", "\n".join(labels))
    return data[:start] + archive.getvalue()


def test_labels_inside_the_file_are_checked(tflite_path, tmp_path):
    data = tflite_path.read_bytes()
    labels = zipfile.ZipFile(io.BytesIO(data)).read("imagenet_labels.txt").decode().splitlines()
    path = tmp_path / "relabelled.tflite"
    path.write_bytes(replace_label_archive(data, labels))
    assert read_tflite(path).taxonomy == imagenet_taxonomy()  # the rebuilt archive itself is fine
    labels[1], labels[2] = labels[2], labels[1]
    path.write_bytes(replace_label_archive(data, labels))
    assert_refused(path, "labels inside the file", "class 0 is 'goldfish, Carassius auratus', expected 'tench'")


# int8 weights of the quantized tiny model: one scale and zero point per output channel (axis 0)
TINY_Q = np.arange(108, dtype=np.int8).reshape(4, 3, 3, 3) - 50
TINY_SCALES = np.array([0.1, 0.2, 0.5, 1.0], np.float32)
TINY_ZERO_POINTS = np.array([0, 1, -1, 2], np.int64)


def tiny_conv_tflite(per_channel_int8: bool = False) -> bytes:
    """A real, valid TFLite model that is not a MobileNetV2: one 3x3 conv, 3 -> 4 channels, with
    float weights or (``per_channel_int8``) int8 weights quantized per output channel."""
    b = flatbuffers.Builder(1024)

    def vector(start, items):
        start(b, len(items))
        for item in reversed(items):
            b.PrependUOffsetTRelative(item)
        return b.EndVector()

    def buffer(array):
        data = b.CreateNumpyVector(np.frombuffer(array.tobytes(), np.uint8)) if array is not None else None
        tflite.BufferStart(b)
        if data is not None:
            tflite.BufferAddData(b, data)
        return tflite.BufferEnd(b)

    def per_channel_quantization():
        scales, zero_points = b.CreateNumpyVector(TINY_SCALES), b.CreateNumpyVector(TINY_ZERO_POINTS)
        tflite.QuantizationParametersStart(b)
        tflite.QuantizationParametersAddScale(b, scales)
        tflite.QuantizationParametersAddZeroPoint(b, zero_points)
        tflite.QuantizationParametersAddQuantizedDimension(b, 0)
        return tflite.QuantizationParametersEnd(b)

    def tensor(name, shape, buffer_index, dtype=tflite.TensorType.FLOAT32, quantization=None):
        name, shape = b.CreateString(name), b.CreateNumpyVector(np.array(shape, np.int32))
        tflite.TensorStart(b)
        tflite.TensorAddName(b, name)
        tflite.TensorAddShape(b, shape)
        tflite.TensorAddType(b, dtype)
        tflite.TensorAddBuffer(b, buffer_index)
        if quantization is not None:
            tflite.TensorAddQuantization(b, quantization)
        return tflite.TensorEnd(b)

    weights = TINY_Q if per_channel_int8 else np.full((4, 3, 3, 3), 0.1, np.float32)
    buffers = [buffer(None), buffer(weights), buffer(np.zeros(4, np.float32))]
    weight_tensor = (tensor("weights", [4, 3, 3, 3], 1, tflite.TensorType.INT8, per_channel_quantization())
                     if per_channel_int8 else tensor("weights", [4, 3, 3, 3], 1))
    tensors = [tensor("input", [1, 8, 8, 3], 0), weight_tensor, tensor("bias", [4], 2),
               tensor("output", [1, 8, 8, 4], 0)]
    tflite.Conv2DOptionsStart(b)
    tflite.Conv2DOptionsAddPadding(b, tflite.Padding.SAME)
    tflite.Conv2DOptionsAddStrideH(b, 1)
    tflite.Conv2DOptionsAddStrideW(b, 1)
    options = tflite.Conv2DOptionsEnd(b)
    inputs, outputs = b.CreateNumpyVector(np.array([0, 1, 2], np.int32)), b.CreateNumpyVector(np.array([3], np.int32))
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, 0)
    tflite.OperatorAddInputs(b, inputs)
    tflite.OperatorAddOutputs(b, outputs)
    tflite.OperatorAddBuiltinOptionsType(b, tflite.BuiltinOptions.Conv2DOptions)
    tflite.OperatorAddBuiltinOptions(b, options)
    operator = tflite.OperatorEnd(b)
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddBuiltinCode(b, tflite.BuiltinOperator.CONV_2D)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, tflite.BuiltinOperator.CONV_2D)
    tflite.OperatorCodeAddVersion(b, 1)
    code = tflite.OperatorCodeEnd(b)

    tensor_vector = vector(tflite.SubGraphStartTensorsVector, tensors)
    operator_vector = vector(tflite.SubGraphStartOperatorsVector, [operator])
    graph_inputs, graph_outputs = b.CreateNumpyVector(np.array([0], np.int32)), b.CreateNumpyVector(np.array([3], np.int32))
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tensor_vector)
    tflite.SubGraphAddOperators(b, operator_vector)
    tflite.SubGraphAddInputs(b, graph_inputs)
    tflite.SubGraphAddOutputs(b, graph_outputs)
    graph = tflite.SubGraphEnd(b)

    codes = vector(tflite.ModelStartOperatorCodesVector, [code])
    graphs = vector(tflite.ModelStartSubgraphsVector, [graph])
    buffer_vector = vector(tflite.ModelStartBuffersVector, buffers)
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, codes)
    tflite.ModelAddSubgraphs(b, graphs)
    tflite.ModelAddBuffers(b, buffer_vector)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def test_other_tflite_model(tmp_path):
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tiny_conv_tflite())
    # it is a genuine TFLite model: the reference interpreter runs it
    interpreter = interpreter_module.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    interpreter.set_tensor(0, np.ones((1, 8, 8, 3), np.float32))
    interpreter.invoke()
    assert np.allclose(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0, 4, 4], 2.7)
    assert_refused(path, "not a MobileNetV2", "weights", "[32, 3, 3, 3]")


def test_per_channel_dequantization(tmp_path):
    graph = TFLiteGraph(tiny_conv_tflite(per_channel_int8=True), tmp_path / "tiny.tflite")
    weights = graph.array(1)
    assert weights.dtype == np.float32 and weights.shape == (4, 3, 3, 3)
    for channel in range(4):
        expected = TINY_SCALES[channel] * (TINY_Q[channel].astype(np.float32) - TINY_ZERO_POINTS[channel])
        np.testing.assert_allclose(weights[channel], expected, rtol=1e-6)
    assert np.array_equal(graph.array(2), np.zeros(4, np.float32))  # float tensors are taken as they are


def patched_first_conv(data: bytes, field_slot: int, value: int, size: int) -> bytes:
    """A copy of the file with one field of op 0's Conv2DOptions overwritten in place."""
    model = tflite.Model.GetRootAs(data, 0)
    table = model.Subgraphs(0).Operators(0).BuiltinOptions()
    options = tflite.Conv2DOptions()
    options.Init(table.Bytes, table.Pos)
    offset = options._tab.Offset(field_slot)
    assert offset, "field not stored in the file"
    position = options._tab.Pos + offset
    patched = bytearray(data)
    patched[position:position + size] = value.to_bytes(size, "little")
    return bytes(patched)


# Conv2DOptions vtable slots: padding 4 (byte), stride_w 6 (int32), fused_activation_function 10 (byte)
@pytest.mark.parametrize("slot, value, size, words", [
    (6, 1, 4, ("stride (2, 1), expected (2, 2)",)),
    (10, tflite.ActivationFunctionType.RELU, 1, ("activation RELU, expected RELU6",)),
])
def test_tampered_layer_is_refused(tflite_path, tmp_path, slot, value, size, words):
    path = tmp_path / "tampered.tflite"
    path.write_bytes(patched_first_conv(tflite_path.read_bytes(), slot, value, size))
    assert_refused(path, "not a MobileNetV2", "backbone.features.0.0", *words)
