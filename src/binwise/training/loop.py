"""The one epoch loop every training phase runs (``fit``), and what it needs: the phase, the
optimiser, the shuffled order and validation metrics.

A ``Phase`` says what trains and on which batches; ``fit`` runs ``config.epochs`` epochs of it with
the config's schedule, checkpoints after every epoch (and on Ctrl-C), resumes from the latest
checkpoint, and with ``keep_best`` ends on the epoch that validated best.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .. import distributed
from ..progress import SILENT, Progress
from .checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class Phase:
    """One training run of ``module``: its batches, where it checkpoints, what it reports."""

    name: str
    module: nn.Module  # what the optimiser trains (and what checkpoints hold)
    forward: Callable[[torch.Tensor], torch.Tensor]  # inputs -> logits
    batches: Callable[[int, int], Iterator[tuple[torch.Tensor, torch.Tensor]]]  # (epoch, first step)
    steps_per_epoch: int
    validate: Callable[[], dict] | None  # -> {"val_loss", "val_acc"}
    folder: Path
    train_mode: Callable[[], None]  # put the model in the mode training needs
    class_weights: torch.Tensor | None = None  # per-class loss weights (class_balance: loss)
    num_classes: int = 0  # for batch mixing (0: the phase's inputs cannot be mixed, e.g. pooled features)
    history: list[dict] = field(default_factory=list)


BLOCK = re.compile(r"(?:^|\.)(?:features|0)\.(\d+)\.")  # backbone.features.14.… or a suffix's 0.14.…


def parameter_groups(module: nn.Module, layer_decay: float) -> list[dict]:
    """The trainable parameters, grouped by feature block with ``lr_scale`` = layer_decay ** depth
    (depth 0 for the head and anything outside the blocks, 1 for the top block, and so on)."""
    named = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    blocks = {name: int(m.group(1)) for name, _ in named if (m := BLOCK.search(name))}
    top = max(blocks.values(), default=0)
    groups: dict[int, list] = {}
    for name, p in named:
        depth = top - blocks[name] + 1 if name in blocks else 0
        groups.setdefault(depth, []).append(p)
    return [{"params": params, "lr_scale": layer_decay ** depth} for depth, params in sorted(groups.items())]


def make_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(module, config.layer_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.schedule.lr_max, weight_decay=config.weight_decay)
    return torch.optim.SGD(groups, lr=config.schedule.lr_max, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def batch_mixer(config: TrainConfig, num_classes: int):
    """MixUp / CutMix per ``config.augment`` as a (inputs, labels) -> (inputs, soft labels) callable, or None."""
    from torchvision.transforms import v2

    spec = config.augment
    mixers = ([v2.MixUp(alpha=spec.mixup, num_classes=num_classes)] if spec.mixup else []) + \
        ([v2.CutMix(alpha=spec.cutmix, num_classes=num_classes)] if spec.cutmix else [])
    if not mixers:
        return None
    return mixers[0] if len(mixers) == 1 else v2.RandomChoice(mixers)


def class_weights(labels: torch.Tensor, num_classes: int, config: TrainConfig) -> torch.Tensor | None:
    """Inverse-frequency loss weights (mean 1 over the photos) for ``class_balance: loss``."""
    if config.class_balance == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    weights = torch.where(counts > 0, len(labels) / (num_classes * counts.clamp(min=1)), torch.zeros(()))
    return weights


def validation_metrics(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    return {"val_loss": F.cross_entropy(logits.float(), labels).item(),
            "val_acc": (logits.argmax(1) == labels).float().mean().item()}


def freeze_batchnorm(module: nn.Module) -> None:
    """Every BN in eval mode: running statistics used and kept, gamma/beta still trainable."""
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The shuffled order of epoch ``epoch``: a function of (seed, epoch) only, so a resumed run
    sees the same batches as an uninterrupted one."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def fit(phase: Phase, config: TrainConfig, progress: Progress = SILENT) -> list[dict]:
    """Train ``phase.module`` for ``config.epochs`` epochs, resuming from its latest checkpoint.

    Returns one dict per epoch (train loss/accuracy, lr, validation metrics, seconds).
    """
    optimizer = make_optimizer(phase.module, config)
    schedule = config.schedule.build(phase.steps_per_epoch, config.epochs)
    main = distributed.current().is_main  # only rank 0 writes checkpoints and reports progress
    progress = progress if main else SILENT
    state = {"phase": phase.name, "epoch": 0, "step_in_epoch": 0, "history": [], "best": None, "done": False}
    checkpoint = latest_checkpoint(phase.folder)
    distributed.require_same(checkpoint and checkpoint.name, "latest checkpoints")
    if checkpoint:
        state = load_checkpoint(checkpoint, phase.module, optimizer)
        if state["done"]:
            return state["history"]
        if main:
            log.info("resuming %s from %s", phase.name, checkpoint)
    weights = phase.class_weights.to(next(phase.module.parameters()).device) if phase.class_weights is not None else None
    mix = batch_mixer(config, phase.num_classes) if phase.num_classes else None
    progress.begin(phase.name, phase.steps_per_epoch * config.epochs,
                   state["epoch"] * phase.steps_per_epoch + state["step_in_epoch"])
    epoch, start_step = state["epoch"], state["step_in_epoch"]
    step = start_step
    try:
        while epoch < config.epochs:
            started = time.perf_counter()
            phase.train_mode()
            loss_sum = correct = seen = 0
            step = start_step
            for inputs, labels in phase.batches(epoch, start_step):
                lr = schedule(epoch * phase.steps_per_epoch + step)
                for group in optimizer.param_groups:
                    group["lr"] = lr * group.get("lr_scale", 1.0)
                # this rank's share of the mean loss over the global batch (0: all its photos unreadable)
                weight = distributed.loss_weight(len(labels), labels.device)
                if weight:
                    targets = labels
                    if mix is not None:  # soft targets; accuracy counts the larger share
                        inputs, targets = mix(inputs, labels)
                    logits = phase.forward(inputs)
                    losses = F.cross_entropy(logits.float(), targets, weight=weights,
                                             label_smoothing=config.label_smoothing, reduction="none")
                    summed = losses.sum()
                    optimizer.zero_grad(set_to_none=True)
                    (summed * weight).backward()
                    optimizer.step()
                    seen += len(labels)
                    loss_sum += summed.item()
                    correct += (logits.argmax(1) == (targets.argmax(1) if targets.dim() == 2 else labels)).sum().item()
                step += 1
                progress.advance(1, epoch=epoch + 1, loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1), lr=lr)
            loss_sum, correct, seen = distributed.sum_over_ranks(loss_sum, correct, seen)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "lr": lr if seen else schedule(epoch * phase.steps_per_epoch)}
            if phase.validate:
                row.update(phase.validate())
            row["seconds"] = time.perf_counter() - started
            state["history"].append(row)
            epoch, start_step = epoch + 1, 0
            score = row.get("val_acc", -row["train_loss"])
            state.update(epoch=epoch, step_in_epoch=0, global_step=epoch * phase.steps_per_epoch,
                         done=epoch == config.epochs)
            if state["best"] is None or score >= state["best"][1]:
                state["best"] = [checkpoint_name(state), score]
            if main:
                save_checkpoint(phase.folder, phase.module, optimizer, state)
                prune_checkpoints(phase.folder, config.keep_checkpoints, state["best"][0])
    except KeyboardInterrupt:
        progress.end()
        state.update(epoch=epoch, step_in_epoch=step, global_step=epoch * phase.steps_per_epoch + step)
        if step > start_step and main:
            path = save_checkpoint(phase.folder, phase.module, optimizer, state)
            log.warning("interrupted: saved %s; continue with --resume", path)
        raise
    progress.end()
    if config.keep_best and phase.validate and state["best"]:
        restore_best(phase, state)
    return state["history"]


def restore_best(phase: Phase, state: dict) -> None:
    """Load the weights of the epoch that validated best (they are the last ones when it was last)."""
    best_name = state["best"][0]
    if best_name != checkpoint_name(state):
        distributed.barrier()  # rank 0 has written it
        load_checkpoint(phase.folder / best_name, phase.module)
        log.info("%s: kept epoch %s, the best by validation accuracy", phase.name,
                 int(best_name[5:14]) // phase.steps_per_epoch)
