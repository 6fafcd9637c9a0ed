"""Running an exported .onnx model with onnxruntime, without torch.

``binwise export`` writes the model file's JSON metadata into the ONNX file (``metadata_props``,
key ``binwise``), so an .onnx file alone knows its classes, bins and preprocessing; its input is
the resized, cropped RGB pixels as uint8 (N, H, W, 3), normalised inside the graph. This module
must never import torch: it is the whole inference path of a torch-free install.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BinwiseError, first_line
from ..model.metadata import GRAPH_SIMILARITY, METADATA_KEY, ModelMeta


class OnnxRunner:
    """An onnxruntime session on the CPU: uint8 NHWC pixels in, model outputs out. Thread-safe."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = path
        # read once: the bytes checked are the bytes run, whatever happens to the file meanwhile
        self.model_bytes = checked_model(path)
        self.session = onnx_session(self.model_bytes, path, threads)
        self.meta = _parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        # TensorRT's int8 form (symmetric int8 activations) saturates in onnxruntime's fused x86
        # kernels (a third of the answers change); run its QDQ nodes as written instead, an exact
        # simulation of the engine, slower than fp32 (docs/inference.md)
        self.simulated = self.meta.export.get("activations") == "symmetric"
        if self.simulated:
            self.session = onnx_session(self.model_bytes, path, threads, optimization="none")
        classes = self.meta.taxonomy.num_classes
        outputs = self.session.get_outputs()[0].shape
        if len(outputs) != 2 or outputs[1] != classes:
            raise BinwiseError(f"the ONNX model's output has shape {outputs}, not (batch, {classes}) for the "
                               f"{classes} classes its metadata names", path)
        model_input = self.session.get_inputs()[0]
        size = self.meta.preprocessing.input_size
        if len(model_input.shape) != 4 or list(model_input.shape[1:]) != [size, size, 3]:
            raise BinwiseError(f"the ONNX model's input has shape {model_input.shape}, not (batch, {size}, {size}, 3) "
                               "for the input size its metadata names", path)
        self.input_name = model_input.name
        # an export with the unknown score (binwise.model.novelty) has a second output named GRAPH_SIMILARITY
        names = [o.name for o in self.session.get_outputs()]
        if GRAPH_SIMILARITY in names and len(self.session.get_outputs()[names.index(GRAPH_SIMILARITY)].shape) != 1:
            raise BinwiseError("the ONNX model's similarity output is not one value per photo", path)
        self.scored = GRAPH_SIMILARITY in names
        self._similarity_index = names.index(GRAPH_SIMILARITY) if self.scored else None
        self._single_threaded = None
        self._lock = threading.Lock()

    def describe(self) -> list[str]:
        """The lines ``binwise info`` prints about the file itself: format and graph inputs and outputs."""
        export = self.meta.export
        lines = [f"format       ONNX, {export.get('precision', '?')}, opset {export.get('opset', '?')}, run by onnxruntime"]
        return lines + [f"{kind:12s} {node.name} {node.type} {node.shape}"
                        for kind, nodes in (("graph input", self.session.get_inputs()),
                                            ("graph output", self.session.get_outputs())) for node in nodes]

    def __call__(self, pixels: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        return self._outputs(self.session.run(None, {self.input_name: pixels}))

    def _outputs(self, outputs: list) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """The logits, or (logits, similarity) for an export that has the similarity output."""
        return (outputs[0], outputs[self._similarity_index]) if self.scored else outputs[0]

    def concurrent(self):
        """This model for batches run from several threads at once, each call on its calling
        thread alone (a second session with one intra-op thread), so that a worker that decodes
        and classifies its own batches never shares its core with onnxruntime's threads."""
        with self._lock:
            if self._single_threaded is None:
                session = onnx_session(self.model_bytes, self.path, 1, optimization="none" if self.simulated else "all")
                self._single_threaded = lambda pixels: self._outputs(session.run(None, {self.input_name: pixels}))
        return self._single_threaded


# The operators binwise's exports use (fp32; int8 as QDQ or QOperator; the unknown score's
# similarity output), with the few other shape and arithmetic operators exporters write for this
# network. Nothing that loops or branches (Loop, If, Scan: a graph could run for ever), reads files,
# or comes from another domain reaches onnxruntime.
ALLOWED_OPERATORS = {
    "": {"Add", "ArgMax", "AveragePool", "Cast", "Clip", "Concat", "Constant", "Conv", "DequantizeLinear", "Div",
         "Exp", "Flatten", "Gather", "Gemm", "GlobalAveragePool", "Identity", "LpNormalization", "MatMul", "Max",
         "Mul", "Pad", "QLinearConv", "QLinearMatMul", "QuantizeLinear", "ReduceL2", "ReduceMax", "ReduceMean",
         "ReduceSum", "Relu", "Reshape", "Shape", "Sigmoid", "Slice", "Softmax", "Sqrt", "Squeeze", "Sub",
         "Transpose", "Unsqueeze"},
    "com.microsoft": {"QGemm", "QLinearAdd", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat"},
}
MAX_ONNX_BYTES = 512 << 20  # MobileNetV2 1.4 in fp32 is 25 MB


def checked_model(path: str | os.PathLike) -> bytes:
    """The file's bytes, once its graph is known to take one uint8 pixel input and to have no
    operators outside ALLOWED_OPERATORS, no nested graphs and no external data."""
    import onnx

    try:
        if os.path.getsize(path) > MAX_ONNX_BYTES:
            raise BinwiseError(f"ONNX file larger than {MAX_ONNX_BYTES >> 20} MB: not a binwise export", path)
        data = Path(path).read_bytes()
        model = onnx.load_from_string(data)
    except BinwiseError:
        raise
    except Exception as e:  # protobuf's DecodeError, OSError, ...
        raise BinwiseError(f"not a loadable ONNX model ({first_line(e)})",
                           path) from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1 or inputs[0].type.tensor_type.elem_type != onnx.TensorProto.UINT8:
        kind = onnx.TensorProto.DataType.Name(inputs[0].type.tensor_type.elem_type).lower() if inputs else "no"
        raise BinwiseError(f"ONNX model takes tensor({kind}) input, not uint8 pixels: it was exported by an older "
                           "binwise or another tool; export it again with 'binwise export'", path)
    refused = sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in model.graph.node
                      if n.op_type not in ALLOWED_OPERATORS.get(n.domain if n.domain != "ai.onnx" else "", set())})
    if refused:
        raise BinwiseError(f"ONNX graph has operators binwise does not export ({', '.join(refused[:5])}); "
                           "only binwise's own exports are run", path)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise BinwiseError("ONNX graph has nested graphs; only binwise's own exports are run", path)
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise BinwiseError("ONNX model keeps weights in external files; only self-contained exports are run", path)
    return data


OPTIMIZATION_LEVELS = ("all", "basic", "none")


def onnx_session(model: bytes | str | os.PathLike, path: str | os.PathLike | None = None, threads: int | None = None,
                 optimization: str = "all", optimized_copy: str | os.PathLike | None = None,
                 profile_prefix: str | None = None):
    """binwise's one way to open an ONNX Runtime session: on the CPU, one inter-op thread, ``threads``
    intra-op threads (None: onnxruntime's choice), graph optimisations ``all`` | ``basic`` (standard
    operators only, so a saved ``optimized_copy`` stays portable) | ``none`` (every tensor kept, as
    int8 calibration and the simulated-int8 check need). ``model``: the file's bytes or its path;
    ``path`` names it in the error when onnxruntime cannot load it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if optimized_copy is not None:
        options.optimized_model_filepath = os.fspath(optimized_copy)
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if not isinstance(model, bytes):
        model = os.fspath(model)
    try:
        return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise BinwiseError(f"not a loadable ONNX model ({first_line(e)})",
                           path if path is not None else (model if isinstance(model, str) else "ONNX model")) from None


def _parse_metadata(props: dict, path) -> ModelMeta:
    raw = props.get(METADATA_KEY)
    if raw is None:
        raise BinwiseError("ONNX file without binwise metadata; export it with 'binwise export'", path)
    return ModelMeta.parse(raw, path)
