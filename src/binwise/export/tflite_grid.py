"""Putting a TFLite int8 file's weights back on the grid their float values came from.

binwise's backbone comes from the uint8 ImageNet TFLite file: each weight of a layer is
``s * (q - z)`` with that tensor's step ``s`` and integers ``q`` and ``z``, so an integer multiple
of ``s``. ai-edge-quantizer gives each output channel ``c`` the scale ``max|w_c| / 127``, which is
off that grid, so nearly every weight gets a rounding error. With the scale ``s * ceil(m_c / 127)``
(``m_c = max|w_c| / s``, at most 127 in all but one to three channels of a layer) the int8 value is
``q - z`` exactly: the int8 file then computes with the very weights the float model has. The
file does not carry ``s``, so it is found from the float weights themselves (``grid_step``); a
tensor on no such grid (a fine-tuned backbone, a trained head) keeps the quantizer's scales.
"""

from __future__ import annotations

import logging

import numpy as np

from .tflite_flatbuffer import packed, unpacked
from .weight_grid import grid_step

log = logging.getLogger(__name__)

INT8_MAX = 127  # symmetric int8 weights: -127..127


def on_source_grid(quantized: bytes, fp32: bytes) -> bytes:
    """``quantized`` (ai-edge-quantizer's int8 file made from ``fp32``) with every int8 conv,
    depthwise conv and fully connected weight whose float values in ``fp32`` lie on a grid
    (``grid_step``) quantized again with scale ``s * ceil(m_c / 127)`` per output channel (as
    the quantizer chose: per channel or per tensor), and its integer bias with scale input
    scale × weight scale, the relation TFLite requires. Tensors are matched by name; all others
    stay as they were."""
    from ai_edge_litert import schema_py_generated as schema

    weighted = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED}
    bias_types = {schema.TensorType.INT32: np.int32, schema.TensorType.INT64: np.int64}
    model, float_model = unpacked(quantized), unpacked(fp32)
    codes = [max(c.builtinCode, c.deprecatedBuiltinCode) for c in model.operatorCodes]
    aligned = candidates = 0
    for graph, float_graph in zip(model.subgraphs, float_model.subgraphs):
        floats = {t.name: _constant(float_model, t) for t in float_graph.tensors
                  if t.type == schema.TensorType.FLOAT32}
        for op in graph.operators:
            if codes[op.opcodeIndex] not in weighted:
                continue
            activations, weight = graph.tensors[op.inputs[0]], graph.tensors[op.inputs[1]]
            bias = graph.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
            bias = bias if bias is not None and bias.type in bias_types else None  # a float bias needs nothing
            values = floats.get(weight.name)
            if weight.type != schema.TensorType.INT8 or values is None or np.any(weight.quantization.zeroPoint):
                continue
            candidates += 1
            step = grid_step(values)
            if step is None or (bias is not None and floats.get(bias.name) is None):
                continue
            quantization = weight.quantization
            per_channel = len(quantization.scale) > 1
            axes = tuple(a for a in range(values.ndim) if a != quantization.quantizedDimension) if per_channel else None
            reach = np.round(np.abs(values).max(axis=axes, keepdims=True) / step)  # m_c, in steps
            scale = step * np.maximum(1, np.ceil(reach / INT8_MAX))
            _set_constant(model, weight, np.clip(np.round(values / scale), -INT8_MAX, INT8_MAX).astype(np.int8))
            quantization.scale = scale.ravel().astype(np.float32)
            if bias is not None:
                bias_scale = (np.float64(activations.quantization.scale[0]) * quantization.scale).astype(np.float32)
                _set_constant(model, bias, np.round(floats[bias.name] / bias_scale).astype(bias_types[bias.type]))
                bias.quantization.scale = bias_scale
            aligned += 1
    log.info("int8 weights on their source grid: %d of %d weight tensors", aligned, candidates)
    return packed(model, len(quantized) + 1024)


def _constant(model, tensor) -> np.ndarray | None:
    data = model.buffers[tensor.buffer].data
    return None if data is None or len(data) == 0 else np.asarray(data, np.uint8).view(np.float32).reshape(tensor.shape)


def _set_constant(model, tensor, values: np.ndarray) -> None:
    model.buffers[tensor.buffer].data = np.frombuffer(values.tobytes(), np.uint8)
