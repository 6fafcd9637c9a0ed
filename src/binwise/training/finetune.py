"""Finetune mode: the head warm start (the probe), then the last ``trainable_blocks`` blocks train.

Two ways to feed the trainable blocks:

- ``cached_views`` > 0: cached activations of the frozen prefix (``activations``), fast on a CPU;
- ``cached_views`` = 0: every step decodes and augments photos (``augment``), on the CPU in
  DataLoader workers or, on a GPU, from photos decoded once and kept on the device
  (``device_data``). This is the path for training every block, and the tutorial's.

``batchnorm: frozen`` keeps every BN in eval mode; ``train`` first gives folded BN real statistics
(``weights.batchnorm.unfold_batchnorm``).
"""

from __future__ import annotations

import contextlib
import logging
import math

import torch
from torch import nn

from . import distributed
from ..data.dataset import Sample
from ..data.loader import PhotoDataset, photo_loader, predict_logits, seeded_rng, seeded_view, single_view
from ..model.network import MobileNetV2
from .activations import finetune_on_activations
from .augment import BatchAugment, cpu_transform
from .config import TrainConfig
from .context import PhaseRecord, RunContext, TrainingOutcome
from .device_data import DeviceImages, fits_on_device
from .head import cached_features, probe, probe_config
from .loop import Budget, Phase, class_weights, epoch_order, fit, freeze_batchnorm, validation_metrics
from .splits import Splits

log = logging.getLogger(__name__)


def freeze_backbone_except_last(model: MobileNetV2, trainable_blocks: int | None) -> None:
    """Freeze all but the last ``trainable_blocks`` feature blocks (None: train everything)."""
    blocks = list(model.backbone.features)
    n = len(blocks) if trainable_blocks is None else min(trainable_blocks, len(blocks))
    for i, block in enumerate(blocks):
        block.requires_grad_(i >= len(blocks) - n)


def frozen_prefix(model: MobileNetV2) -> int:
    """How many leading feature blocks have no trainable parameter."""
    count = 0
    for block in model.backbone.features:
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


def epoch_batches(n: int, config: TrainConfig, epoch: int, first: int) -> list[list[int]]:
    """This rank's part of each batch of ``epoch_order`` from step ``first`` on (resume mid-epoch)."""
    order = epoch_order(n, config.seed, epoch)[first * config.batch_size:]
    return [part.tolist() for part in distributed.rank_batches(order, config.batch_size, distributed.current())]


def photo_phase(name: str, model: MobileNetV2, ctx: RunContext, train: list[Sample], val: list[Sample],
                config: TrainConfig, folder) -> Phase:
    """Fine-tuning fed with freshly decoded and augmented photos at every step."""
    device = ctx.device
    cuda = device.type == "cuda"
    frozen = frozen_prefix(model)
    features = model.backbone.features
    trainable = distributed.wrap(nn.Sequential(features[frozen:], model.head), device)  # DDP when distributed

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()

    def forward(images: torch.Tensor) -> torch.Tensor:
        images = images.to(device, non_blocking=True, memory_format=torch.channels_last)
        with autocast():
            with torch.no_grad():  # the frozen prefix needs no graph
                x = features[:frozen](images)
            return trainable(x)

    if config.data_on_device == "yes" or (config.data_on_device == "auto" and fits_on_device(len(train), device, config.augment.store_size)):
        # decoded once, kept on the device, augmented a whole batch at a time there
        stored = DeviceImages(train, device, size=config.augment.store_size, threads=max(2, config.workers))
        ctx.skipped.update(stored.skipped)
        augment = BatchAugment(ctx.pre, config.augment).to(device)
        steps = math.ceil(len(stored) / config.batch_size)

        def batches(epoch: int, first: int):
            parts = stored.batches(epoch_batches(len(stored), config, epoch, first))
            for step, (images, labels) in enumerate(parts, start=first):
                # random crops per (seed, epoch, step, rank): as on resume, whatever ran before
                with seeded_rng(config.seed, epoch, step, distributed.current().rank, device=device):
                    images = augment(images)
                yield images, labels
    else:
        steps = math.ceil(len(train) / config.batch_size)
        transform = cpu_transform(ctx.pre, config.augment)

        def batches(epoch: int, first: int):
            # each photo's augmentation depends on (seed, epoch, photo) only, not on rank or worker
            augmented = PhotoDataset(train, seeded_view(transform, config.seed, epoch), at_least=config.augment.store_size)
            loader = photo_loader(augmented, config.batch_size, config.workers,
                                  batches=epoch_batches(len(train), config, epoch, first), pin_memory=cuda)
            for batch in loader:
                ctx.skipped.update(batch.skipped)
                yield batch.images, batch.labels.to(device)

    def train_mode():
        model.train()
        for block in features[:frozen]:
            block.eval()  # frozen blocks keep their statistics
        if config.batchnorm == "frozen":
            freeze_batchnorm(model)

    def validate() -> dict:
        logits, labels, errors = predict_logits(model, ctx.pre, val, config.feature_batch_size,
                                                 config.workers, device)
        ctx.skipped.update(errors)
        return validation_metrics(logits, labels)

    labels = torch.tensor([s.label for s in train], dtype=torch.long)
    return Phase(name, model, forward, batches, steps, validate if val else None, folder, train_mode,
                 class_weights=class_weights(labels, model.config.num_classes, config),
                 num_classes=model.config.num_classes)


def prepare_batchnorm(model: MobileNetV2, ctx: RunContext, train: list[Sample], config: TrainConfig) -> None:
    """Give folded BN (imported inference weights) real statistics, so train-mode BN keeps the
    pretrained features (see ``weights.batchnorm``)."""
    from ..weights.batchnorm import batchnorm_is_folded, unfold_batchnorm

    if config.batchnorm == "frozen" or frozen_prefix(model) == len(model.backbone.features) \
            or not batchnorm_is_folded(model):
        return
    sample = train[::max(1, len(train) // 256)][:256]
    loader = photo_loader(PhotoDataset(sample, single_view(cpu_transform(ctx.pre, config.augment))),
                          config.feature_batch_size, config.workers, seed=config.seed)
    unfold_batchnorm(model, (b.images for b in loader if len(b.labels)))


def finetune_blocks(model: MobileNetV2, ctx: RunContext, train: list[Sample], val: list[Sample],
                    config: TrainConfig, name: str, folder: str, budget: Budget | None = None) -> list[dict]:
    """Fine-tune the trainable blocks and the head from the model as it is (head already warm);
    ``budget``: end by its deadline."""
    split = frozen_prefix(model)
    if config.cached_views:
        if split > 0 and config.batchnorm == "frozen":
            return finetune_on_activations(model, ctx, train, val, split, config, name, folder, budget=budget)
        log.info("%s: decoding photos every step: cached activations need a frozen prefix and batchnorm "
                 "frozen (trainable_blocks %s, batchnorm %s)", name, config.trainable_blocks, config.batchnorm)
    model.to(memory_format=torch.channels_last)  # 1.5-1.9x faster training steps on these CPUs too
    prepare_batchnorm(model, ctx, train, config)
    return fit(photo_phase(name, model, ctx, train, val, config, ctx.checkpoints(folder)), config, ctx.progress,
               budget)


def train_finetune(model: MobileNetV2, ctx: RunContext, splits: Splits) -> TrainingOutcome:
    """Monitored on validation (when there is one), then with ``retrain_on_all`` again on train + val."""
    config = ctx.config
    head_features = None
    if config.warm_start_head:  # computed (or read from the cache) by the pretrained backbone, once
        with distributed.main_first():
            head_features = cached_features(model, ctx, splits.train + splits.val, probe_config(config))
    freeze_backbone_except_last(model, config.trainable_blocks)
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    plan = []
    if splits.val:
        plan.append(("train - val", splits.train, splits.val, "monitored"))
    if not splits.val or config.retrain_on_all:
        plan.append(("all train", splits.train + splits.val, [], "final"))
    phases: list[PhaseRecord] = []
    held_out_state = None
    for split_name, fit_train, fit_val, folder in plan:
        model.load_state_dict(initial)
        torch.manual_seed(config.seed)
        model.reset_head()
        model.to(ctx.device)
        if head_features is not None:
            name = f"head warm start ({split_name})"
            phases.append(PhaseRecord(name, probe(model, ctx, head_features, fit_train, fit_val, probe_config(config),
                                                  name, folder + "-head")))
        name = f"finetune ({split_name})"
        phases.append(PhaseRecord(name, finetune_blocks(model, ctx, fit_train, fit_val, config, name, folder)))
        if folder == "monitored" and len(plan) > 1:
            held_out_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    val_acc = next((p.history[-1].get("val_acc") for p in phases if p.name == "finetune (train - val)"), None)
    if config.keep_best and splits.val and not config.retrain_on_all:
        val_acc = max(row["val_acc"] for row in phases[-1].history)
    return TrainingOutcome(phases, choice="finetune", val_acc=val_acc, held_out_state=held_out_state,
                           trained_on_val=plan[-1][3] == "final" and bool(splits.val))
