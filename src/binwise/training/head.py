"""Head mode, the linear probe: pooled features of the frozen backbone are computed once (and
cached across runs, see ``binwise.training.feature_cache``), and the classifier trains on them for many epochs
in seconds. Finetune and auto mode start with it too (the head warm start)."""

from __future__ import annotations

import math
import time
from dataclasses import replace

import torch

from . import feature_cache as feats
from ..data.dataset import Sample
from ..model.network import MobileNetV2
from .config import TrainConfig, warm_start_config
from .context import PhaseRecord, RunContext, TrainingOutcome
from .loop import Phase, class_weights, epoch_order, fit, validation_metrics
from .splits import Splits


def head_phase(name: str, model: MobileNetV2, train_x: torch.Tensor, train_y: torch.Tensor,
               val: tuple[torch.Tensor, torch.Tensor] | None, config: TrainConfig, folder,
               device: torch.device) -> Phase:
    """Train the head on cached features: every view of every photo is one example per epoch."""
    x = train_x.reshape(-1, train_x.shape[-1]).to(device)  # (N * V, C)
    y = train_y.repeat_interleave(train_x.shape[1]).to(device)
    steps = math.ceil(len(x) / config.batch_size)

    def batches(epoch: int, first: int):
        order = epoch_order(len(x), config.seed, epoch).to(device)
        for s in range(first, steps):
            idx = order[s * config.batch_size:(s + 1) * config.batch_size]
            yield x[idx], y[idx]

    def validate() -> dict:
        model.head.eval()
        with torch.inference_mode():
            logits = model.head(val[0].to(device))
        return validation_metrics(logits, val[1].to(device))

    return Phase(name, model.head, model.head, batches, steps, validate if val else None, folder,
                 train_mode=lambda: model.head.train(),
                 class_weights=class_weights(train_y, model.config.num_classes, config))


def fit_head(model: MobileNetV2, phase: Phase, ctx: RunContext, config: TrainConfig) -> list[dict]:
    """``fit`` a head phase from the tutorial's head init."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a linear layer on small batches: extra threads only add sync cost
    try:
        torch.manual_seed(config.seed)
        model.reset_head()
        return fit(phase, config, ctx.progress)
    finally:
        torch.set_num_threads(threads)


def cached_features(model: MobileNetV2, ctx: RunContext, samples: list[Sample], config: TrainConfig) -> feats.Features:
    """The pooled backbone features of ``samples`` (``config.views`` augmented views each), from the cache."""
    found = feats.extract_features(model, ctx.pre, samples, views=config.views, seed=config.seed,
                                   cache_dir=ctx.cache_dir, batch_size=config.feature_batch_size,
                                   workers=config.workers, engine=config.engine, progress=ctx.progress,
                                   augment=config.augment)
    ctx.skipped.update(found.skipped)
    return found


def rows_of(features: feats.Features, samples: list[Sample]) -> torch.Tensor:
    """Which rows of ``features`` are photos of ``samples`` (a boolean mask)."""
    paths = {s.path for s in samples}
    return torch.tensor([s.path in paths for s in features.samples], dtype=torch.bool)


def probe(model: MobileNetV2, ctx: RunContext, features: feats.Features, train: list[Sample],
          val: list[Sample], config: TrainConfig, name: str, folder: str) -> list[dict]:
    """Train the head on the features of ``train``, monitored on the eval view of ``val``."""
    rows, val_rows = rows_of(features, train), rows_of(features, val)
    monitored = (features.features[val_rows, 0], features.labels[val_rows]) if val else None
    phase = head_phase(name, model, features.features[rows], features.labels[rows], monitored, config,
                       ctx.checkpoints(folder), ctx.device)
    return fit_head(model, phase, ctx, config)


def train_head(model: MobileNetV2, ctx: RunContext, splits: Splits) -> TrainingOutcome:
    """Head mode: the probe monitored on validation, then (``retrain_on_all``) again on train + val."""
    config = ctx.config
    started = time.perf_counter()
    features = cached_features(model, ctx, splits.train + splits.val, config)
    feature_seconds = time.perf_counter() - started
    phases = []
    if splits.val:
        history = probe(model, ctx, features, splits.train, splits.val, config, "head (train - val)", "monitored")
        phases.append(PhaseRecord("head (train - val)", history))
    val_acc = phases[-1].history[-1].get("val_acc") if phases else None
    if not splits.val or config.retrain_on_all:
        history = probe(model, ctx, features, splits.train + splits.val, [], config, "head (all train)", "final")
        phases.append(PhaseRecord("head (all train)", history))
    return TrainingOutcome(phases, choice="head", val_acc=val_acc, trained_on_val=bool(splits.val) and config.retrain_on_all,
                           details={"feature_seconds": feature_seconds, "features_computed": features.computed,
                                    "features_reused": features.reused})


def probe_config(config: TrainConfig) -> TrainConfig:
    """The probe's recipe inside finetune / auto mode (HEAD's values), no augmented views."""
    return replace(warm_start_config(config), views=0)
