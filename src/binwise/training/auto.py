"""Auto mode, the default: a recipe chosen for the dataset within a time budget.

1. The probe (head mode's recipe), monitored on the validation split.
2. If validation leaves room (the probe misses more than ``ENOUGH`` of it), fine-tune within what
   is left of ``time_budget``, ending by a deadline that leaves time to score every photo once more
   (test report, calibration): by default the last blocks on cached activations of the frozen
   prefix (``finetune_last_blocks``: views and epochs planned from a measured prefix pass and step);
   with ``cached_views`` 0, the trainable blocks (``trainable_blocks`` None: the whole network) on
   photos decoded and augmented every step at ``augment.crop_size`` (``finetune_on_photos``). Either
   way the steps are re-fitted to the pace as they run (``pace``): a shared machine cuts them.
3. Keep the fine-tuned model if it fixes more validation photos than it breaks (and, with
   ``finetune_significance`` below 1, if McNemar's exact one-sided test on the photos where the two
   disagree gives p below it); otherwise the probe, retrained on all of train. The test at 0.05
   (the default until 2026-12-07) refused fine-tuning on two of six validation folds where it was
   4.7 and 1.6 points better on held-out photos; it was never worse (``tune_finetune_gate.py``).

The whole network on photos at 160 px was tried as the default (2026-12-07) and was not better
than the last blocks on two trashnet folds (88.4% / 87.9% against 88.9% / 87.9% on 404 held-out
photos each) at about three times the time: docs/benchmarks.md.

The run's metrics, the CLI summary and the model file say what was chosen and why.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import replace

import torch

from ..model.network import MobileNetV2
from .activations import finetune_on_activations, prefix_activations, suffix_logits, trainable_suffix
from .config import TrainConfig
from .context import PhaseRecord, RunContext, TrainingOutcome
from .augment import crop_side
from .calibration import model_outputs
from ..evaluation.evaluate import mcnemar_one_sided
from .finetune import finetune_blocks, freeze_backbone_except_last, frozen_prefix
from .head import cached_features, probe, probe_config, rows_of
from .loop import Budget
from .splits import Splits

log = logging.getLogger(__name__)

ENOUGH = 0.995  # probe validation accuracy above which fine-tuning is not tried
RESERVE_SECONDS = 15.0  # kept for the final evaluation's fixed costs, the model file and the figures
MIN_EPOCHS = 2  # fine-tuning on photos is tried only when this many epochs fit
EVAL_OVERHEAD = 1.15  # scoring photos costs this much more than the bare forward (decoding, batching)


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
    if config.cached_views:
        tuned = finetune_last_blocks(model, ctx, splits, details)
    else:
        tuned = finetune_on_photos(model, ctx, splits, details)
    if isinstance(tuned, str):
        return keep_probe(tuned, probe_val)
    history, tuned_right = tuned
    phases.append(PhaseRecord("finetune (train - val)", history))
    tuned_val = details["finetune_val_acc"] = max(row["val_acc"] for row in history if "val_acc" in row)
    pairs = [(probe_right[path], t) for path, t in tuned_right.items() if path in probe_right]
    fixed, broken = sum(t and not p for p, t in pairs), sum(p and not t for p, t in pairs)
    p_value = details["finetune_p_value"] = mcnemar_one_sided(fixed, broken)
    details["finetune_fixed_broken"] = [fixed, broken]
    summary = (f"fine-tuning {tuned_val:.1%} on validation against the probe's {probe_val:.1%} "
               f"({fixed} photos fixed, {broken} broken, p = {p_value:.2g})")
    if keeps_finetune(fixed, broken, config.finetune_significance):
        log.info("auto: kept the fine-tuned model: %s", summary)
        return TrainingOutcome(phases, "finetune", summary, tuned_val, details)
    return keep_probe(f"{summary}: not a significant gain", probe_val)


def finetune_last_blocks(model: MobileNetV2, ctx: RunContext, splits: Splits, details: dict
                         ) -> tuple[list[dict], dict] | str:
    """The trainable blocks fine-tuned on cached activations of the frozen prefix, planned to fit
    the time left: (history, {validation photo: right}), or why not."""
    config = ctx.config
    split = frozen_prefix(model)
    if split == 0:
        return ("fine-tuning on cached activations needs a frozen prefix "
                "(trainable_blocks below the number of blocks)")
    plan_started = time.perf_counter()
    val_acts = prefix_activations(model, ctx, splits.val, 0, split, config)
    seconds_per_view = (time.perf_counter() - plan_started) / max(len(splits.val), 1)
    seconds_per_photo_step = step_seconds(trainable_suffix(model, split), val_acts.features[:config.batch_size, 0],
                                          ctx.device)
    deadline, after, _ = scoring_deadline(model, ctx, splits)
    left = deadline - after - time.perf_counter()
    plan = fit_plan(config, len(splits.train), len(splits.val), seconds_per_view, seconds_per_photo_step, left)
    if plan is None:
        return f"fine-tuning would not fit in the {config.time_budget:.0f} s time budget"
    views, epochs, estimate = plan
    details["finetune_plan"] = {"cached_views": views, "epochs": epochs, "estimated_seconds": round(estimate, 1),
                                "seconds_left": round(left, 1)}
    log.info("auto: fine-tuning the last %d blocks on cached activations, %d views x %d epochs, about %.0f s",
             len(model.backbone.features) - split, views, epochs, estimate)
    tuned_config = replace(config, cached_views=views, epochs=epochs, keep_best=True)
    budget = Budget(deadline, seconds_per_photo_step * config.batch_size,
                    seconds_per_photo_step / 3 * len(splits.val), after)
    history = finetune_on_activations(model, ctx, splits.train, splits.val, split, tuned_config,
                                      "finetune (train - val)", "finetune", val_acts=val_acts, budget=budget)
    right = suffix_logits(trainable_suffix(model, split), val_acts.features[:, 0], ctx.device,
                          config.feature_batch_size).argmax(1).cpu() == val_acts.labels
    return history, {s.path: r for s, r in zip(val_acts.samples, right.tolist())}


def finetune_on_photos(model: MobileNetV2, ctx: RunContext, splits: Splits, details: dict
                       ) -> tuple[list[dict], dict] | str:
    """The trainable blocks (by default the whole network) fine-tuned on photos decoded and
    augmented at every step, at ``augment.crop_size``, ending by the deadline that leaves time for
    scoring every photo once more (test, calibration): (history, {validation photo: right}), or why not."""
    config = ctx.config
    model.to(ctx.device, memory_format=torch.channels_last)
    crop = crop_side(ctx.pre, config.augment)
    batch = torch.randn(config.batch_size, 3, crop, crop).contiguous(memory_format=torch.channels_last)
    step = step_seconds(model, batch, ctx.device)
    deadline, after, eval_photo = scoring_deadline(model, ctx, splits)
    steps_per_epoch = math.ceil(len(splits.train) / config.batch_size)
    left = deadline - after - time.perf_counter()
    details["finetune_plan"] = {"crop_size": crop, "seconds_per_photo_step": round(step, 5),
                                "seconds_per_eval_photo": round(eval_photo, 5), "seconds_left": round(left, 1),
                                "epochs_that_fit": round(left / (step * len(splits.train)), 1)}
    if left < MIN_EPOCHS * steps_per_epoch * step * config.batch_size:
        return f"fine-tuning would not fit in the {config.time_budget:.0f} s time budget"
    log.info("auto: fine-tuning %s at %d px, about %.1f epochs in %.0f s",
             "the whole network" if config.trainable_blocks is None else f"the last {config.trainable_blocks} blocks",
             crop, details["finetune_plan"]["epochs_that_fit"], left)
    budget = Budget(deadline, step * config.batch_size, eval_photo * len(splits.val), after)
    history = finetune_blocks(model, ctx, splits.train, splits.val, replace(config, keep_best=True),
                              "finetune (train - val)", "finetune", budget=budget)
    details["finetune_plan"]["epochs_run"] = round(history[-1]["planned_steps"] / steps_per_epoch, 2)
    val = model_outputs(model, ctx, splits.val, "finetune")
    right = (val.logits.argmax(1) == val.labels).tolist()
    return history, {s.path: r for s, r in zip(val.samples, right)}


def scoring_deadline(model: MobileNetV2, ctx: RunContext, splits: Splits) -> tuple[float, float, float]:
    """(deadline, seconds after fine-tuning, seconds per scored photo): fine-tuning and the scoring
    that follows it (every photo once more by the whole model: test report, calibration) end by the
    deadline, which keeps ``RESERVE_SECONDS`` of the budget for the model file and the figures."""
    config = ctx.config
    per_photo = eval_seconds(model, ctx.pre.input_size, config.feature_batch_size, ctx.device)
    after = per_photo * (len(splits.train) + len(splits.val) + len(splits.test))
    return ctx.started + config.time_budget - RESERVE_SECONDS, after, per_photo


def keeps_finetune(fixed: int, broken: int, significance: float) -> bool:
    """Whether fine-tuning, which fixed ``fixed`` validation photos the probe got wrong and broke
    ``broken`` it got right, is kept: more fixed than broken, and McNemar's p below ``significance``."""
    return fixed > broken and mcnemar_one_sided(fixed, broken) < significance


def step_seconds(module: torch.nn.Module, inputs: torch.Tensor, device: torch.device) -> float:
    """Seconds per photo of one training step of ``module`` on ``inputs`` (forward, backward,
    update), measured on a copy so the module is untouched."""
    if not len(inputs):
        return 0.0
    copied = copy.deepcopy(module).to(device).train()
    trainable = [p for p in copied.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=0.0)
    x = inputs.to(device).float()
    timings = []
    for _ in range(3):  # the first is a warm-up
        started = time.perf_counter()
        copied(x).float().logsumexp(1).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        timings.append(time.perf_counter() - started)
    return min(timings[1:]) / len(x)


def eval_seconds(model: MobileNetV2, size: int, batch_size: int, device: torch.device) -> float:
    """Seconds per photo of scoring one batch at ``size`` (the model's eval forward, no decoding)."""
    x = torch.randn(batch_size, 3, size, size, device=device).contiguous(memory_format=torch.channels_last)
    was_training = model.training
    model.eval()
    timings = []
    with torch.inference_mode():
        for _ in range(2):  # the first is a warm-up
            started = time.perf_counter()
            model(x)
            timings.append(time.perf_counter() - started)
    model.train(was_training)
    return timings[-1] / batch_size * EVAL_OVERHEAD


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
