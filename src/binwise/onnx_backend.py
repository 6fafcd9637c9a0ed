"""Running an exported .onnx model with onnxruntime, without torch.

``binwise export`` writes the model file's JSON metadata into the ONNX file (``metadata_props``,
key ``binwise``), so an .onnx file alone knows its classes, bins and preprocessing; its input is
the resized, cropped RGB pixels as uint8 (N, H, W, 3), normalised inside the graph. This module
must never import torch: it is the whole inference path of a torch-free install.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .errors import BinwiseError
from .metadata_checks import METADATA_KEY, parse_metadata


class OnnxRunner:
    """An onnxruntime session on the CPU: uint8 NHWC pixels in, model outputs out. Thread-safe."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = path
        self.session = _session(path, threads)
        self.metadata = _parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        model_input = self.session.get_inputs()[0]
        if model_input.type != "tensor(uint8)":
            raise BinwiseError(f"ONNX model takes {model_input.type} input, not uint8 pixels: it was exported "
                               "by an older binwise; export it again with 'binwise export'", path)
        self.input_name = model_input.name
        # an export with the unknown score (binwise.novelty) has a second output named "similarity"
        names = [o.name for o in self.session.get_outputs()]
        self.scored = "similarity" in names
        self._similarity_index = names.index("similarity") if self.scored else None
        self._single_threaded = None
        self._lock = threading.Lock()

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
                session = _session(self.path, 1)
                self._single_threaded = lambda pixels: self._outputs(session.run(None, {self.input_name: pixels}))
        return self._single_threaded


def _session(path: str | os.PathLike, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise BinwiseError(f"not a loadable ONNX model ({str(e).splitlines()[0]})", path) from None


def _parse_metadata(props: dict, path) -> dict:
    raw = props.get(METADATA_KEY)
    if raw is None:
        raise BinwiseError("ONNX file without binwise metadata; export it with 'binwise export'", path)
    return parse_metadata(raw, path)
