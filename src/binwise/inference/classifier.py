"""Classifying photos with a saved model: the API behind ``binwise predict``, the bench and the service.

A Classifier wraps either backend behind one call: a .safetensors model file runs in PyTorch, an
.onnx file (from ``binwise export``) runs in onnxruntime without importing torch. Both take the same
uint8 pixels, from ``binwise.images.load_crop``, and normalise them the same way
(``preprocessing.with_pixel_input`` in PyTorch, the ONNX graph inside itself), so they see what
evaluation sees. Classifiers hold no per-call state, so ``predict`` may be called from many
threads at once.

Every Prediction carries a status, ``ok``, ``unsure`` or ``unknown`` (``binwise.model.status``): a runner
returns the logits, or ``(logits, similarity)`` when the model can say how much each photo looks like
its training photos (a .safetensors file with reference features; an .onnx or .tflite file with a
``similarity`` output). The model file's calibration gives the temperature and thresholds.
"""

from __future__ import annotations

import copy
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from pathlib import Path

import numpy as np

from ..errors import BinwiseError
from ..images import MAX_PIXELS, ImageSource, describe, load_crop
from ..preprocessing import with_pixel_input
from ..model.metadata import ModelMeta
from ..model.status import BinCosts, decide, softmax
from ..taxonomy.classes import Bin, Taxonomy

def _open_torch(path: Path, threads: int | None, device: str):
    return _TorchRunner(path, device)


def _describe_torch(path: Path) -> tuple[ModelMeta, list[str]]:
    from ..model.file import describe_file

    return describe_file(path)


def _describe_exported(open_runner: Callable) -> Callable[[Path], tuple[ModelMeta, list[str]]]:
    """An exported file is described by its runner: the runtime checks what it would run."""
    def describe(path: Path) -> tuple[ModelMeta, list[str]]:
        runner = open_runner(path, None, "cpu")
        return runner.meta, runner.describe()
    return describe


def _open_onnx(path: Path, threads: int | None, device: str):
    from .onnx_runner import OnnxRunner

    return OnnxRunner(path, threads)


def _open_tflite(path: Path, threads: int | None, device: str):
    from .tflite_runner import TfliteRunner

    return TfliteRunner(path, threads)


@dataclass(frozen=True)
class RunnerSpec:
    """One way to run a model file: what ``--backend`` calls it, the file it runs, and how to open it
    (its runtime is imported only then, so no runtime is needed to run another's files)."""

    name: str  # the --backend value
    suffix: str  # the file suffix it runs ("" for torch: any binwise .safetensors file)
    extra: str | None  # the pip extra that brings its runtime (None: the plain install)
    no_similarity: str  # how ``status_note`` names a file of this kind without the unknown score
    open: Callable[[Path, int | None, str], object]  # (path, threads, device) -> runner
    # path -> (checked metadata, the lines ``binwise info`` prints about the file itself)
    describe: Callable[[Path], tuple[ModelMeta, list[str]]]
    gpu: bool = False  # runs on --device cuda


RUNNERS = {spec.name: spec for spec in (
    RunnerSpec("torch", "", "train", "a model file without the training photos' features", _open_torch,
               _describe_torch, gpu=True),
    RunnerSpec("onnxruntime", ".onnx", None, "an .onnx file without a 'similarity' output", _open_onnx,
               _describe_exported(_open_onnx)),
    RunnerSpec("litert", ".tflite", "tflite", "a .tflite file without a 'similarity' output", _open_tflite,
               _describe_exported(_open_tflite)),
)}
BACKENDS = ("auto", *RUNNERS)


def model_id_of(path: Path) -> str:
    """How answers, feedback and review items name a model file: its name and content digest."""
    with open(path, "rb") as f:
        return f"{Path(path).name}@{hashlib.file_digest(f, 'sha256').hexdigest()[:12]}"


def runner_for(path: Path) -> RunnerSpec:
    """The runner for a file by its suffix (torch for anything not exported)."""
    return next((spec for spec in RUNNERS.values() if spec.suffix and spec.suffix == Path(path).suffix.lower()),
                RUNNERS["torch"])
EXPORTED_SUFFIXES = tuple(spec.suffix for spec in RUNNERS.values() if spec.suffix)
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
    # the answer's bin: the top class's when ok; when unsure, the one bin all ``choices`` go in
    # (None if they go in different bins); None when unknown
    bin: Bin | None
    bin_probability: float | None  # summed probability of all classes in that bin
    status: str = "ok"  # ok | unsure | unknown (binwise.model.status)
    choices: list[ClassScore] = field(default_factory=list)  # ok: the top class; unsure: those it cannot choose between
    similarity: float | None = None  # to the nearest training photo (None: the model cannot tell)

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "status": self.status,
            "top": [asdict(s) for s in self.top],
            "choices": [asdict(s) for s in self.choices],
            "bin": asdict(self.bin) if self.bin else None,
            "bin_probability": self.bin_probability,
            "similarity": self.similarity,
        }


class _TorchRunner:
    """A binwise .safetensors model in PyTorch: uint8 NHWC pixels in, logits out.

    Pixels are normalised in torch (``preprocessing.with_pixel_input``), on the model's threads or
    its GPU: on the service's one model thread, numpy's single-threaded normalize cost 0.5 ms a
    photo. On CUDA, batch-1 calls replay a CUDA graph captured on the first one: eager batch 1 is
    launch-bound.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu"):
        import torch

        from ..model.file import load_model, read_metadata
        from ..model.novelty import with_similarity

        self.device = torch.device(device)
        cuda = self.device.type == "cuda"
        if cuda and not torch.cuda.is_available():
            raise BinwiseError(f"--device {device} needs a CUDA GPU, and torch finds none")
        self.meta = read_metadata(path)
        model_file = load_model(path)
        self.model = model_file.model.to(self.device, memory_format=torch.channels_last if cuda
                                         else torch.contiguous_format)
        self.pixel_model = with_pixel_input(self.model, model_file.preprocessing).to(self.device)
        self.scored = model_file.reference_features is not None
        if self.scored:  # one tensor, logits then similarity, so a CUDA graph can capture it
            scored = with_similarity(self.pixel_model, self.model, model_file.reference_features)
            self.pixel_model = _Concatenated(scored).to(self.device)
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

    def __call__(self, pixels: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        out = self._run(pixels)
        return (out[:, :-1], out[:, -1]) if self.scored else out

    def _run(self, pixels: np.ndarray) -> np.ndarray:
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


def _Concatenated(scored):
    """``novelty.with_similarity``'s (logits, similarity) as one (N, classes + 1) tensor."""
    import torch

    class Concatenated(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scored = scored

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            logits, similarity = self.scored(pixels)
            return torch.cat([logits, similarity[:, None]], 1)

    return Concatenated().eval()


def keep_freed_memory() -> None:
    """Make glibc keep freed memory for reuse instead of returning it to the kernel.

    PyTorch eager allocates each activation afresh. glibc serves blocks above its mmap threshold
    (at most 32 MB) with mmap and unmaps them on free, so every call faults its activations back
    in page by page: measured here on MobileNetV2 1.0, batch 32, ~545,000 page faults and ~1.3 s of
    kernel time per call, gone with this (~10,000 faults, ~30 ms). tcmalloc and jemalloc avoid it
    the same way. Pillow's decoded and resized images are such blocks too: about 100 faults per
    photo without it, none with it. The cost is that the process keeps its peak heap until
    ``binwise.memory.release_freed_memory`` gives it back (the service does when idle).
    Process-wide, best before other threads allocate; not glibc: no-op.
    """
    import ctypes
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    libc = ctypes.CDLL(None)
    M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # from malloc.h
    libc.mallopt(M_MMAP_MAX, 0)  # large blocks come from the heap, not from fresh mmaps
    libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)  # and freed heap is not handed back
    # One heap for all threads: malloc_trim gives back only the main arena's free top, so with
    # trimming off the threads' own arenas (up to 8 per core) would keep their peak for good
    # (tests/test_memory.py: of 400 MiB freed by 4 threads, 240 MiB stayed after malloc_trim).
    libc.mallopt(M_ARENA_MAX, 1)


class Classifier:
    """Photos in, ranked classes with their bins out."""

    def __init__(self, runner, path: str | os.PathLike, backend: str):
        self.runner = runner
        self.backend = backend
        self.path = Path(path)
        self.meta = runner.meta  # checked and typed by the runner's reader (model.metadata.ModelMeta)
        self.taxonomy = self.meta.taxonomy
        self.preprocessing = self.meta.preprocessing
        try:
            self.calibration = self.meta.statuses()
        except (KeyError, TypeError, ValueError) as e:
            raise BinwiseError(f"model metadata is invalid: {e}", path) from None
        self.model_id = model_id_of(self.path)
        self._costs = BinCosts.of(self.taxonomy)  # each class's bin and what a wrong bin costs

    def with_bins(self, taxonomy: Taxonomy) -> "Classifier":
        """This classifier (the same runner and calibration) answering with another class -> bin map
        of the same classes, such as a region's rules (``taxonomy.files.read_region``)."""
        if taxonomy.classes_en != self.taxonomy.classes_en:
            raise BinwiseError(f"the bins of {taxonomy.name!r} are for other classes than the model's", self.path)
        view = copy.copy(self)
        view.taxonomy, view._costs = taxonomy, BinCosts.of(taxonomy)
        return view

    @classmethod
    def load(cls, path: str | os.PathLike, backend: str = "auto", threads: int | None = None,
             device: str = "cpu") -> "Classifier":
        """Load a model: ``.onnx`` runs in onnxruntime, ``.tflite`` in LiteRT, anything else is a
        binwise .safetensors file run in PyTorch (``RUNNERS``). ``threads`` caps an exported model's
        intra-op threads (None: the runtime's default); torch's thread count is process-wide, so it
        is left to the program that owns the process (``torch.set_num_threads``), as is glibc's
        allocator (``keep_freed_memory``): the CLI sets both. ``device`` "cuda" (or "cuda:N") runs a
        PyTorch model on that GPU."""
        if backend not in BACKENDS:
            raise BinwiseError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        path = Path(path)
        if not path.is_file():
            raise BinwiseError("no such model file", path)
        suffix = path.suffix.lower()
        spec = runner_for(path) if backend == "auto" else RUNNERS[backend]
        backend = spec.name
        if not spec.suffix and suffix in EXPORTED_SUFFIXES:
            raise BinwiseError(f"the {backend} backend needs a binwise .safetensors model, not a {path.suffix} file",
                               path)
        if spec.suffix and suffix != spec.suffix:
            raise BinwiseError(f"the {backend} backend needs an exported {spec.suffix} file; make one with "
                               f"'binwise export MODEL --format {spec.suffix[1:]}'", path)
        if device != "cpu" and not spec.gpu:
            raise BinwiseError(f"an exported {spec.suffix} model runs on the CPU here; for --device {device} pass the "
                               ".safetensors model file", path)
        return cls(spec.open(path, threads, device), path, backend)

    @property
    def torch_model(self):
        """The PyTorch module (for Grad-CAM); only .safetensors models have one."""
        if self.backend != "torch":
            raise BinwiseError(f"Grad-CAM needs the binwise .safetensors model file (an exported "
                               f"{self.path.suffix or 'model'} file carries no gradients); pass the one this model "
                               "was exported from", self.path)
        return self.runner.model

    def set_thresholds(self, min_confidence: float | None = None, min_similarity: float | None = None) -> "Classifier":
        """Use these thresholds instead of the model file's (None keeps that one); see ``binwise.model.status``."""
        for name, value, low in (("min_confidence", min_confidence, 0), ("min_similarity", min_similarity, -1)):
            if value is not None and not low <= value <= 1:
                raise BinwiseError(f"{name} must be between {low} and 1, got {value}")
        self.calibration = self.calibration.with_overrides(min_confidence, min_similarity)
        return self

    @property
    def status_note(self) -> str | None:
        """Why a status may be less than the model file promises, in one sentence (None: nothing to say)."""
        if not self.calibration.fitted:
            return ("this model file has no calibration (trained by an older binwise, or imported weights): "
                    f"predictions are unsure below {self.calibration.thresholds.min_confidence:.0%} and never unknown")
        if not getattr(self.runner, "scored", False):
            where = RUNNERS[self.backend].no_similarity
            return (f"this model cannot tell how much a photo looks like its training photos ({where}): "
                    "predictions are never unknown")
        return None

    def predict_arrays(self, pixels: np.ndarray) -> np.ndarray:
        """A batch of ``load_image`` crops (N, H, W, 3 uint8) -> class probabilities (N, num_classes)."""
        return self.score_arrays(pixels)[0]

    def score_arrays(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """A batch of crops -> (calibrated class probabilities, similarity to the nearest training
        photo or None when the model cannot tell)."""
        return self._scores(self.runner(np.ascontiguousarray(pixels, dtype=np.uint8)))

    def _scores(self, outputs) -> tuple[np.ndarray, np.ndarray | None]:
        logits, similarity = outputs if isinstance(outputs, tuple) else (outputs, None)
        logits = logits / self.calibration.temperature
        logits = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True), similarity

    def uncalibrated(self, probabilities: np.ndarray) -> np.ndarray:
        """``score_arrays``' probabilities as they were before the temperature (for "ECE before")."""
        # softmax(logits / T) = probabilities, so softmax(T * log probabilities) = softmax(logits)
        return softmax(self.calibration.temperature * np.log(np.maximum(probabilities, 1e-300)))

    def load_image(self, image: ImageSource, name: str | None = None, max_pixels: int = MAX_PIXELS,
                   budget=None) -> np.ndarray:
        """One photo, decoded, resized and cropped for this model (H, W, 3 uint8); ``max_pixels``
        and ``budget`` (a ``binwise.memory.DecodeBudget``) as in ``images.load_crop``."""
        return load_crop(image, self.preprocessing, name, max_pixels, budget)

    def prediction(self, source: str, probabilities: np.ndarray, top_k: int = 5,
                   similarity: float | None = None) -> Prediction:
        """A Prediction from one row of (calibrated) class probabilities and its similarity."""
        order = np.argsort(-probabilities, kind="stable")[:max(1, top_k)]
        status, chosen = decide(probabilities, similarity, self.calibration.thresholds, self._costs)
        bins = {self.taxonomy.class_bins[i] for i in chosen} if self.taxonomy.class_bins else set()
        answer_bin = self.taxonomy.bin_of(chosen[0]) if len(bins) == 1 else None
        bin_probability = (float(probabilities @ self._costs.members[:, self._costs.class_bins[chosen[0]]])
                           if answer_bin else None)
        return Prediction(source, [self._score(i, probabilities) for i in order], answer_bin, bin_probability,
                          status, [self._score(i, probabilities) for i in chosen],
                          None if similarity is None else float(similarity))

    def _score(self, index: int, probabilities: np.ndarray) -> ClassScore:
        tax = self.taxonomy
        return ClassScore(int(index), tax.classes_en[index], tax.classes_zh[index] if tax.classes_zh else "",
                          tax.class_bins[index] if tax.class_bins else None, float(probabilities[index]))

    def predict(self, images: ImageSource | list[ImageSource], top_k: int = 5,
                batch_size: int = DEFAULT_BATCH_SIZE) -> Prediction | list[Prediction]:
        """Classify one photo (path, bytes or PIL image) or a list of them (batched).

        A photo that cannot be read raises BinwiseError naming it; use ``predict_stream`` to
        carry on past bad files.
        """
        if not isinstance(images, (list, tuple)):
            return self.predictions([describe(images)], *self.score_arrays(self.load_image(images)[None]), top_k)[0]
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            scores = self.score_arrays(np.stack([self.load_image(im) for im in chunk]))
            predictions += self.predictions([describe(im) for im in chunk], *scores, top_k)
        return predictions

    def predictions(self, sources: list[str], probabilities: np.ndarray, similarity: np.ndarray | None,
                    top_k: int = 5) -> list[Prediction]:
        """Predictions from a batch of ``score_arrays`` results."""
        return [self.prediction(source, p, top_k, None if similarity is None else similarity[i])
                for i, (source, p) in enumerate(zip(sources, probabilities))]

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
            good = [(describe(s), a) for s, a in zip(chunk, decoded) if not isinstance(a, BinwiseError)]
            scores = self._scores(run(np.stack([a for _, a in good]))) if good else None
            predictions = iter(self.predictions([name for name, _ in good], *scores, top_k) if good else [])
            return [(describe(source), array if isinstance(array, BinwiseError) else next(predictions))
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
