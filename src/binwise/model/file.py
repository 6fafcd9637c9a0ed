"""The binwise model file: safetensors tensors plus JSON metadata under the key ``binwise``.

The metadata holds everything inference needs (architecture, classes, bins, preprocessing) and
where the weights came from (provenance, metrics), so a deployed model cannot disagree with its
labels. safetensors holds raw tensors only: loading a model file never executes anything.

Reading the metadata (``read_metadata``) needs no torch, so ``binwise info`` works in a
torch-free install; building the model (``load_model``) and saving do.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..errors import BinwiseError
from ..fileio import atomic_write
from .metadata import METADATA_KEY, ModelMeta
from .novelty import REFERENCE_KEY
from ..preprocessing import Preprocessing
from ..taxonomy.classes import Taxonomy

if TYPE_CHECKING:
    import torch

    from .network import MobileNetV2



@dataclass
class ModelFile:
    """A model with everything it needs at inference, as saved to and loaded from disk."""

    model: MobileNetV2
    taxonomy: Taxonomy
    preprocessing: Preprocessing
    provenance: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    # temperature and status thresholds fitted on held-out photos (training.calibration); empty for
    # imported weights and older files, whose predictions then use binwise.model.status's defaults
    calibration: dict = field(default_factory=dict)
    # (photos, features) pooled backbone features of training photos, for the unknown score
    # (binwise.model.novelty); saved as the tensor novelty.REFERENCE_KEY, not part of the model's weights
    reference_features: torch.Tensor | None = None

    def meta(self) -> ModelMeta:
        return ModelMeta({"name": "mobilenet_v2", **self.model.config.to_dict()}, self.taxonomy, self.preprocessing,
                         self.provenance, self.metrics, self.calibration, binwise_version=__version__)

    def metadata(self) -> dict:
        """The JSON every format carries (``ModelMeta.to_dict``)."""
        return self.meta().to_dict()


def save_model(path: str | os.PathLike, model_file: ModelFile) -> None:
    import torch
    from safetensors.torch import save_file

    if model_file.model.config.num_classes != model_file.taxonomy.num_classes:
        raise ValueError(f"model has {model_file.model.config.num_classes} outputs but the taxonomy "
                         f"has {model_file.taxonomy.num_classes} classes")
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous()
               for k, v in model_file.model.state_dict().items() if v.is_floating_point()}
    if model_file.reference_features is not None:
        tensors[REFERENCE_KEY] = model_file.reference_features.detach().to("cpu", torch.float16).contiguous()
    metadata = {METADATA_KEY: json.dumps(model_file.metadata(), ensure_ascii=False)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def read_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file: each tensor's dtype, shape and offsets, and
    ``__metadata__``. Reads only the header, never the tensors."""
    path = Path(path)
    if not path.is_file():
        raise BinwiseError("no such model file", path)
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len <= 0 or header_len > min(100 << 20, path.stat().st_size - 8):
                raise BinwiseError("not a binwise model file (not safetensors: bad header length)", path)
            header = json.loads(f.read(header_len))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else e
        raise BinwiseError(f"not a binwise model file (unreadable header: {reason})", path) from None
    if not isinstance(header, dict):
        raise BinwiseError("not a binwise model file (the safetensors header is not a JSON object)", path)
    return header


def describe_file(path: str | os.PathLike) -> tuple[ModelMeta, list[str]]:
    """A model file's checked metadata and the lines ``binwise info`` prints about the file itself
    (format, parameter count), read from the header alone: no tensors, no torch."""
    tensors = {k: v for k, v in read_header(path).items() if k != "__metadata__" and isinstance(v, dict)}
    parameters = sum(math.prod(v["shape"]) for k, v in tensors.items()
                     if isinstance(v.get("shape"), list) and all(isinstance(d, int) for d in v["shape"])
                     and not k.endswith(("running_mean", "running_var")))
    return read_metadata(path), [f"format       binwise safetensors, {len(tensors)} tensors, run by PyTorch",
                                 f"parameters   {parameters:,}"]


def read_metadata(path: str | os.PathLike) -> ModelMeta:
    """The metadata of a model file, checked (``model.metadata``), without loading its tensors."""
    raw = read_header(path).get("__metadata__", {})
    raw = raw.get(METADATA_KEY) if isinstance(raw, dict) else None
    if not isinstance(raw, str):
        raise BinwiseError("safetensors file without binwise metadata; convert weights with "
                           "'binwise import-weights'", path)
    return ModelMeta.parse(raw, path)


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> ModelFile:
    """Load a binwise model file; the model comes back in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .network import MobileNetV2, MobileNetV2Config

    meta = read_metadata(path)
    try:
        arch = dict(meta.architecture)
        arch.pop("name")  # mobilenet_v2: read_metadata's checks refuse any other
        model = MobileNetV2(MobileNetV2Config.from_dict(arch))
    except (KeyError, TypeError, ValueError) as e:
        raise BinwiseError(f"model file metadata is invalid: {e}", path) from None
    try:
        tensors = load_file(os.fspath(path))
    except (SafetensorError, OSError) as e:
        raise BinwiseError(f"model file is damaged: {e}", path) from None
    reference = tensors.pop(REFERENCE_KEY, None)
    load_state_dict_checked(model, tensors, path)
    if reference is not None:
        check_reference(reference, model.head.classifier.in_features, path)
    model.to(device).eval()
    return ModelFile(model, meta.taxonomy, meta.preprocessing, meta.provenance, meta.metrics, meta.calibration,
                     reference)


def check_reference(reference: torch.Tensor, features: int, path) -> None:
    """The training photos' features (``novelty``): (photos, features), finite, at most MAX_REFERENCE rows."""
    import torch

    from .novelty import MAX_REFERENCE

    if reference.dim() != 2 or not 1 <= len(reference) <= MAX_REFERENCE or reference.shape[1] != features:
        raise BinwiseError(f"{REFERENCE_KEY} has shape {tuple(reference.shape)}, not (1 to {MAX_REFERENCE} "
                           f"photos, {features} features)", path)
    if not torch.isfinite(reference).all():
        raise BinwiseError(f"{REFERENCE_KEY} is not finite (NaN or infinite values)", path)


def load_state_dict_checked(model: torch.nn.Module, tensors: dict[str, torch.Tensor],
                            path: str | os.PathLike) -> None:
    """load_state_dict with missing, unexpected, mis-shaped and non-finite tensors reported in one clear line."""
    import torch

    expected = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    wrong = [f"{k} {tuple(tensors[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in tensors and tensors[k].shape != v.shape]
    # int8 or bool weights would load, cast to float, and answer confidently wrong: only the float
    # types binwise writes (and half precision) are weights
    floats = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
    wrong_type = [f"{k} {str(tensors[k].dtype).removeprefix('torch.')}" for k in expected
                  if k in tensors and tensors[k].dtype not in floats]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing tensors (first: {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected tensors (first: {unexpected[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (first: {wrong[0]})")
    if wrong_type:
        problems.append(f"{len(wrong_type)} tensors of a type weights never have (first: {wrong_type[0]}; "
                        "expected floating point)")
    if problems:
        raise BinwiseError("weights do not fit the architecture: " + "; ".join(problems), path)
    # NaN or infinite weights make every answer NaN ("nan%"): refuse them here, once
    not_finite = [k for k in expected if not torch.isfinite(tensors[k]).all()]
    if not_finite:
        raise BinwiseError(f"{len(not_finite)} weight tensors are not finite (NaN or infinite; first: "
                           f"{not_finite[0]})", path)
    model.load_state_dict(tensors, strict=False)
