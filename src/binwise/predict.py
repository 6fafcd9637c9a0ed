"""Classifying photos with a saved model: the API behind ``binwise predict``, the bench and the service.

A Classifier wraps either backend behind one call: a .safetensors model file runs in PyTorch, an
.onnx file (from ``binwise export``) runs in onnxruntime without importing torch. Both take the same
uint8 pixels, from ``binwise.images.load_crop``, and normalise them the same way
(``preprocessing.with_pixel_input`` in PyTorch, the ONNX graph inside itself), so they see what
evaluation sees. Classifiers hold no per-call state, so ``predict`` may be called from many
threads at once.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path

import numpy as np

from .errors import BinwiseError
from .images import ImageSource, describe, load_crop
from .preprocessing import Preprocessing, with_pixel_input
from .taxonomy import Bin, Taxonomy

BACKENDS = ("auto", "torch", "onnxruntime", "litert")
DEFAULT_BATCH_SIZE = 32


@dataclass
class ClassScore:
    index: int
    en: str
    zh: str
    bin: str | None  # bin id
    probability: float


@dataclass
class Prediction:
    source: str  # file path, or "<N bytes>" for uploaded data
    top: list[ClassScore]  # best first
    bin: Bin | None  # the bin of the top-1 class
    bin_probability: float | None  # summed probability of all classes in that bin

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "top": [asdict(s) for s in self.top],
            "bin": asdict(self.bin) if self.bin else None,
            "bin_probability": self.bin_probability,
        }


class _TorchRunner:
    """A binwise .safetensors model in PyTorch: uint8 NHWC pixels in, logits out.

    Pixels are normalised in torch (``preprocessing.with_pixel_input``), on the model's threads or
    its GPU: on the service's one model thread, numpy's single-threaded normalize cost 0.5 ms a
    photo. On CUDA, batch-1 calls replay a CUDA graph captured on the first one: eager batch 1 is
    launch-bound.
    """

    def __init__(self, path: str | os.PathLike, threads: int | None, device: str = "cpu"):
        import torch

        from .modelfile import load_model, read_metadata

        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise BinwiseError(f"--device {device} needs a CUDA GPU, and torch finds none")
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread count
        self.metadata = read_metadata(path)
        model_file = load_model(path)
        self.model = model_file.model.to(self.device, memory_format=torch.channels_last if cuda
                                         else torch.contiguous_format)
        self.pixel_model = with_pixel_input(self.model, model_file.preprocessing).to(self.device)
        self.graph = None
        self.lock = threading.Lock()  # the CUDA graph's static buffers serve one call at a time
        self.concurrent_lock = threading.Lock()

    def concurrent(self):
        """This model for batches run from several threads at once: one call at a time, since
        each call already spreads over all of torch's threads (concurrent calls would start a
        thread team each: workers x threads busy threads on as many cores as threads)."""
        def one_at_a_time(pixels: np.ndarray) -> np.ndarray:
            with self.concurrent_lock:
                return self(pixels)
        return one_at_a_time

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        import torch

        x = torch.tensor(pixels, device=self.device)  # a copy: crops may be read-only
        with torch.inference_mode():
            if self.device.type != "cuda":
                return self.pixel_model(x).numpy()
            with self.lock:
                if len(x) > 1:
                    return self.pixel_model(x).cpu().numpy()
                if self.graph is None:
                    from .cuda_graph import CudaGraphModel

                    self.graph = CudaGraphModel(self.pixel_model, x)
                return self.graph(x).cpu().numpy()


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel.

    PyTorch eager allocates each activation afresh. glibc serves blocks above its mmap threshold
    (at most 32 MB) with mmap and unmaps them on free, so every call faults its activations back
    in page by page: measured here on MobileNetV2 1.0, batch 32, ~545,000 page faults and ~1.3 s of
    kernel time per call, gone with this (~10,000 faults, ~30 ms). tcmalloc and jemalloc avoid it
    the same way. Pillow's decoded and resized images are such blocks too: about 100 faults per
    photo without it, none with it. The cost is that the process keeps its peak heap.
    Process-wide; not glibc: no-op.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # from malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks come from the heap, not from fresh mmaps
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and freed heap is not handed back


class Classifier:
    """Photos in, ranked classes with their bins out."""

    def __init__(self, runner, path: str | os.PathLike, backend: str):
        meta = runner.metadata
        self.runner = runner
        self.backend = backend
        self.path = Path(path)
        self.metadata = meta
        try:
            self.taxonomy = Taxonomy.from_dict(meta["taxonomy"])
            self.preprocessing = Preprocessing.from_dict(meta["preprocessing"])
            # a softmax or sigmoid head already outputs probabilities
            self.output_activation = meta["architecture"].get("activation")
        except (KeyError, TypeError, ValueError) as e:
            raise BinwiseError(f"model metadata is invalid: {e}", path) from None
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        self.model_id = f"{self.path.name}@{digest[:12]}"
        bin_ids = list(self.taxonomy.class_bins)
        # class -> bin membership matrix, so bin probabilities are one matrix product
        self._bin_members = {b: np.array([c == b for c in bin_ids]) for b in dict.fromkeys(bin_ids)}

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
             device: str = "cpu") -> "Classifier":
        """Load a model: ``.onnx`` runs in onnxruntime, ``.tflite`` in LiteRT, anything else is a
        binwise .safetensors file run in PyTorch. ``threads`` caps the intra-op threads (None: the library default);
        ``device`` "cuda" (or "cuda:N") runs a PyTorch model on that GPU."""
        if backend not in BACKENDS:
            raise BinwiseError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        if not path.is_file():
            raise BinwiseError("no such model file", path)
        is_onnx = path.suffix.lower() == ".onnx"
        is_tflite = path.suffix.lower() == ".tflite"
        if backend == "auto":
            backend = "onnxruntime" if is_onnx else "litert" if is_tflite else "torch"
        if backend == "litert":
            if not is_tflite:
                raise BinwiseError("the litert backend needs a .tflite file; make one with "
                                   "'binwise export MODEL --format tflite'", path)
            if device != "cpu":
                raise BinwiseError(f"a .tflite model runs on the CPU here; for --device {device} pass the "
                                   ".safetensors model file", path)
            from .tflite_backend import TfliteRunner

            runner = TfliteRunner(path, threads)
        elif backend == "onnxruntime":
            if not is_onnx:
                raise BinwiseError("the onnxruntime backend needs an .onnx file; make one with "
                                   "'binwise export MODEL --format onnx'", path)
            from .onnx_backend import OnnxRunner

            if device != "cpu":
                raise BinwiseError(f"an .onnx model runs on the CPU here; for --device {device} pass the "
                                   ".safetensors model file", path)
            runner = OnnxRunner(path, threads)
        elif is_onnx or is_tflite:
            raise BinwiseError(f"the torch backend needs a binwise .safetensors model, not a {path.suffix} file", path)
        else:
            runner = _TorchRunner(path, threads, device)
        keep_freed_memory()
        return cls(runner, path, backend)

    @property
    def torch_model(self):
        """The PyTorch module (for Grad-CAM); only .safetensors models have one."""
        if self.backend != "torch":
            raise BinwiseError("Grad-CAM needs the binwise .safetensors model file (an ONNX model "
                               "carries no gradients); pass the one this model was exported from", self.path)
        return self.runner.model

    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """A batch of ``load_image`` crops (N, H, W, 3 uint8) -> class probabilities (N, num_classes)."""
        return self._probabilities(self.runner(np.ascontiguousarray(pixels, dtype=np.uint8)))

    def _probabilities(self, outputs: np.ndarray) -> np.ndarray:
        if self.output_activation in ("softmax", "sigmoid"):
            return outputs
        outputs = outputs - outputs.max(axis=1, keepdims=True)
        exp = np.exp(outputs)
        return exp / exp.sum(axis=1, keepdims=True)

    def load_image(self, image: ImageSource, name: str | None = None) -> np.ndarray:
        """One photo, decoded, resized and cropped for this model (H, W, 3 uint8)."""
        return load_crop(image, self.preprocessing, name)

    def prediction(self, source: str, probabilities: np.ndarray, top_k: int = 5) -> Prediction:
        """A Prediction from one row of class probabilities."""
        tax = self.taxonomy
        order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
        top = [ClassScore(int(i), tax.classes_en[i], tax.classes_zh[i] if tax.classes_zh else "",
                          tax.class_bins[i] if tax.class_bins else None, float(probabilities[i]))
               for i in order]
        best_bin = tax.bin_of(top[0].index)
        bin_probability = (float(probabilities[self._bin_members[best_bin.id]].sum())
                           if best_bin else None)
        return Prediction(source, top, best_bin, bin_probability)

    def predict(self, images: ImageSource | list[ImageSource], top_k: int = 5,
                batch_size: int = DEFAULT_BATCH_SIZE) -> Prediction | list[Prediction]:
        """Classify one photo (path, bytes or PIL image) or a list of them (batched).

        A photo that cannot be read raises BinwiseError naming it; use ``predict_stream`` to
        carry on past bad files.
        """
        if not isinstance(images, (list, tuple)):
            probabilities = self.predict_arrays(self.load_image(images)[None])
            return self.prediction(describe(images), probabilities[0], top_k)
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            probabilities = self.predict_arrays(np.stack([self.load_image(im) for im in chunk]))
            predictions += [self.prediction(describe(im), p, top_k) for im, p in zip(chunk, probabilities)]
        return predictions

    def predict_stream(self, sources: Iterable[ImageSource], top_k: int = 5,
                       batch_size: int = DEFAULT_BATCH_SIZE, workers: int | None = None,
                       ) -> Iterator[tuple[str, Prediction | BinwiseError]]:
        """Classify many photos in order, ``workers`` batches at once (default: one per CPU).

        Each worker thread decodes a batch and runs the model on it, the model on that thread
        alone where the backend allows (``concurrent``): Pillow and onnxruntime release the GIL,
        so the workers keep every core busy without handing work between threads. Yields
        ``(source, Prediction)``, or ``(source, BinwiseError)`` for a photo that could not be
        read, so one bad file does not stop the rest.
        """
        workers = workers or min(8, os.cpu_count() or 1)
        run = self.runner.concurrent()

        def classify(chunk: list) -> list[tuple[str, Prediction | BinwiseError]]:
            decoded = []
            for source in chunk:
                try:
                    decoded.append(self.load_image(source))
                except BinwiseError as e:
                    decoded.append(e)
            good = [a for a in decoded if not isinstance(a, BinwiseError)]
            probabilities = iter(self._probabilities(run(np.stack(good))) if good else [])
            return [(describe(source), array if isinstance(array, BinwiseError)
                     else self.prediction(describe(source), next(probabilities), top_k))
                    for source, array in zip(chunk, decoded)]

        sources = iter(sources)
        with ThreadPoolExecutor(workers) as pool:
            pending = deque()  # at most workers + 1 batches in memory
            while chunk := list(islice(sources, batch_size)):
                pending.append(pool.submit(classify, chunk))
                if len(pending) > workers:
                    yield from pending.popleft().result()
            while pending:
                yield from pending.popleft().result()
