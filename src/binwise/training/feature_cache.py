"""Pooled backbone features (or the activations at a block), computed once and cached on disk.

With the backbone frozen, training the head needs only the 1280-d pooled feature of each photo,
so binwise computes them once and keeps them in ``<cache>/features/<backbone>/<view>/``:

- ``<backbone>`` is a hash of the backbone's weights, architecture and preprocessing;
- ``<view>`` is ``eval`` (resize + centre crop, the eval path) or ``aug-s<seed>-v<j>``, the j-th
  augmented view (train augmentation, its randomness seeded by the photo's content and j);
- entries are named by the SHA-256 of each file's content.

Changing any weight, the preprocessing, the augmentation or a photo's bytes therefore misses the
cache for exactly what changed. With ``stop_at`` the cache holds, instead of pooled features, the
activations after the first ``stop_at`` feature blocks, in float16 (fine-tuning the blocks after
them trains on these, see ``training.activations``); only those blocks' weights are in the key. Entries live in safetensors shards; each run adds one shard per
view with what it had to compute.

The frozen backbone runs through ONNX Runtime (about 2.5x faster than eager torch on CPU): it is
exported once per backbone into ``<cache>/onnx/`` and checked against torch before use.
"""

from __future__ import annotations

import hashlib
import json
import os
import logging
import uuid
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..data.dataset import Sample, warn_skipped
from ..images import open_image
from ..data.loader import PhotoDataset, eval_transform, photo_loader
from .augment import cpu_transform, describe
from .config import TUTORIAL_AUGMENT, AugmentConfig
from ..fileio import atomic_write, sha256_of_file
from ..preprocessing import Preprocessing
from ..progress import SILENT, Progress

CACHE_ENV = "BINWISE_CACHE"
FEATURE_FORMAT = 4  # bump when the meaning of a cached feature changes (4: views cropped from a square)
ONNX_TOLERANCE = 1e-4

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "binwise"


class PooledBackbone(nn.Module):
    """The backbone followed by global average pooling: photo -> (N, C) feature; with ``stop_at``,
    the first ``stop_at`` feature blocks only: photo -> (N, C, H, W) activations."""

    def __init__(self, backbone: nn.Module, stop_at: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.stop_at = stop_at

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stop_at is not None:
            return self.backbone.features[:self.stop_at](x)
        return self.backbone(x).mean((2, 3))


def backbone_fingerprint(model, pre: Preprocessing, stop_at: int | None = None) -> str:
    """Hash of everything that decides a backbone feature: weights, architecture, preprocessing
    (with ``stop_at``: the weights of the blocks before it)."""
    digest = hashlib.sha256()
    arch = {k: v for k, v in model.config.to_dict().items() if k not in ("num_classes", "dropout")}
    digest.update(json.dumps({"format": FEATURE_FORMAT, "arch": arch, "pre": pre.to_dict(), "stop_at": stop_at},
                             sort_keys=True).encode())
    part = model.backbone if stop_at is None else model.backbone.features[:stop_at]
    for name, tensor in sorted(part.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()[:32]


def augmentation_fingerprint(pre: Preprocessing, seed: int, augment: AugmentConfig) -> str:
    return hashlib.sha256(f"{describe(pre, augment)}|{seed}".encode()).hexdigest()[:12]


def view_names(views: int, pre: Preprocessing, seed: int, augment: AugmentConfig = TUTORIAL_AUGMENT) -> list[str]:
    """Cache folder of each view: the eval view, then ``views`` augmented ones."""
    aug = augmentation_fingerprint(pre, seed, augment)
    return ["eval"] + [f"aug-{aug}-v{j}" for j in range(1, views + 1)]


def view_seed(digest: str, view_name: str) -> int:
    return int(hashlib.sha256(f"{digest}|{view_name}".encode()).hexdigest()[:15], 16)


class FeatureStore:
    """The cached features of one backbone and one view, as shards of {content digest: feature}."""

    def __init__(self, folder: Path):
        self.folder = folder

    def load(self, wanted: set[str]) -> dict[str, torch.Tensor]:
        """The cached entries of the digests in ``wanted``: only those are read from the shards,
        so a cache shared by many datasets costs memory for this one alone."""
        from safetensors import safe_open

        entries: dict[str, torch.Tensor] = {}
        for shard in sorted(self.folder.glob("*.safetensors")):
            try:
                with safe_open(str(shard), "pt") as f:
                    for key in wanted.intersection(f.keys()).difference(entries):
                        entries[key] = f.get_tensor(key)
            except Exception as e:  # a damaged shard only costs recomputation
                log.warning("ignoring damaged feature cache shard %s: %s", shard, e)
        return entries

    def add(self, entries: dict[str, torch.Tensor]) -> None:
        if entries:
            shard = self.folder / f"{uuid.uuid4().hex}.safetensors"
            tensors = {k: v.contiguous() for k, v in entries.items()}
            atomic_write(shard, lambda tmp: save_file(tensors, tmp))


class OnnxBackbone:
    """The pooled backbone exported to ONNX once per fingerprint and run with ONNX Runtime."""

    def __init__(self, pooled: PooledBackbone, pre: Preprocessing, path: Path, threads: int):
        from ..inference.onnx_runner import onnx_session

        if not path.exists():
            export_onnx(pooled, pre, path)
        self.session = onnx_session(path, path, threads)
        self.check_against(pooled, pre)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"images": images.numpy()})[0])

    def check_against(self, pooled: PooledBackbone, pre: Preprocessing) -> None:
        x = torch.randn(2, 3, pre.input_size, pre.input_size, generator=torch.Generator().manual_seed(0))
        with torch.inference_mode():
            reference = pooled(x)
        error = (self(x) - reference).abs().max().item()
        if error > ONNX_TOLERANCE:
            raise RuntimeError(f"ONNX backbone differs from torch by {error:.2e} (> {ONNX_TOLERANCE})")


def export_onnx(pooled: PooledBackbone, pre: Preprocessing, path: Path) -> None:
    example = torch.zeros(1, 3, pre.input_size, pre.input_size)
    with warnings.catch_warnings():  # the tracer's notes on TF 'SAME' padding: sizes are fixed here
        warnings.simplefilter("ignore")
        atomic_write(path, lambda tmp: torch.onnx.export(
            pooled, (example,), tmp, input_names=["images"], output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}}, opset_version=17, dynamo=False))


def make_extractor(model, pre: Preprocessing, engine: str, cache_dir: Path, fingerprint: str,
                   stop_at: int | None = None):
    """A callable (N, 3, H, W) -> (N, C) running the frozen backbone (``stop_at``: its first blocks,
    giving (N, C, H, W)) with ``engine`` ('onnx', 'torch' or 'auto': ONNX Runtime when it works,
    torch otherwise)."""
    pooled = PooledBackbone(model.backbone, stop_at).eval()
    if engine in ("onnx", "auto"):
        try:
            return OnnxBackbone(pooled, pre, cache_dir / "onnx" / f"{fingerprint}.onnx", torch.get_num_threads())
        except Exception as e:
            if engine == "onnx":
                raise
            log.warning("ONNX Runtime backbone unavailable (%s); using torch", e)

    def run_torch(images: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return pooled(images.contiguous(memory_format=torch.channels_last))
    return run_torch


@dataclass
class Features:
    """Pooled features of the readable photos of a sample list."""

    features: torch.Tensor  # (N, V, C) or (N, V, C, H, W): view 0 is the eval view, 1..V-1 the augmented ones
    labels: torch.Tensor  # (N,)
    samples: list[Sample]  # the N readable samples, in input order
    skipped: list[str]  # errors naming the unreadable photos
    computed: int  # views computed by the backbone in this call
    reused: int  # views read from the cache


def extract_features(model, pre: Preprocessing, samples: list[Sample], views: int = 0, seed: int = 0,
                     cache_dir: Path | None = None, batch_size: int = 32, workers: int = 2,
                     engine: str = "auto", progress: Progress = SILENT, augment: AugmentConfig = TUTORIAL_AUGMENT,
                     stop_at: int | None = None) -> Features:
    """Features of every readable photo in ``samples``: its eval view and ``views`` augmented
    views (``augment``), from the cache where possible; what is computed is added to the cache.
    With ``stop_at``: the float16 activations after that many feature blocks instead.
    Augmented views are cut at the model's input size whatever ``augment.crop_size`` says: they are
    stacked with the eval view."""
    augment = replace(augment, crop_size=0)
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    fingerprint = backbone_fingerprint(model, pre, stop_at)
    names = view_names(views, pre, seed, augment)
    stores = [FeatureStore(cache_dir / "features" / fingerprint / name) for name in names]
    digests = [sha256_of_file(s.path) if s.path.is_file() else "" for s in samples]
    cached = [store.load(set(digests)) for store in stores]
    missing = [[v for v in range(len(names)) if d not in cached[v]] for d in digests]
    todo = [i for i, m in enumerate(missing) if m]

    eval_view, augmented_view = eval_transform(pre), cpu_transform(pre, augment)
    # one decode serves every view when the eval view's reduced decode suits the augmented ones too
    at_least = pre.resize_size if views == 0 else min(pre.resize_size, augment.store_size)

    def make_views(k: int, img):
        i = todo[k]
        images = []
        for v in missing[i]:
            if v == 0:  # the eval view decodes as predict does; augmented views need full resolution
                images.append(eval_view(img if at_least == pre.resize_size
                                        else open_image(samples[i].path, at_least=pre.resize_size)))
            else:  # seeded from the photo and the view alone; the caller's generator is left as it was
                with torch.random.fork_rng():
                    torch.manual_seed(view_seed(digests[i], names[v]))
                    images.append(augmented_view(img))
        return torch.stack(images), missing[i]

    new: list[dict[str, torch.Tensor]] = [{} for _ in names]
    skipped: list[str] = []
    computed = 0
    decoded: set[int] = set()
    if todo:
        extractor = make_extractor(model, pre, engine, cache_dir, fingerprint, stop_at)
        dataset = PhotoDataset([samples[i] for i in todo], make_views, at_least=at_least)
        per_batch = max(1, batch_size // len(names))  # keep rows per forward near batch_size
        loader = photo_loader(dataset, per_batch, workers if len(todo) > per_batch else 0)
        progress.begin("backbone features" if stop_at is None else f"activations at block {stop_at}",
                       sum(len(missing[i]) for i in todo), unit="view")
        try:
            for batch in loader:
                skipped += batch.skipped
                if len(batch.images):
                    out = extractor(batch.images)
                    for k, v, f in zip(batch.indices.tolist(), batch.view_ids.tolist(), out):
                        new[v][digests[todo[k]]] = f.clone() if stop_at is None else f.half()
                        decoded.add(todo[k])
                    computed += len(batch.images)
                    progress.advance(len(batch.images))
        finally:  # on Ctrl-C too: what was computed is kept for the next run
            progress.end()
            for store, entries in zip(stores, new):
                store.add(entries)
        warn_skipped(skipped)

    kept = [i for i, d in enumerate(digests) if d and (not missing[i] or i in decoded)]
    rows = [torch.stack([cached[v][digests[i]] if digests[i] in cached[v] else new[v][digests[i]]
                         for v in range(len(names))]) for i in kept]
    return Features(
        features=torch.stack(rows) if rows else torch.empty(0, len(names), model.backbone.out_channels),
        labels=torch.tensor([samples[i].label for i in kept], dtype=torch.long),
        samples=[samples[i] for i in kept],
        skipped=skipped + [f"{os.fspath(s.path)}: no such file" for s, d in zip(samples, digests) if not d],
        computed=computed,
        reused=len(kept) * len(names) - computed,
    )
