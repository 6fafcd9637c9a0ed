"""Auto mode, the default: a recipe chosen for the dataset within a time budget.

1. The probe (head mode's recipe), monitored on the validation split.
2. If validation leaves room (the probe misses more than ``ENOUGH`` of it), plan fine-tuning of the
   last blocks on cached activations (``activations``) to fit in what is left of ``time_budget``:
   the cost of a prefix pass and of a training step are measured on the validation photos, then
   epochs and views are cut until the plan fits.
3. Keep the fine-tuned model only if it is significantly better on validation than the probe
   (McNemar's exact test on the photos where the two disagree, one-sided p < ``SIGNIFICANCE``);
   otherwise the probe, retrained on all of train. A validation split of a few hundred photos
   cannot tell a gain of two or three photos from noise, and the probe is the simpler model with
   the pretrained features intact, so it is kept unless fine-tuning clearly wins.

The run's metrics, the CLI summary and the model file say what was chosen and why.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import replace

import torch

from ..model import MobileNetV2
from .activations import finetune_on_activations, prefix_activations, suffix_logits, trainable_suffix
from .config import TrainConfig
from .context import PhaseRecord, RunContext, TrainingOutcome
from .finetune import freeze_backbone_except_last, frozen_prefix
from .head import cached_features, probe, probe_config, rows_of
from .splits import Splits

log = logging.getLogger(__name__)

ENOUGH = 0.995  # probe validation accuracy above which fine-tuning is not tried
SIGNIFICANCE = 0.05  # how unlikely fine-tuning's validation gain must be under "no real difference"
RESERVE_SECONDS = 15.0  # kept for the final evaluation's fixed costs, the model file and the figures


def train_auto(model: MobileNetV2, ctx: RunContext, splits: Splits) -> TrainingOutcome:
    config = ctx.config
    head_config = probe_config(config)
    features = cached_features(model, ctx, splits.train + splits.val, head_config)
    phases: list[PhaseRecord] = []

    def keep_probe(reason: str, val_acc: float | None) -> TrainingOutcome:
        model.load_state_dict(pretrained)
        history = probe(model, ctx, features, splits.train + splits.val, [], head_config, "head (all train)", "probe-final")
        phases.append(PhaseRecord("head (all train)", history))
        log.info("auto: kept the probe: %s", reason)
        return TrainingOutcome(phases, "head", reason, val_acc, details, trained_on_val=bool(splits.val))

    pretrained = copy.deepcopy(model.state_dict())
    details: dict = {"probe_val_acc": None, "finetune_val_acc": None, "finetune_plan": None}
    if not splits.val:
        return keep_probe("no validation split to choose by (val_fraction is 0)", None)
    history = probe(model, ctx, features, splits.train, splits.val, head_config, "head (train - val)", "probe")
    phases.append(PhaseRecord("head (train - val)", history))
    probe_val = details["probe_val_acc"] = history[-1]["val_acc"]
    val_rows = rows_of(features, splits.val)
    with torch.inference_mode():
        right = model.head.eval()(features.features[val_rows, 0].to(ctx.device)).argmax(1).cpu() \
            == features.labels[val_rows]
    probe_right = dict(zip((s.path for s, keep in zip(features.samples, val_rows) if keep), right.tolist()))
    if probe_val >= ENOUGH:
        return keep_probe(f"it reaches {probe_val:.1%} on validation, little left for fine-tuning to add", probe_val)

    freeze_backbone_except_last(model, config.trainable_blocks)
    split = frozen_prefix(model)
    if split == 0:
        return keep_probe("auto mode fine-tunes on cached activations, which needs a frozen prefix "
                          "(trainable_blocks below the number of blocks)", probe_val)
    plan_started = time.perf_counter()
    val_acts = prefix_activations(model, ctx, splits.val, 0, split, config)
    seconds_per_view = (time.perf_counter() - plan_started) / max(len(splits.val), 1)
    seconds_per_photo_step = step_seconds(model, split, val_acts.features[:, 0], config, ctx.device)
    left = config.time_budget - (time.perf_counter() - ctx.started) - RESERVE_SECONDS \
        - seconds_per_view * len(splits.test)
    plan = fit_plan(config, len(splits.train), len(splits.val), seconds_per_view, seconds_per_photo_step, left)
    if plan is None:
        return keep_probe(f"fine-tuning would not fit in the {config.time_budget:.0f} s time budget", probe_val)
    views, epochs, estimate = plan
    details["finetune_plan"] = {"cached_views": views, "epochs": epochs, "estimated_seconds": round(estimate, 1),
                                "seconds_left": round(left, 1)}
    log.info("auto: probe %.1f%% on validation; fine-tuning the last %d blocks, %d views x %d epochs, about %.0f s",
             100 * probe_val, len(model.backbone.features) - split, views, epochs, estimate)
    tuned_config = replace(config, cached_views=views, epochs=epochs, keep_best=True)
    history = finetune_on_activations(model, ctx, splits.train, splits.val, split, tuned_config,
                                      "finetune (train - val)", "finetune", val_acts=val_acts)
    phases.append(PhaseRecord("finetune (train - val)", history))
    tuned_val = details["finetune_val_acc"] = max(row["val_acc"] for row in history)
    tuned = suffix_logits(trainable_suffix(model, split), val_acts.features[:, 0], ctx.device, config.feature_batch_size).argmax(1).cpu() \
        == val_acts.labels
    pairs = [(probe_right[s.path], t) for s, t in zip(val_acts.samples, tuned.tolist()) if s.path in probe_right]
    fixed, broken = sum(t and not p for p, t in pairs), sum(p and not t for p, t in pairs)
    p_value = details["finetune_p_value"] = mcnemar_one_sided(fixed, broken)
    details["finetune_fixed_broken"] = [fixed, broken]
    summary = (f"fine-tuning {tuned_val:.1%} on validation against the probe's {probe_val:.1%} "
               f"({fixed} photos fixed, {broken} broken, p = {p_value:.2g})")
    if fixed > broken and p_value < SIGNIFICANCE:
        log.info("auto: kept the fine-tuned model: %s", summary)
        return TrainingOutcome(phases, "finetune", summary, tuned_val, details)
    return keep_probe(f"{summary}: not a significant gain", probe_val)


def mcnemar_one_sided(fixed: int, broken: int) -> float:
    """P(at least ``fixed`` of the ``fixed + broken`` disagreements go fine-tuning's way) if each
    went either way with probability 1/2: McNemar's exact test, one-sided."""
    n = fixed + broken
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(fixed, n + 1)) / 2 ** n


def step_seconds(model: MobileNetV2, split: int, activations: torch.Tensor, config: TrainConfig,
                 device: torch.device) -> float:
    """Seconds per photo of one training step of the suffix (forward, backward, update), measured
    on a copy so the model is untouched."""
    suffix = copy.deepcopy(trainable_suffix(model, split)).to(device).train()
    optimizer = torch.optim.AdamW([p for p in suffix.parameters() if p.requires_grad], lr=0.0)
    x = activations[:config.batch_size].to(device).float()
    if not len(x):
        return 0.0
    timings = []
    for _ in range(3):  # the first is a warm-up
        started = time.perf_counter()
        suffix(x).float().logsumexp(1).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - started)
    return min(timings[1:]) / len(x)


def fit_plan(config: TrainConfig, train_photos: int, val_photos: int, seconds_per_view: float,
             seconds_per_photo_step: float, seconds_left: float) -> tuple[int, int, float] | None:
    """(views, epochs, estimated seconds) of the largest plan that fits, or None: epochs are cut to
    half of ``config.epochs`` first, then views, then epochs down to 2."""
    def cost(views: int, epochs: int) -> float:
        activations = train_photos * (views + 1) * seconds_per_view
        per_epoch = train_photos * seconds_per_photo_step + val_photos * seconds_per_photo_step / 3
        return activations + epochs * per_epoch

    most_views = max(config.cached_views, 1)
    candidates = [(most_views, e) for e in range(config.epochs, max(config.epochs // 2, 2) - 1, -1)]
    candidates += [(v, max(config.epochs // 2, 2)) for v in range(most_views - 1, 0, -1)]
    candidates += [(1, e) for e in range(max(config.epochs // 2, 2) - 1, 1, -1)]
    for views, epochs in candidates:
        if cost(views, epochs) <= seconds_left:
            return views, epochs, cost(views, epochs)
    return None
