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

from . import distributed
from ..progress import SILENT, Progress
from .checkpoint import checkpoint_name, latest_checkpoint, load_checkpoint, prune_checkpoints, save_checkpoint
from .config import TrainConfig
from .pace import StepPlan

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
    """Loss weights per class for ``class_balance``: inverse class frequency (``loss``) or its square
    root (``sqrt``, halfway in log terms), scaled to mean 1 over the photos."""
    if config.class_balance == "none":
        return None
    counts = torch.bincount(labels, minlength=num_classes).float()
    raw = torch.where(counts > 0, 1 / counts.clamp(min=1), torch.zeros(()))
    if config.class_balance == "sqrt":
        raw = raw.sqrt()
    return raw * len(labels) / (raw * counts).sum()


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


@dataclass(frozen=True)
class Budget:
    """The time a phase has: it and ``after_seconds`` of work after it end by ``deadline``
    (``time.perf_counter()``); first planned at ``seconds_per_step``; ``validation_seconds``
    estimates one validation until one has run."""

    deadline: float
    seconds_per_step: float
    validation_seconds: float = 0.0
    after_seconds: float = 0.0


def fit(phase: Phase, config: TrainConfig, progress: Progress = SILENT, budget: Budget | None = None) -> list[dict]:
    """Train ``phase.module`` for ``config.epochs`` epochs, resuming from its latest checkpoint.

    With a ``budget`` the steps are planned to end by its deadline and re-fitted to the pace as it
    goes (``pace.StepPlan``): the phase may end before ``config.epochs``, mid-epoch, on a fully
    decayed learning rate, and then validates only the epochs of the second half of its plan.

    Returns one dict per epoch (train loss/accuracy, lr, validation metrics, seconds).
    """
    optimizer = make_optimizer(phase.module, config)
    schedule = config.schedule.build(phase.steps_per_epoch, config.epochs)
    plan = StepPlan(phase.steps_per_epoch, phase.steps_per_epoch * config.epochs,
                    warmup=round(config.schedule.warmup_epochs * phase.steps_per_epoch),
                    deadline=budget and budget.deadline, validation_seconds=budget.validation_seconds if budget else 0.0,
                    after_seconds=budget.after_seconds if budget else 0.0,
                    first_pace=budget.seconds_per_step if budget else 0.0)
    main = distributed.current().is_main  # only rank 0 writes checkpoints and reports progress
    progress = progress if main else SILENT
    state = {"phase": phase.name, "epoch": 0, "step_in_epoch": 0, "history": [], "best": None, "done": False}
    checkpoint = latest_checkpoint(phase.folder)
    distributed.require_same(checkpoint and checkpoint.name, "latest checkpoints")
    if checkpoint:
        state = load_checkpoint(checkpoint, phase.module, optimizer)
        if state["done"]:
            return state["history"]
        plan.restore(state.get("plan"))
        if main:
            log.info("resuming %s from %s", phase.name, checkpoint)
    weights = phase.class_weights.to(next(phase.module.parameters()).device) if phase.class_weights is not None else None
    mix = batch_mixer(config, phase.num_classes) if phase.num_classes else None
    epoch, start_step = state["epoch"], state["step_in_epoch"]
    step = start_step
    lr = plan.lr(epoch * phase.steps_per_epoch + step, schedule)
    if budget is not None:
        plan.fit_to(epoch * phase.steps_per_epoch + step, budget.seconds_per_step, schedule, time.perf_counter())
        state.setdefault("planned_first", (plan.total, len(plan.changes)))
        log.info("%s: %.1f epochs planned (at most %d) at %.2f s a step, to end in %.0f s", phase.name,
                 plan.total / phase.steps_per_epoch, config.epochs, budget.seconds_per_step,
                 budget.deadline - budget.after_seconds - time.perf_counter())
    progress.begin(phase.name, plan.total, epoch * phase.steps_per_epoch + start_step)
    plan.start(epoch * phase.steps_per_epoch + step)
    try:
        while epoch * phase.steps_per_epoch < plan.total:
            started = time.perf_counter()
            phase.train_mode()
            loss_sum = correct = seen = 0
            step = start_step
            for inputs, labels in phase.batches(epoch, start_step):
                lr = plan.lr(epoch * phase.steps_per_epoch + step, schedule)
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
                change = plan.check(epoch * phase.steps_per_epoch + step, schedule)
                if change:
                    log.debug("%s: %s", phase.name, describe_change(change, phase.steps_per_epoch))
                    progress.resize(plan.total)
                progress.advance(1, epoch=epoch + 1, loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1), lr=lr)
                if epoch * phase.steps_per_epoch + step >= plan.total:
                    global_step = epoch * phase.steps_per_epoch + step
                    break  # the plan ends here, mid-epoch or not
            else:
                global_step = (epoch + 1) * phase.steps_per_epoch
            loss_sum, correct, seen = distributed.sum_over_ranks(loss_sum, correct, seen)
            row = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                   "lr": lr if seen else schedule(epoch * phase.steps_per_epoch)}
            if budget is not None:
                row["planned_steps"] = plan.total
            other_work = time.perf_counter()  # validation and the checkpoint, apart from the pace
            if phase.validate and (budget is None or plan.validates_after(global_step)):
                row.update(phase.validate())
                plan.validation_seconds = time.perf_counter() - other_work
            row["seconds"] = time.perf_counter() - started
            state["history"].append(row)
            if main:
                progress.epoch(phase.name, row)
            epoch, start_step = epoch + 1, 0
            score = row.get("val_acc", -row["train_loss"]) if phase.validate is None or "val_acc" in row else None
            state.update(epoch=epoch, step_in_epoch=0, global_step=global_step, done=global_step >= plan.total,
                         plan=plan.saved())
            if score is not None and (state["best"] is None or score >= state["best"][1]):
                state["best"] = [checkpoint_name(state), score]
            if main:
                save_checkpoint(phase.folder, phase.module, optimizer, state)
                prune_checkpoints(phase.folder, config.keep_checkpoints, state["best"] and state["best"][0])
            plan.exclude(time.perf_counter() - other_work)
            if global_step >= plan.total:
                break
    except KeyboardInterrupt:
        progress.end()
        state.update(epoch=epoch, step_in_epoch=step, global_step=epoch * phase.steps_per_epoch + step,
                     plan=plan.saved())
        if main:
            if step > start_step:
                path = save_checkpoint(phase.folder, phase.module, optimizer, state)
                log.warning("interrupted: saved %s; continue with --resume", path)
            else:  # nothing new since the last checkpoint (the epoch had not taken a step)
                log.warning("interrupted: saved %s before; continue with --resume",
                            latest_checkpoint(phase.folder) or "nothing yet")
        raise
    progress.end()
    if budget is not None and len(plan.changes) > state["planned_first"][1]:
        first, ran = state["planned_first"][0], plan.total
        # a cut of more than a tenth is worth a warning: the run did less than it planned
        log.log(logging.WARNING if ran < 0.9 * first else logging.INFO,
                "%s: re-planned %d times as the pace changed: ran %.1f epochs of the %.1f first planned",
                phase.name, len(plan.changes) - state["planned_first"][1], ran / phase.steps_per_epoch,
                first / phase.steps_per_epoch)
    if config.keep_best and phase.validate and state["best"]:
        restore_best(phase, state)
    return state["history"]


def describe_change(change: dict, steps_per_epoch: int) -> str:
    """One log line for a re-plan."""
    verb = "cut" if change["to_steps"] < change["from_steps"] else "extended"
    return (f"{verb} the plan from {change['from_steps'] / steps_per_epoch:.1f} to "
            f"{change['to_steps'] / steps_per_epoch:.1f} epochs at {change['seconds_per_step']:.2f} s a step, "
            f"{change['seconds_left']:.0f} s before the deadline")


def restore_best(phase: Phase, state: dict) -> None:
    """Load the weights of the epoch that validated best (they are the last ones when it was last)."""
    best_name = state["best"][0]
    if best_name != checkpoint_name(state):
        distributed.barrier()  # rank 0 has written it
        load_checkpoint(phase.folder / best_name, phase.module)
        log.info("%s: kept epoch %s, the best by validation accuracy", phase.name,
                 int(best_name[5:14]) // phase.steps_per_epoch)
