"""Fine-tuning the last blocks on cached activations of the frozen prefix.

When only the last blocks train, the frozen prefix computes the same thing every epoch: decoding
and running it for every step is wasted work (on a CPU, most of it). So binwise runs the prefix
once per photo and view — the eval view and ``cached_views`` augmented views — and caches its
output in float16, keyed like the feature cache (prefix weights, preprocessing, augmentation,
photo SHA-256; ``features.extract_features`` with ``stop_at``). Each epoch then shows every photo
once, as one of its views drawn at random, to the trainable suffix (blocks + head).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from . import feature_cache as feats
from ..data.dataset import Sample
from ..model.network import MobileNetV2
from .config import TrainConfig
from .context import RunContext
from .loop import Budget, Phase, class_weights, epoch_order, fit, freeze_batchnorm, validation_metrics


def prefix_activations(model: MobileNetV2, ctx: RunContext, samples: list[Sample], views: int, split: int,
                       config: TrainConfig) -> feats.Features:
    found = feats.extract_features(model, ctx.pre, samples, views=views, seed=config.seed, cache_dir=ctx.cache_dir,
                                   batch_size=config.feature_batch_size, workers=config.workers,
                                   engine=config.engine, progress=ctx.progress, augment=config.augment,
                                   stop_at=split)
    ctx.skipped.update(found.skipped)
    return found


def trainable_suffix(model: MobileNetV2, split: int) -> nn.Module:
    """Blocks ``split:`` and the head: what trains on activations cached after block ``split``."""
    return nn.Sequential(model.backbone.features[split:], model.head)


def suffix_logits(suffix: nn.Module, x: torch.Tensor, device: torch.device, batch_size: int) -> torch.Tensor:
    """The suffix's logits for cached activations ``x`` (N, C, H, W), in eval mode, batch by batch."""
    suffix.eval()
    with torch.inference_mode():
        return torch.cat([suffix(part.to(device).float()) for part in x.split(batch_size)]) if len(x) else x


def activation_phase(name: str, model: MobileNetV2, split: int, train_acts: feats.Features,
                     val_acts: feats.Features | None, config: TrainConfig, ctx: RunContext, folder) -> Phase:
    suffix = trainable_suffix(model, split)
    x, y = train_acts.features, train_acts.labels
    steps = math.ceil(len(x) / config.batch_size)

    def batches(epoch: int, first: int):
        order = epoch_order(len(x), config.seed, epoch)
        # which view each photo shows this epoch: a function of (seed, epoch) only, as the order
        view = torch.randint(x.shape[1], (len(x),), generator=torch.Generator().manual_seed(config.seed * 7919 + epoch))
        for s in range(first, steps):
            idx = order[s * config.batch_size:(s + 1) * config.batch_size]
            yield x[idx, view[idx]].to(ctx.device).float(), y[idx].to(ctx.device)

    def train_mode():
        suffix.train()
        if config.batchnorm == "frozen":
            freeze_batchnorm(suffix)

    def validate() -> dict:
        logits = suffix_logits(suffix, val_acts.features[:, 0], ctx.device, config.feature_batch_size)
        return validation_metrics(logits, val_acts.labels.to(ctx.device))

    return Phase(name, suffix, suffix, batches, steps, validate if val_acts is not None and len(val_acts.labels) else None,
                 folder, train_mode, class_weights=class_weights(y, model.config.num_classes, config),
                 num_classes=model.config.num_classes)


def finetune_on_activations(model: MobileNetV2, ctx: RunContext, train: list[Sample], val: list[Sample],
                            split: int, config: TrainConfig, name: str, folder,
                            val_acts: feats.Features | None = None, budget: Budget | None = None) -> list[dict]:
    """Train blocks ``split:`` and the head on cached prefix activations of ``train``, monitored on
    ``val`` (whose activations the caller may have computed already); ``budget``: end by its deadline."""
    model.to(ctx.device)
    train_acts = prefix_activations(model, ctx, train, config.cached_views, split, config)
    if val and val_acts is None:
        val_acts = prefix_activations(model, ctx, val, 0, split, config)
    phase = activation_phase(name, model, split, train_acts, val_acts, config, ctx, ctx.checkpoints(folder))
    return fit(phase, config, ctx.progress, budget)
