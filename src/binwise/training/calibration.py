"""Fitting a model's temperature and status thresholds on photos it did not train on.

What the thresholds are for is in ``binwise.model.status``. Which held-out photos score the final model,
honestly, depends on how it was trained:

- the final model never saw the validation split (fine-tuning kept by auto mode, or
  ``retrain_on_all: false``): its outputs on the validation photos;
- the probe refit on train + val (head mode, auto mode keeping the probe): every photo it trained
  on is scored by a probe trained without it, ``calibration_folds``-fold cross-validation on the
  cached features with the final probe's recipe. Each fold's probe sees (k-1)/k of the photos, so
  it is slightly weaker than the final one and the thresholds err on the careful side; 2,204
  cross-validated garbage26 photos also choose a 99% threshold far more steadily than the 220 of
  validation alone;
- fine-tuning refit on train + val: the outputs on validation of the model trained without it
  (the same recipe, not the same weights; documented as such in the model file).

The unknown score of a held-out photo is its similarity to the nearest photo of the *training*
side of its split (the other folds), so no photo is compared with itself. Then, on those photos:
the temperature minimises the negative log-likelihood, ``min_similarity`` calls ``unknown_rate``
of them unknown, and ``min_confidence`` is the lowest threshold at which the remaining photos that
pass it are ``target_accuracy`` correct.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..model import status
from ..taxonomy.classes import Taxonomy
from ..taxonomy.costs import OTHER_MISTAKE
from ..data.dataset import Sample, stratified_split
from ..data.loader import predict_logits
from ..model.network import MobileNetV2
from ..model.novelty import nearest_similarity, reference_rows
from .context import RunContext, TrainingOutcome
from .head import cached_features, probe, probe_config
from .splits import Splits

log = logging.getLogger(__name__)


@dataclass
class HeldOut:
    """A model's outputs on photos it did not train on."""

    logits: np.ndarray  # (N, classes)
    labels: np.ndarray  # (N,)
    similarity: np.ndarray  # (N,) to the nearest photo it trained on
    method: str  # in words, for the model file


@dataclass
class Outputs:
    """Logits and pooled backbone features of readable photos, in the order of ``samples``."""

    logits: np.ndarray
    features: np.ndarray
    labels: np.ndarray
    samples: list[Sample]


def calibrate(model: MobileNetV2, ctx: RunContext, splits: Splits, outcome: TrainingOutcome,
              taxonomy: Taxonomy) -> tuple[dict, torch.Tensor | None]:
    """The model file's ``calibration`` metadata and reference features for ``model`` as trained
    (``{}, None`` when no photo is held out, e.g. fine-tuning without a validation split)."""
    config = ctx.config
    fitted_on = splits.train + splits.val if outcome.trained_on_val or not splits.val else splits.train
    final = model_outputs(model, ctx, fitted_on, outcome.choice)
    if outcome.choice == "head" and (outcome.trained_on_val or not splits.val):
        held_out = cross_validated(model, ctx, final)
    elif not splits.val:
        log.info("calibration: no validation split and a fine-tuned model; predictions use the defaults")
        return {}, None
    elif outcome.held_out_state is not None:
        monitored = copy.deepcopy(model)
        monitored.load_state_dict(outcome.held_out_state)
        held_out = on_validation(monitored, ctx, splits, outcome.choice,
                                 "the validation split, scored by the model fine-tuned without it "
                                 "(the final model was then refit on train + val)")
    else:
        held_out = on_validation(model, ctx, splits, outcome.choice, "the validation split (never trained on)",
                                 train_outputs=final)
    calibration = fit(held_out, config.target_accuracy, config.unknown_rate, status.BinCosts.of(taxonomy))
    keep = reference_rows(len(final.features))
    return calibration, torch.from_numpy(final.features[keep])


def fit(held_out: HeldOut, target_accuracy: float, unknown_rate: float, costs: status.BinCosts | None = None
        ) -> dict:
    """Temperature and thresholds from held-out outputs, with what they give on those photos.

    With bins (``costs``), also the most an answer may be expected to cost (``max_cost``): the answered
    held-out photos may cost on average what answering at ``target_accuracy`` would if every
    mistake were an ordinary one (``taxonomy.costs.OTHER_MISTAKE``), so a photo likely enough to be
    hazardous is unsure even when its top class is sure."""
    temperature = status.fit_temperature(held_out.logits, held_out.labels)
    raw, calibrated = status.softmax(held_out.logits), status.softmax(held_out.logits, temperature)
    min_similarity = status.choose_min_similarity(held_out.similarity, unknown_rate)
    known = held_out.similarity >= min_similarity
    right = calibrated.argmax(1) == held_out.labels
    min_confidence = status.choose_min_confidence(calibrated.max(1)[known], right[known], target_accuracy)
    max_cost = None
    if costs is not None:
        answered = status.statuses(calibrated, held_out.similarity, status.Thresholds(min_confidence, min_similarity)) == "ok"
        max_cost = status.choose_max_cost(costs.expected(calibrated)[answered],
                                          costs.realized(calibrated.argmax(1), held_out.labels)[answered],
                                          (1 - target_accuracy) * OTHER_MISTAKE)
    thresholds = status.Thresholds(min_confidence, min_similarity, max_cost)
    summary = status.answered_summary(calibrated, held_out.labels, held_out.similarity, thresholds, costs=costs)
    log.info("calibration on %d held-out photos: temperature %.3f, min_confidence %.3f, min_similarity %.3f: "
             "%.1f%% answered, %.2f%% of them right", len(held_out.labels), temperature, min_confidence,
             min_similarity, 100 * summary["coverage"], 100 * (summary["answered_accuracy"] or 0))
    return {"temperature": temperature, **thresholds.to_dict(),
            "target_accuracy": target_accuracy, "unknown_rate": unknown_rate,
            "score": "cosine similarity of the pooled backbone feature to the nearest training photo",
            "method": held_out.method, "held_out_photos": len(held_out.labels),
            "held_out": {"ece_before": status.expected_calibration_error(raw, held_out.labels),
                         "ece_after": status.expected_calibration_error(calibrated, held_out.labels),
                         **summary},
            # what the service compares its answers with to notice drift (serving.drift)
            "held_out_mix": {"statuses": summary["statuses"],
                             "top_classes": np.bincount(calibrated.argmax(1), minlength=calibrated.shape[1]).tolist()}}


def model_outputs(model: MobileNetV2, ctx: RunContext, samples: list[Sample], choice: str) -> Outputs:
    """Logits and pooled features of ``samples``: from the feature cache for a probe (its backbone
    is the pretrained one), from the photos through the model otherwise."""
    if choice == "head":
        found = cached_features(model, ctx, samples, probe_config(ctx.config))
        pooled = found.features[:, 0]
        model.head.eval()
        with torch.inference_mode():
            logits = model.head(pooled.to(ctx.device)).cpu()
        return Outputs(logits.numpy(), pooled.numpy(), found.labels.numpy(), found.samples)

    class LogitsAndFeatures(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model  # a submodule, so predict_logits puts it in eval mode (batch norm too)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = self.model.backbone(x).mean((2, 3))
            return torch.cat([self.model.head(pooled), pooled], 1)

    both, labels, errors = predict_logits(LogitsAndFeatures(), ctx.pre, samples, ctx.config.feature_batch_size,
                                          ctx.config.workers, ctx.device)
    ctx.skipped.update(errors)
    n = model.config.num_classes
    # each error reads "<path>: <problem>" (BinwiseError); unreadable photos are few, so a scan is cheap
    readable = [s for s in samples if not any(e.startswith(f"{s.path}: ") for e in errors)]
    return Outputs(both[:, :n].numpy(), both[:, n:].numpy(), labels.numpy(), readable)


def on_validation(model: MobileNetV2, ctx: RunContext, splits: Splits, choice: str, method: str,
                  train_outputs: Outputs | None = None) -> HeldOut:
    val = model_outputs(model, ctx, splits.val, choice)
    train = train_outputs or model_outputs(model, ctx, splits.train, choice)
    return HeldOut(val.logits, val.labels, nearest_similarity(val.features, train.features), method)


def cross_validated(model: MobileNetV2, ctx: RunContext, photos: Outputs) -> HeldOut:
    """Out-of-fold logits and similarities of every photo in ``photos``: each scored by a probe
    (head mode's recipe) trained on the other folds, against the other folds' features."""
    config = ctx.config
    folds = config.calibration_folds
    features = cached_features(model, ctx, photos.samples, probe_config(config))
    parts, rest = [], photos.samples
    for k in range(folds, 1, -1):  # stratified: 1/k of what is left, so every fold gets 1/folds
        rest, part = stratified_split(rest, 1 / k, config.seed + k)
        parts.append(part)
    parts.append(rest)
    position = {s.path: i for i, s in enumerate(photos.samples)}
    logits = np.zeros_like(photos.logits)
    similarity = np.zeros(len(photos.samples), dtype=np.float32)
    scratch = copy.deepcopy(model)  # the probes train its head; the final model stays as it is
    for k, part in enumerate(parts):
        held = np.array(sorted(position[s.path] for s in part), dtype=np.int64)
        others = np.setdiff1d(np.arange(len(photos.samples)), held)
        probe(scratch, ctx, features, [photos.samples[i] for i in others], [], probe_config(config),
              f"calibration fold {k + 1}/{folds}", f"calibration-fold{k + 1}")
        scratch.head.eval()
        with torch.inference_mode():  # features.samples is photos.samples: the same photos, same order
            logits[held] = scratch.head(features.features[held, 0].to(ctx.device)).cpu().numpy()
        similarity[held] = nearest_similarity(photos.features[held], photos.features[others])
    return HeldOut(logits, photos.labels, similarity,
                   f"{folds}-fold cross-validation of the probe on the {len(photos.samples)} photos it trained on")
