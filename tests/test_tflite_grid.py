"""The TFLite int8 export's weights put back on the grid of the uint8 file they came from
(binwise.export.tflite_grid), on real backbone layers of the ImageNet TFLite file: the int8 file is
built here as ai-edge-quantizer builds it (per-channel scales max|w| / 127), so no converter is
needed; tests/test_tflite_export.py checks an export made by the quantizer itself (slow). Needs
LiteRT (the 'tflite' extra) for its flatbuffer schema."""

import numpy as np
import pytest

from binwise.export.tflite_flatbuffer import packed, unpacked
from binwise.export.tflite_grid import on_source_grid
from binwise.export.weight_grid import grid_step
from binwise.weights.tflite import TFLiteGraph

schema = pytest.importorskip("ai_edge_litert.schema_py_generated", reason="needs the 'tflite' extra")

INPUT_SCALE = 0.0235  # an int8 activation scale, as calibration gives


def int8_weights(flatbuffer: bytes, op_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Op ``op_index``'s int8 weight: its values, their scales (broadcast along its quantized
    axis) and the weight dequantized (scale × value)."""
    model = unpacked(flatbuffer)
    graph = model.subgraphs[0]
    weight = graph.tensors[graph.operators[op_index].inputs[1]]
    values = np.asarray(model.buffers[weight.buffer].data).view(np.int8).reshape(weight.shape)
    shape = [1] * values.ndim
    shape[weight.quantization.quantizedDimension] = -1
    scale = weight.quantization.scale.reshape(shape)
    return values, scale, values * scale.astype(np.float64)


def first_op(flatbuffer: bytes, operator: int) -> int:
    """The index of the graph's first ``operator`` (a ``schema.BuiltinOperator``) op."""
    model = unpacked(flatbuffer)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    return next(i for i, op in enumerate(model.subgraphs[0].operators) if codes[op.opcodeIndex] == operator)


def source_layers(pretrained_weights) -> tuple[np.ndarray, float, np.ndarray, float]:
    """The ImageNet file's first convolution and first depthwise convolution (TFLite layouts),
    dequantized, each with its step."""
    graph = TFLiteGraph(pretrained_weights.read_bytes(), pretrained_weights)
    conv, depthwise = (next(op for op in graph.ops if op.name == name).inputs[1]
                       for name in ("CONV_2D", "DEPTHWISE_CONV_2D"))
    return (graph.array(conv), float(graph.tensors[conv].scale[0]),
            graph.array(depthwise), float(graph.tensors[depthwise].scale[0]))


def model_file(weights: list[tuple[int, np.ndarray, int]], int8: bool) -> bytes:
    """One op per (operator, float weight, quantized axis), each reading tensor "x" with a bias;
    with ``int8``, quantized as ai-edge-quantizer does: weights per channel with scale max|w| / 127,
    the bias in int32 with scale input scale × weight scale."""
    model = schema.ModelT()
    model.version, model.buffers, model.operatorCodes = 3, [schema.BufferT()], []
    graph = schema.SubGraphT()
    graph.tensors, graph.operators = [], []

    def tensor(name: str, kind: int, data: np.ndarray | None = None, scale=None, axis: int = 0) -> int:
        t = schema.TensorT()
        t.name, t.type, t.shape = name.encode(), kind, np.array(data.shape if data is not None else [1, 8], np.int32)
        if data is not None:
            buffer = schema.BufferT()
            buffer.data = np.frombuffer(data.tobytes(), np.uint8)
            model.buffers.append(buffer)
            t.buffer = len(model.buffers) - 1
        if scale is not None:
            t.quantization = schema.QuantizationParametersT()
            t.quantization.scale = np.asarray(scale, np.float32).ravel()
            t.quantization.zeroPoint = np.zeros(t.quantization.scale.size, np.int64)
            t.quantization.quantizedDimension = axis
        graph.tensors.append(t)
        return len(graph.tensors) - 1

    x = tensor("x", schema.TensorType.INT8 if int8 else schema.TensorType.FLOAT32, scale=[INPUT_SCALE] if int8 else None)
    for i, (operator, weight, axis) in enumerate(weights):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = operator
        model.operatorCodes.append(code)
        bias = np.linspace(-1, 1, weight.shape[axis]).astype(np.float32)
        if int8:
            reduce = tuple(a for a in range(weight.ndim) if a != axis)
            reach = np.abs(weight).max(axis=reduce, keepdims=True)
            scale = np.where(reach > 0, reach, 1) / 127  # a channel of zeros takes any scale
            inputs = [x, tensor(f"w{i}", schema.TensorType.INT8, np.round(weight / scale).astype(np.int8), scale, axis),
                      tensor(f"b{i}", schema.TensorType.INT32, np.round(bias / (INPUT_SCALE * scale.ravel())).astype(
                          np.int32), INPUT_SCALE * scale)]
        else:
            inputs = [x, tensor(f"w{i}", schema.TensorType.FLOAT32, weight), tensor(f"b{i}", schema.TensorType.FLOAT32, bias)]
        op = schema.OperatorT()
        op.opcodeIndex, op.inputs = i, np.array(inputs, np.int32)
        op.outputs = np.array([tensor(f"y{i}", graph.tensors[x].type)], np.int32)
        graph.operators.append(op)
    model.subgraphs = [graph]
    return packed(model, 1 << 16)


@pytest.fixture(scope="module")
def three_layers(pretrained_weights):
    """(fp32 file, int8 file as the quantizer makes it, the source layers): the ImageNet file's first
    convolution and depthwise convolution, and a trained-head-like fully connected layer."""
    conv, conv_step, depthwise, depthwise_step = source_layers(pretrained_weights)
    head = np.random.default_rng(0).normal(0, 0.05, (26, 64)).astype(np.float32)
    ops = schema.BuiltinOperator
    layers = [(ops.CONV_2D, conv, 0), (ops.DEPTHWISE_CONV_2D, depthwise, 3), (ops.FULLY_CONNECTED, head, 0)]
    return (model_file(layers, int8=False), model_file(layers, int8=True),
            [(conv, conv_step, 0), (depthwise, depthwise_step, 3)])


def test_the_grid_is_found_from_the_float_weights(three_layers, pretrained_weights):
    _, _, sources = three_layers
    for weight, step, _ in sources:
        assert grid_step(weight) == pytest.approx(step, rel=1e-6)  # the step the ImageNet file stores
        # a fine-tuned layer has moved off the grid: left to the quantizer
        moved = weight + np.random.default_rng(1).normal(0, 0.1 * step, weight.shape).astype(np.float32)
        assert grid_step(moved) is None
    assert grid_step(np.random.default_rng(0).normal(0, 0.05, (26, 64)).astype(np.float32)) is None


def test_weights_on_their_grid_dequantize_to_the_float_weights(three_layers):
    fp32, int8, sources = three_layers
    aligned = on_source_grid(int8, fp32)
    for op_index, (weight, step, axis) in enumerate(sources):
        source = np.round(weight / step)  # q - z of the uint8 file
        values, scale, after = int8_weights(aligned, op_index)
        reach = np.abs(source).max(axis=tuple(a for a in range(weight.ndim) if a != axis), keepdims=True)
        on_grid = np.broadcast_to(reach <= 127, weight.shape)
        assert 0 < (reach > 127).sum() <= 3  # a channel or two reaches beyond 127 steps
        # the int8 values are the uint8 file's, with its step as scale: exact
        assert np.array_equal(values[on_grid], source[on_grid])
        np.testing.assert_allclose(scale[reach <= 127], step, rtol=1e-6)
        np.testing.assert_allclose(after[on_grid], weight[on_grid], rtol=1e-6, atol=0)
        # beyond 127 steps: the nearest multiple of 2 (or more) steps
        scale = np.broadcast_to(scale, weight.shape)
        assert np.all(np.abs(after - weight)[~on_grid] <= scale[~on_grid] / 2 * (1 + 1e-5))
        # while the quantizer's own scales, off the grid, rounded them
        _, _, before = int8_weights(int8, op_index)
        assert np.abs(before - weight)[on_grid].max() > 0.1 * step


def test_the_bias_follows_the_new_weight_scale_and_other_layers_are_kept(three_layers):
    fp32, int8, sources = three_layers
    aligned_file = on_source_grid(int8, fp32)
    aligned, before = unpacked(aligned_file), unpacked(int8)
    graph, old_graph = aligned.subgraphs[0], before.subgraphs[0]
    for op_index in range(len(sources)):
        _, weight_scale, _ = int8_weights(aligned_file, op_index)
        weight_scale = weight_scale.ravel()
        bias = graph.tensors[graph.operators[op_index].inputs[2]]
        assert bias.type == schema.TensorType.INT32
        np.testing.assert_allclose(bias.quantization.scale, INPUT_SCALE * weight_scale.astype(np.float64), rtol=1e-6)
        values = np.asarray(aligned.buffers[bias.buffer].data).view(np.int32) * bias.quantization.scale
        expected = np.linspace(-1, 1, len(weight_scale))
        assert np.all(np.abs(values - expected) <= bias.quantization.scale / 2 * (1 + 1e-6))
    # the fully connected layer is on no grid: its tensors are the quantizer's, byte for byte
    head, old_head = graph.operators[2], old_graph.operators[2]
    for new, old in zip(head.inputs[1:], old_head.inputs[1:]):
        assert np.array_equal(aligned.buffers[graph.tensors[new].buffer].data,
                              before.buffers[old_graph.tensors[old].buffer].data)
        assert np.array_equal(graph.tensors[new].quantization.scale, old_graph.tensors[old].quantization.scale)
