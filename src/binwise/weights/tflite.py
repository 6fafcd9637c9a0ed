"""Import ImageNet MobileNetV2 weights from a TFLite file (``mobilenet_v2_1.0_224_quant.tflite``).

The flatbuffer is read with the ``tflite`` package (a schema parser; TensorFlow is not needed).
Every tensor is dequantized (``scale * (q - zero_point)``, per tensor or per channel; float
tensors are taken as they are). The operators are matched to binwise's
``MobileNetV2(num_classes=1000, padding="tf_same")`` by walking the graph from its input, layer by
layer of the binwise model: each conv must be a CONV_2D / DEPTHWISE_CONV_2D reading the previous
layer's output, with the same kernel, stride, channels and activation (ReLU6 or none); each
residual must be an ADD of the block's input and output; then a global AVERAGE_POOL_2D and the
1x1 logits conv. Anything else (other ops, other shapes, a damaged file) is a BinwiseError.

Layouts: TFLite conv weights are OHWI and depthwise weights 1HWC; PyTorch wants OIHW and (C,1,H,W).
Batch norm is folded into each conv's weight and bias in the file. binwise keeps Conv + BN, so the
bias goes into the BN as ``gamma = 1, beta = b, running_mean = 0, running_var = 1 - eps``: eval
mode computes ``W*x + b`` exactly. Before fine-tuning in train mode, see ``batchnorm.unfold_batchnorm``.

The logits conv has 1001 outputs; output 0 is "background" and is dropped, leaving the 1000
ImageNet classes in the order of ``imagenet_taxonomy()``.

Preprocessing: pixels in [-1, 1] (the file's input quantization is scale 1/128, zero point 128),
i.e. ``MINUS_ONE_TO_ONE``'s mean and std, with the shorter side resized to 224 and a centre crop
of 224 (no 256 -> 224 margin crop). The usual 256/224 crop cuts Grace Hopper's uniform out of the
sample photo: this model, and the reference TFLite interpreter on the same pixels, then answer
"mortarboard" by a tenth of a logit over "military uniform"; with the whole short side kept all three
sample photos get their documented answers with clear margins.
"""

from __future__ import annotations

import io
import math
import os
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tflite
import torch

from ..errors import BinwiseError
from ..model.network import ConvBNReLU, InvertedResidual, MobileNetV2
from ..model.file import ModelFile, load_state_dict_checked
from ..fileio import sha256_of_file
from ..preprocessing import MINUS_ONE_TO_ONE, Preprocessing
from ..taxonomy.classes import Taxonomy
from .batchnorm import conv_bn_pairs
from .imagenet import imagenet_taxonomy

FILE_IDENTIFIER = b"TFL3"  # bytes 4..8 of every TFLite flatbuffer
ZIP_LOCAL_FILE_HEADER = b"PK\x03\x04"  # TFLite metadata appends associated files (labels) as a zip
BACKGROUND_CLASSES = 1  # TF-slim ImageNet models have a "background" output before the 1000 classes
# ops allowed after the logits: they change shape or turn logits into probabilities, not the logits
TRAILING_OPS = {"RESHAPE", "SQUEEZE", "SOFTMAX"}
BATCHNORM_NOTE = ("folded into the conv weights in the file; loaded as BN gamma=1, beta=bias, "
                  "running_mean=0, running_var=1-eps (eval output = W*x + b exactly); "
                  "unfold with binwise.weights.batchnorm.unfold_batchnorm before train-mode fine-tuning")

_OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
_ACTIVATIONS = {code: name for name, code in vars(tflite.ActivationFunctionType).items() if not name.startswith("_")}
_PADDINGS = {code: name for name, code in vars(tflite.Padding).items() if not name.startswith("_")}
_DTYPES = {tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.UINT8: np.uint8,
           tflite.TensorType.INT8: np.int8, tflite.TensorType.INT32: np.int32}
# What the flatbuffers reader raises when offsets point outside the file or at nonsense
_PARSE_ERRORS = (IndexError, struct.error, ValueError, TypeError, AttributeError, UnicodeDecodeError,
                 OverflowError)


@dataclass
class Tensor:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: int
    buffer: int
    scale: np.ndarray
    zero_point: np.ndarray
    axis: int


@dataclass
class Op:
    index: int
    name: str  # builtin operator, e.g. "CONV_2D"
    inputs: list[int]
    outputs: list[int]
    options: dict = field(default_factory=dict)


def _options(op, name: str) -> dict:
    """The options binwise checks: strides, padding, activation (and pool size, depth multiplier)."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        opt = tflite.Conv2DOptions() if name == "CONV_2D" else tflite.DepthwiseConv2DOptions()
        opt.Init(table.Bytes, table.Pos)
        result = {"stride": (opt.StrideH(), opt.StrideW()), "dilation": (opt.DilationHFactor(), opt.DilationWFactor())}
        if name == "DEPTHWISE_CONV_2D":
            result["depth_multiplier"] = opt.DepthMultiplier()
    elif name == "AVERAGE_POOL_2D":
        opt = tflite.Pool2DOptions()
        opt.Init(table.Bytes, table.Pos)
        result = {"stride": (opt.StrideH(), opt.StrideW()), "filter": (opt.FilterHeight(), opt.FilterWidth())}
    elif name == "ADD":
        opt = tflite.AddOptions()
        opt.Init(table.Bytes, table.Pos)
        result = {}
    else:
        return {}
    result["activation"] = _ACTIVATIONS.get(opt.FusedActivationFunction(), "unknown")
    if hasattr(opt, "Padding"):
        result["padding"] = _PADDINGS.get(opt.Padding(), "unknown")
    return result


class TFLiteGraph:
    """The main subgraph of a TFLite file, parsed into plain objects, with dequantized tensor data."""

    def __init__(self, data: bytes, path: str | os.PathLike):
        self.path = path
        if len(data) < 8 or data[4:8] != FILE_IDENTIFIER:
            raise BinwiseError("not a TFLite file (no 'TFL3' flatbuffer identifier)", path)
        try:
            self._parse(data)
        except _PARSE_ERRORS as e:
            raise BinwiseError(f"damaged or truncated TFLite file ({e})", path) from None
        self.labels = self._embedded_labels(data)

    def _parse(self, data: bytes) -> None:
        model = tflite.Model.GetRootAs(data, 0)
        if model.SubgraphsLength() < 1:
            raise BinwiseError("TFLite file has no graph", self.path)
        graph = model.Subgraphs(0)
        codes = []
        for i in range(model.OperatorCodesLength()):
            code = model.OperatorCodes(i)
            # schema v3a moved builtin codes > 127 to BuiltinCode; older files only set the deprecated one
            codes.append(_OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM"))
        self.tensors = []
        for i in range(graph.TensorsLength()):
            t = graph.Tensors(i)
            q = t.Quantization()
            self.tensors.append(Tensor(
                index=i, name=(t.Name() or b"").decode("utf-8"), shape=tuple(int(d) for d in t.ShapeAsNumpy()),
                dtype=t.Type(), buffer=t.Buffer(),
                scale=q.ScaleAsNumpy() if q is not None and q.ScaleLength() else np.zeros(0),
                zero_point=q.ZeroPointAsNumpy() if q is not None and q.ZeroPointLength() else np.zeros(0),
                axis=q.QuantizedDimension() if q is not None else 0))
        self.ops = []
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            name = codes[op.OpcodeIndex()]
            self.ops.append(Op(i, name, [int(t) for t in op.InputsAsNumpy()],
                               [int(t) for t in op.OutputsAsNumpy()], _options(op, name)))
        self.inputs = [int(t) for t in graph.InputsAsNumpy()]
        self.outputs = [int(t) for t in graph.OutputsAsNumpy()]
        buffers = [model.Buffers(i) for i in range(model.BuffersLength())]
        self._buffers = [b.DataAsNumpy() for b in buffers]
        # where the constant data ends (field 4 of a Buffer is its data vector); anything appended is after it
        self.data_end = max((b._tab.Vector(b._tab.Offset(4)) + b.DataLength() for b in buffers if b.DataLength()),
                            default=0)
        for op in self.ops:
            for t in op.inputs + op.outputs:
                if t >= len(self.tensors):
                    raise IndexError(f"op {op.index} refers to tensor {t} of {len(self.tensors)}")

    def _embedded_labels(self, data: bytes) -> list[str]:
        """The label file appended to the model as a zip archive (TFLite metadata); [] if there is none."""
        if data.find(ZIP_LOCAL_FILE_HEADER, self.data_end) < 0:
            return []
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                texts = [name for name in archive.namelist() if name.endswith(".txt")]
                return archive.read(texts[0]).decode("utf-8").splitlines() if len(texts) == 1 else []
        except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError) as e:
            raise self.fail(f"damaged or truncated TFLite file (its appended label archive is unreadable: {e})") from None

    def fail(self, problem: str) -> BinwiseError:
        return BinwiseError(problem, self.path)

    def describe(self, t: int) -> str:
        name = self.tensors[t].name  # converters join fused op names with ';': the first says enough
        return f"tensor {t} {name.split(';')[0][:80]!r} {list(self.tensors[t].shape)}"

    def consumer(self, tensor: int, names: tuple[str, ...], where: str, any_input: bool = False) -> Op:
        """The one op of the given kinds that reads ``tensor`` as its first (or ``any_input``) input."""
        found = [op for op in self.ops if op.name in names and tensor in (op.inputs if any_input else op.inputs[:1])]
        if len(found) != 1:
            others = sorted({op.name for op in self.ops if tensor in op.inputs})
            raise self.fail(f"not a MobileNetV2 of the expected layout: at {where} expected one "
                            f"{' or '.join(names)} reading {self.describe(tensor)}, found "
                            f"{', '.join(others) if others else 'nothing'}")
        return found[0]

    def array(self, t: int) -> np.ndarray:
        """Tensor ``t``'s constant data as float32, dequantized."""
        tensor = self.tensors[t]
        dtype = _DTYPES.get(tensor.dtype)
        raw = self._buffers[tensor.buffer] if 0 < tensor.buffer < len(self._buffers) else 0
        if dtype is None:
            raise self.fail(f"{self.describe(t)} has an unsupported data type ({tensor.dtype})")
        if isinstance(raw, int) or raw.size == 0:
            raise self.fail(f"{self.describe(t)} has no data")
        expected = math.prod(tensor.shape) * np.dtype(dtype).itemsize
        if raw.size != expected:
            raise self.fail(f"{self.describe(t)} has {raw.size} bytes of data, expected {expected}")
        values = raw.view(dtype).reshape(tensor.shape).astype(np.float64)
        if dtype == np.float32:
            return values.astype(np.float32)
        if tensor.scale.size == 0:
            raise self.fail(f"{self.describe(t)} is quantized but has no scale")
        zero_point = tensor.zero_point if tensor.zero_point.size else np.zeros(1)
        if tensor.scale.size > 1:  # per-channel: one scale (and zero point) along the quantized axis
            if not 0 <= tensor.axis < len(tensor.shape) or tensor.shape[tensor.axis] != tensor.scale.size:
                raise self.fail(f"{self.describe(t)} has {tensor.scale.size} scales for axis {tensor.axis}")
            broadcast = [1] * len(tensor.shape)
            broadcast[tensor.axis] = -1
            scale, zero_point = tensor.scale.reshape(broadcast), zero_point.reshape(
                broadcast if zero_point.size > 1 else [1] * len(tensor.shape))
        else:
            scale = tensor.scale
        return ((values - zero_point) * scale).astype(np.float32)


def read_tflite(path: str | os.PathLike) -> ModelFile:
    """Read a TFLite MobileNetV2 1.0 ImageNet model into a binwise ModelFile (eval mode)."""
    path = Path(path)
    if not path.is_file():
        raise BinwiseError("no such file" if not path.exists() else "not a file", path)
    graph = TFLiteGraph(path.read_bytes(), path)
    if len(graph.inputs) != 1 or len(graph.tensors[graph.inputs[0]].shape) != 4:
        raise graph.fail("not a MobileNetV2 of the expected layout: expected one NHWC image input")
    _, height, width, channels = graph.tensors[graph.inputs[0]].shape
    if channels != 3 or height != width:
        raise graph.fail(f"not a MobileNetV2 of the expected layout: input {graph.describe(graph.inputs[0])}, "
                         f"expected a square RGB image")
    taxonomy = imagenet_taxonomy()
    if graph.labels:
        _check_labels(graph, taxonomy)
    model = MobileNetV2(num_classes=taxonomy.num_classes, padding="tf_same")
    load_state_dict_checked(model, match_mobilenet_v2(graph, model).state, path)
    model.eval()
    provenance = {
        "source": path.name,
        "sha256": sha256_of_file(path),
        "format": "tflite",
        "batchnorm": BATCHNORM_NOTE,
        "dequantized": "scale * (q - zero_point) for every quantized weight and bias",
        "dropped_outputs": "logit 0 (background); outputs 1..1000 are the ImageNet classes",
        "input_size": height,
    }
    # Shorter side to the input size, then centre crop: no 256/224 margin crop (see module docstring)
    preprocessing = Preprocessing(input_size=height, resize_size=height, mean=MINUS_ONE_TO_ONE.mean,
                                  std=MINUS_ONE_TO_ONE.std)
    return ModelFile(model, taxonomy, preprocessing, provenance)


def _check_labels(graph: TFLiteGraph, taxonomy: Taxonomy) -> None:
    """The file's own labels must name the taxonomy's classes in the same order. torchvision tells
    two duplicate ImageNet names apart by a suffix ('crane bird', 'maillot tank suit'), hence startswith."""
    labels = graph.labels[BACKGROUND_CLASSES:]
    mismatch = next((i for i, (label, name) in enumerate(zip(labels, taxonomy.classes_en))
                     if not name.startswith(label.split(",")[0])), None)
    if len(labels) != taxonomy.num_classes or mismatch is not None:
        where = f"class {mismatch} is {labels[mismatch]!r}, expected {taxonomy.classes_en[mismatch]!r}" \
            if mismatch is not None else f"{len(labels)} classes after the background label"
        raise graph.fail(f"the labels inside the file are not the ImageNet classes in binwise's order ({where})")


@dataclass
class MatchedGraph:
    """Where binwise's layers are in a TFLite graph, and the weights they get from it."""

    state: dict[str, torch.Tensor]  # binwise state dict
    layer_outputs: list[int]  # TFLite tensor holding the output of each ``backbone.features`` layer
    logits: int  # TFLite tensor of the logits (background included)


def match_mobilenet_v2(graph: TFLiteGraph, model: MobileNetV2) -> MatchedGraph:
    """Walk the graph along binwise's layers, checking each op; collect the file's weights."""
    bn_of = {conv: (conv_name, bn_name, bn) for conv_name, conv, bn_name, bn in conv_bn_pairs(model)}
    relu_convs = {m[0] for m in model.modules() if isinstance(m, ConvBNReLU)}
    state: dict[str, torch.Tensor] = {}
    used: set[int] = set()
    layer_outputs = []
    current = graph.inputs[0]
    for i, layer in enumerate(model.backbone.features):
        block_input = current
        convs = [m for m in layer.modules() if m in bn_of]
        for conv in convs:
            conv_name, bn_name, bn = bn_of[conv]
            op, weight, bias = _match_conv(graph, current, conv, conv in relu_convs, conv_name)
            used.add(op.index)
            state[f"{conv_name}.weight"] = torch.from_numpy(weight)
            state[f"{bn_name}.weight"] = torch.ones(bn.num_features)
            state[f"{bn_name}.bias"] = torch.from_numpy(bias)
            state[f"{bn_name}.running_mean"] = torch.zeros(bn.num_features)
            state[f"{bn_name}.running_var"] = torch.full((bn.num_features,), 1 - bn.eps)
            current = op.outputs[0]
        if isinstance(layer, InvertedResidual) and layer.use_residual:
            op = _match_add(graph, block_input, current, f"backbone.features.{i}")
            used.add(op.index)
            current = op.outputs[0]
        layer_outputs.append(current)

    pool = graph.consumer(current, ("AVERAGE_POOL_2D",), "the global average pool")
    _, height, width, channels = graph.tensors[current].shape
    if (pool.options.get("filter") != (height, width) or pool.options.get("activation") != "NONE"
            or graph.tensors[pool.outputs[0]].shape != (1, 1, 1, channels)):
        raise graph.fail(f"not a MobileNetV2 of the expected layout: op {pool.index} AVERAGE_POOL_2D "
                         f"{pool.options} is not a global average pool over {height}x{width}")
    used.add(pool.index)

    logits = graph.consumer(pool.outputs[0], ("CONV_2D",), "the logits")
    classes = model.head.classifier.out_features
    weight, bias = _conv_weights(graph, logits, (classes + BACKGROUND_CLASSES, 1, 1, channels), "the logits")
    if logits.options.get("activation") != "NONE":
        raise graph.fail(f"op {logits.index} (the logits) has activation {logits.options.get('activation')}, expected NONE")
    used.add(logits.index)
    state["head.classifier.weight"] = torch.from_numpy(np.ascontiguousarray(weight[BACKGROUND_CLASSES:, 0, 0, :]))
    state["head.classifier.bias"] = torch.from_numpy(bias[BACKGROUND_CLASSES:])

    extra = [f"{op.name} (op {op.index})" for op in graph.ops if op.index not in used and op.name not in TRAILING_OPS]
    if extra:
        raise graph.fail(f"not a MobileNetV2 of the expected layout: unexpected ops {', '.join(extra[:5])}")
    return MatchedGraph(state, layer_outputs, logits.outputs[0])


def _match_conv(graph: TFLiteGraph, current: int, conv: torch.nn.Conv2d, relu6: bool,
                where: str) -> tuple[Op, np.ndarray, np.ndarray]:
    """The TFLite op computing binwise's ``conv`` (+ folded BN, + ReLU6 if ``relu6``) from ``current``."""
    depthwise = conv.groups > 1
    op = graph.consumer(current, ("DEPTHWISE_CONV_2D",) if depthwise else ("CONV_2D",), where)
    kh, kw = conv.kernel_size
    if depthwise:
        expected = (1, kh, kw, conv.out_channels)
    else:
        expected = (conv.out_channels, kh, kw, conv.in_channels)
    weight, bias = _conv_weights(graph, op, expected, where)

    _, height, width, channels = graph.tensors[current].shape
    stride = tuple(conv.stride)
    out_shape = (1, -(-height // stride[0]), -(-width // stride[1]), conv.out_channels)
    problems = []
    if channels != conv.in_channels:
        problems.append(f"input has {channels} channels, expected {conv.in_channels}")
    if op.options.get("stride") != stride:
        problems.append(f"stride {op.options.get('stride')}, expected {stride}")
    if op.options.get("dilation") != (1, 1):
        problems.append(f"dilation {op.options.get('dilation')}, expected (1, 1)")
    if op.options.get("padding") != "SAME" and (kh, kw) != (1, 1):
        problems.append(f"padding {op.options.get('padding')}, expected SAME")
    if op.options.get("activation") != ("RELU6" if relu6 else "NONE"):
        problems.append(f"activation {op.options.get('activation')}, expected {'RELU6' if relu6 else 'NONE'}")
    if depthwise and op.options.get("depth_multiplier") != 1:
        problems.append(f"depth multiplier {op.options.get('depth_multiplier')}, expected 1")
    if graph.tensors[op.outputs[0]].shape != out_shape:
        problems.append(f"output {graph.describe(op.outputs[0])}, expected {list(out_shape)}")
    if problems:
        raise graph.fail(f"not a MobileNetV2 of the expected layout: op {op.index} {op.name} at {where}: "
                         + "; ".join(problems))
    # TFLite OHWI -> PyTorch OIHW; depthwise 1HWC -> (C, 1, H, W)
    weight = weight.transpose(3, 0, 1, 2) if depthwise else weight.transpose(0, 3, 1, 2)
    return op, np.ascontiguousarray(weight), bias


def _conv_weights(graph: TFLiteGraph, op: Op, weight_shape: tuple[int, ...],
                  where: str) -> tuple[np.ndarray, np.ndarray]:
    """The dequantized (weight, bias) of a conv op, after checking their shapes."""
    if len(op.inputs) != 3 or op.inputs[2] < 0 or len(op.outputs) != 1:
        raise graph.fail(f"op {op.index} {op.name} at {where} has no bias or an unexpected number of tensors")
    weight_t, bias_t = op.inputs[1], op.inputs[2]
    if graph.tensors[weight_t].shape != weight_shape:
        raise graph.fail(f"not a MobileNetV2 of the expected layout: op {op.index} {op.name} at {where} has "
                         f"weights {graph.describe(weight_t)}, expected {list(weight_shape)}")
    if graph.tensors[bias_t].shape != (weight_shape[0] if op.name == "CONV_2D" else weight_shape[-1],):
        raise graph.fail(f"not a MobileNetV2 of the expected layout: op {op.index} {op.name} at {where} has "
                         f"bias {graph.describe(bias_t)}")
    return graph.array(weight_t), graph.array(bias_t)


def _match_add(graph: TFLiteGraph, block_input: int, block_output: int, where: str) -> Op:
    """The residual ADD of an inverted residual block: its input plus its last conv's output."""
    op = graph.consumer(block_output, ("ADD",), f"the residual of {where}", any_input=True)
    if sorted(op.inputs) != sorted([block_input, block_output]) or op.options.get("activation") != "NONE":
        raise graph.fail(f"not a MobileNetV2 of the expected layout: op {op.index} ADD at {where} adds "
                         f"tensors {op.inputs} with activation {op.options.get('activation')}, expected "
                         f"the block input {block_input} plus output {block_output}, no activation")
    return op
