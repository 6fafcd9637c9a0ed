"""Running an exported .tflite model with LiteRT (``ai-edge-litert``, the ``tflite`` extra), without torch.

``binwise export --format tflite`` writes the model file's JSON metadata into the flatbuffer's
``metadata`` table (entry ``binwise``), so a .tflite file alone knows its classes, bins and
preprocessing. Its input is the resized, cropped RGB pixels as uint8 (N, H, W, 3), normalised
inside the graph; its outputs are ``logits`` and, in an export of a model file with reference
features, ``similarity`` (the unknown score, ``binwise.model.novelty``), named so in the file's
signature as in the ONNX export; a file with one output (exported before the similarity was) is
read as logits alone. An int8 model's outputs are dequantized here. A LiteRT Interpreter must not be
used from two threads at once, so each calling thread gets its own.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np

from ..errors import BinwiseError, first_line
from ..model.metadata import GRAPH_LOGITS, GRAPH_SIMILARITY, METADATA_KEY, ModelMeta

EXTRA = "tflite"
SIGNATURE = "serving_default"  # litert-torch's one signature
_TFLITE_IDENTIFIER = b"TFL3"  # bytes 4..8 of a TFLite flatbuffer
MAX_TFLITE_BYTES = 512 << 20
# Control flow (a graph that loops or branches could run for ever), subgraph calls and custom
# kernels: binwise's exports use none of them.
REFUSED_OPERATORS = {"WHILE", "IF", "CALL", "CALL_ONCE", "CUSTOM", "UNKNOWN"}


class TfliteRunner:
    """A LiteRT interpreter per thread on the CPU (XNNPACK): uint8 NHWC pixels in, the logits (or
    ``(logits, similarity)``, as ``OnnxRunner`` returns them) out. Thread-safe."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        if self.path.stat().st_size > MAX_TFLITE_BYTES:
            raise BinwiseError(f"TFLite file larger than {MAX_TFLITE_BYTES >> 20} MB: not a binwise export", path)
        self.model = self.path.read_bytes()
        self.meta = read_metadata(self.model, path)
        self._interpreters = _PerThread(self.model, threads, path)
        interpreter = self._interpreters.get()
        self.input, self.outputs = interpreter.input, interpreter.outputs
        self.output = self.outputs[GRAPH_LOGITS]
        self.scored = GRAPH_SIMILARITY in self.outputs
        size, classes = self.meta.preprocessing.input_size, self.meta.taxonomy.num_classes
        if list(self.input["shape"][1:]) != [size, size, 3] or list(self.output["shape"][1:]) != [classes]:
            raise BinwiseError(f"the TFLite model maps {list(self.input['shape'])} to {list(self.output['shape'])}, not "
                               f"(batch, {size}, {size}, 3) to (batch, {classes}) as its metadata says", path)
        if self.scored and len(self.outputs[GRAPH_SIMILARITY]["shape"]) != 1:
            raise BinwiseError("the TFLite model's similarity output is not one value per photo", path)
        self._single_threaded = None
        self._lock = threading.Lock()

    def __call__(self, pixels: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        return self._interpreters.get()(pixels)

    def describe(self) -> list[str]:
        """The lines ``binwise info`` prints about the file itself: format and graph inputs and outputs."""
        export = self.meta.export
        lines = [f"format       TFLite, {export.get('precision', '?')}, {export.get('converter', '?')}, run by LiteRT"]
        return lines + [f"{kind:12s} {tensor['name']} {np.dtype(tensor['dtype']).name} "
                        f"{[int(d) for d in tensor['shape_signature']]}"
                        for kind, tensor in (("graph input", self.input),
                                             *(("graph output", output) for output in self.outputs.values()))]

    def concurrent(self):
        """This model for batches run from several threads at once, each call on its calling
        thread alone (interpreters with one thread), so that a worker that decodes and classifies
        its own batches never shares its core with LiteRT's threads."""
        with self._lock:
            if self._single_threaded is None:
                interpreters = _PerThread(self.model, 1, self.path)
                self._single_threaded = lambda pixels: interpreters.get()(pixels)
        return self._single_threaded


class _PerThread:
    """One _Interpreter per calling thread, made on its first call there."""

    def __init__(self, model: bytes, threads: int | None, path):
        self.model, self.threads, self.path = model, threads, path
        self.local = threading.local()

    def get(self) -> "_Interpreter":
        if not hasattr(self.local, "interpreter"):
            self.local.interpreter = _Interpreter(self.model, self.threads, self.path)
        return self.local.interpreter


class _Interpreter:
    """A LiteRT Interpreter resized to each batch's size as it comes."""

    def __init__(self, model: bytes, threads: int | None, path):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self.interpreter = Interpreter(model_content=model, num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise BinwiseError(f"not a loadable TFLite model ({first_line(e)})",
                               path) from None
        inputs = self.interpreter.get_input_details()
        if len(inputs) != 1:
            raise BinwiseError(f"TFLite model has {len(inputs)} inputs, not one", path)
        (self.input,) = inputs
        self.outputs = named_outputs(self.interpreter, path)
        if self.input["dtype"] != np.uint8:
            raise BinwiseError(f"TFLite model takes {np.dtype(self.input['dtype'])} input, not uint8 pixels; "
                               "export it with 'binwise export --format tflite'", path)
        self.batch = int(self.input["shape"][0])

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if len(pixels) != self.batch:
            self.interpreter.resize_tensor_input(self.input["index"], [len(pixels), *pixels.shape[1:]])
            self.interpreter.allocate_tensors()
            self.batch = len(pixels)
        self.interpreter.set_tensor(self.input["index"], pixels)
        self.interpreter.invoke()
        values = [self._value(self.outputs[name]) for name in (GRAPH_LOGITS, GRAPH_SIMILARITY) if name in self.outputs]
        return tuple(values) if len(values) > 1 else values[0]

    def _value(self, output: dict) -> np.ndarray:
        out = self.interpreter.get_tensor(output["index"])  # a copy: the next call reuses the buffer
        scale, zero_point = output["quantization"]
        return (out.astype(np.float32) - zero_point) * np.float32(scale) if scale else out


def named_outputs(interpreter, path) -> dict[str, dict]:
    """The interpreter's output details by name: ``logits``, and ``similarity`` when the file's
    signature names the two; a file with one output (an older export, or none of binwise's) has
    logits alone."""
    outputs = interpreter.get_output_details()
    if len(outputs) == 1:
        return {GRAPH_LOGITS: outputs[0]}
    names = interpreter.get_signature_list().get(SIGNATURE, {}).get("outputs", [])
    if len(outputs) != 2 or sorted(names) != [GRAPH_LOGITS, GRAPH_SIMILARITY]:
        raise BinwiseError(f"TFLite model has {len(outputs)} outputs ({', '.join(names) or 'unnamed'}), not "
                           f"{GRAPH_LOGITS} alone or {GRAPH_LOGITS} and {GRAPH_SIMILARITY}", path)
    # the signature runner only maps names to tensors; it is dropped at once, since a live one
    # stops the interpreter from resizing its input
    indices = {name: detail["index"]
               for name, detail in interpreter.get_signature_runner(SIGNATURE).get_output_details().items()}
    by_index = {detail["index"]: detail for detail in outputs}
    return {name: by_index[indices[name]] for name in (GRAPH_LOGITS, GRAPH_SIMILARITY)}


def read_metadata(model: bytes, path) -> ModelMeta:
    """binwise's metadata from a .tflite file's ``metadata`` table, checked."""
    from ai_edge_litert import schema_py_generated as schema

    if model[4:8] != _TFLITE_IDENTIFIER:
        raise BinwiseError("not a TFLite model (no TFL3 identifier)", path)
    try:
        flatbuffer = schema.Model.GetRootAs(model, 0)
        entries = {flatbuffer.Metadata(i).Name().decode(): flatbuffer.Metadata(i).Buffer()
                   for i in range(flatbuffer.MetadataLength())}
        raw = flatbuffer.Buffers(entries[METADATA_KEY]).DataAsNumpy().tobytes() if METADATA_KEY in entries else None
    except Exception as e:  # the flatbuffers reader raises whatever a damaged offset leads to
        raise BinwiseError(f"unreadable TFLite flatbuffer ({type(e).__name__})", path) from None
    if raw is None:
        raise BinwiseError("TFLite file without binwise metadata; export it with 'binwise export --format tflite'",
                           path)
    refused = sorted(set(operator_names(flatbuffer, schema)) & REFUSED_OPERATORS)
    if refused:
        raise BinwiseError(f"TFLite graph has operators binwise does not export ({', '.join(refused)}); only "
                           "binwise's own exports are run", path)
    return ModelMeta.parse(raw, path)


def operator_names(flatbuffer, schema) -> list[str]:
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = (flatbuffer.OperatorCodes(i) for i in range(flatbuffer.OperatorCodesLength()))
    # newer files keep the code in BuiltinCode, older ones (codes < 128) in DeprecatedBuiltinCode
    return [names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode()), "UNKNOWN") for c in codes]
