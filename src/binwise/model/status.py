"""Whether a prediction can be trusted: ``ok``, ``unsure`` or ``unknown``; and the numbers behind it.

Every prediction gets a status:

- ``unknown``: the photo does not look like any training photo. The score is the cosine similarity
  of the photo's pooled backbone feature to its nearest training photo (``similarity``); below
  ``min_similarity`` the photo is called unknown. Measured on garbage26 against real and synthetic
  non-garbage photos (``benchmarks/studies/unsure_unknown.py``), this separates them far better than any
  score computed from the logits (max softmax, max logit, energy), which a linear probe makes
  confident on photos unlike anything it saw.
- ``unsure``: the top class's calibrated probability is below ``min_confidence``. Its ``choices``
  are the top classes that together reach ``min_confidence`` (at most ``MAX_CHOICES``); when they all
  go in one bin, that bin is still the answer ("Glass Bottle or Glassware: recyclable either way").
- ``ok``: otherwise.

Training fits a temperature and both thresholds on held-out photos (``training.calibration``) and
stores them in the model file's ``calibration`` metadata. This module is numpy only: it runs in a
torch-free install.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

STATUSES = ("ok", "unsure", "unknown")
MAX_CHOICES = 3
# A model file without calibration (trained by an older binwise, or imported weights): unsure below
# the page's old 50% warning, and no unknown check (no reference photos to compare with).
UNCALIBRATED_MIN_CONFIDENCE = 0.5
ECE_BINS = 15
REFUTED = 0.05  # how unlikely held-out mistakes must be before they refute the calibrated accuracy


@dataclass(frozen=True)
class Thresholds:
    min_confidence: float  # calibrated top-class probability below which a prediction is unsure
    min_similarity: float | None = None  # nearest-training-photo similarity below which it is unknown
    # expected cost of the answer's bin (``BinCosts``) above which a prediction is unsure, however
    # sure its class; None: no such check (models before 2026-12-07, taxonomies without bins)
    max_cost: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class BinCosts:
    """What an answer may cost: each class's bin and ``taxonomy.costs.bin_costs`` (true bin, answered bin)."""

    class_bins: np.ndarray  # (classes,) bin index of each class
    costs: np.ndarray  # (bins, bins)
    members: np.ndarray  # (classes, bins): 1 where the class goes in the bin

    @classmethod
    def of(cls, taxonomy) -> "BinCosts | None":
        if not taxonomy.class_bins:
            return None
        from ..taxonomy.costs import bin_costs

        class_bins, costs = np.array(taxonomy.bin_index_of_classes()), bin_costs(taxonomy)
        return cls(class_bins, costs, np.eye(len(costs))[class_bins])

    def expected(self, probabilities: np.ndarray) -> np.ndarray:
        """Per row, the expected cost of answering the top class's bin: the probability of each
        bin times the cost of putting an item of that bin there."""
        p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
        answered = self.class_bins[p.argmax(1)]
        return ((p @ self.members) * self.costs[:, answered].T).sum(1)

    def realized(self, predicted: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """What each answer cost: its bin against the true class's bin."""
        return self.costs[self.class_bins[np.asarray(labels)], self.class_bins[np.asarray(predicted)]]


@dataclass(frozen=True)
class Calibration:
    """What the model file's ``calibration`` metadata holds (see ``training.calibration``)."""

    temperature: float = 1.0
    thresholds: Thresholds = Thresholds(UNCALIBRATED_MIN_CONFIDENCE)
    fitted: bool = False  # False: the defaults above, for a model file that has no calibration

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Calibration":
        stored = metadata.get("calibration")
        if not stored:
            return cls()
        optional = {k: None if stored.get(k) is None else float(stored[k]) for k in ("min_similarity", "max_cost")}
        return cls(float(stored["temperature"]), Thresholds(float(stored["min_confidence"]), **optional), fitted=True)

    def with_overrides(self, min_confidence: float | None = None, min_similarity: float | None = None
                       ) -> "Calibration":
        """The same calibration with the thresholds given here instead of the stored ones."""
        t = self.thresholds
        thresholds = Thresholds(t.min_confidence if min_confidence is None else min_confidence,
                                t.min_similarity if min_similarity is None else min_similarity, t.max_cost)
        return Calibration(self.temperature, thresholds, self.fitted)


def decide_rows(probabilities: np.ndarray, similarity: np.ndarray | None, thresholds: Thresholds,
                costs: BinCosts | None = None) -> tuple[np.ndarray, list[list[int]]]:
    """(statuses, choices) of every row of calibrated class probabilities: ``choices`` are the
    class indices each answer stands for (the top class when ok, the classes it cannot choose
    between when unsure, none when unknown)."""
    p = np.atleast_2d(np.asarray(probabilities))
    order = np.argsort(-p, axis=1, kind="stable")
    ranked = np.take_along_axis(p, order, axis=1)
    ok = ranked[:, 0] >= thresholds.min_confidence
    if thresholds.max_cost is not None and costs is not None:  # sure of the class, but a costly bin to be wrong in
        ok &= costs.expected(p) <= thresholds.max_cost
    reached = np.cumsum(ranked, axis=1) >= thresholds.min_confidence
    needed = np.where(reached.any(1), reached.argmax(1) + 1, p.shape[1])
    count = np.where(ok, 1, np.minimum(np.maximum(needed, 2), MAX_CHOICES))
    unknown = np.zeros(len(p), dtype=bool)
    if similarity is not None and thresholds.min_similarity is not None:
        unknown = np.atleast_1d(np.asarray(similarity, dtype=np.float64)) < thresholds.min_similarity
    out = np.where(unknown, "unknown", np.where(ok, "ok", "unsure")).astype(object)
    choices = [[] if unknown[i] else [int(c) for c in order[i, :count[i]]] for i in range(len(p))]
    return out, choices


def decide(probabilities: np.ndarray, similarity: float | None, thresholds: Thresholds,
           costs: BinCosts | None = None) -> tuple[str, list[int]]:
    """``decide_rows`` for one row."""
    out, choices = decide_rows(np.asarray(probabilities)[None], None if similarity is None else [similarity],
                               thresholds, costs)
    return str(out[0]), choices[0]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The temperature T minimising the negative log-likelihood of softmax(logits / T) on held-out
    photos (temperature scaling, Guo et al. 2017): a log-spaced grid, then a finer one around its
    best point. One parameter, so it cannot change which class is top."""
    labels = np.asarray(labels, dtype=np.int64)

    def nll(t: float) -> float:
        p = softmax(logits, t)[np.arange(len(labels)), labels]
        return float(-np.log(np.maximum(p, 1e-300)).mean())

    grid = np.exp(np.linspace(math.log(0.02), math.log(50), 200))
    best = grid[int(np.argmin([nll(t) for t in grid]))]
    fine = best * np.exp(np.linspace(-0.05, 0.05, 101))
    return float(fine[int(np.argmin([nll(t) for t in fine]))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by their photo counts."""
    rows = reliability(probabilities, labels, bins)
    count = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / max(count, 1)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin (lower edge excluded): photo count, mean confidence, accuracy."""
    confidence = probabilities.max(1)
    right = probabilities.argmax(1) == np.asarray(labels)
    edges = np.linspace(0, 1, bins + 1)
    rows = []
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        rows.append({"low": float(low), "high": float(high), "count": int(inside.sum()),
                     "confidence": float(confidence[inside].mean()) if inside.any() else 0.0,
                     "accuracy": float(right[inside].mean()) if inside.any() else 0.0})
    return rows


def risk_coverage(confidence: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Answering the k most confident photos, for every k: (thresholds, coverage, accuracy of the
    answered), most confident first."""
    order = np.argsort(-np.asarray(confidence), kind="stable")
    answered = np.arange(1, len(order) + 1)
    return (np.asarray(confidence)[order], answered / max(len(order), 1),
            np.cumsum(np.asarray(right)[order]) / answered)


def choose_min_confidence(confidence: np.ndarray, right: np.ndarray, target_accuracy: float) -> float:
    """The lowest threshold at which the answered photos (calibrated confidence at or above it)
    are expected to be ``target_accuracy`` correct: the most coverage that meets the target.

    Expected, by two tests that must both pass: the mean calibrated confidence of the answered
    photos (the accuracy the calibrated model predicts for them) reaches the target, and their
    mistakes on these held-out photos do not refute it (at least ``REFUTED`` likely if each answer
    were wrong with probability ``1 - target``, a one-sided binomial test). Counting mistakes alone
    cannot certify 99% on a few hundred photos: on a trashnet fold, two confident mistakes among
    162 validation photos set the threshold so high that 4% of photos were answered, where the
    calibrated rule answered 50% of 404 others at 99.5%. The count still vetoes a temperature that
    is overconfident in the tail. If no threshold passes, one just above the highest confidence
    (nothing is answered)."""
    thresholds, _, accuracy = risk_coverage(confidence, right)
    if not len(thresholds):
        return 1.0
    answered = np.arange(1, len(thresholds) + 1)
    expected = np.cumsum(thresholds) / answered
    mistakes = np.rint(answered * (1 - accuracy)).astype(np.int64)
    # a threshold answers every photo of its confidence: only the last of each run of ties counts
    group_end = np.append(thresholds[1:] != thresholds[:-1], True)
    candidates = np.flatnonzero(group_end & (expected >= target_accuracy))
    for k in candidates[::-1]:  # the lowest threshold first
        if binomial_tail(int(mistakes[k]), int(answered[k]), 1 - target_accuracy) >= REFUTED:
            return float(thresholds[k])
    return float(np.nextafter(thresholds[0], np.inf))


def binomial_tail(at_least: int, n: int, p: float) -> float:
    """P(X >= at_least) for X ~ Binomial(n, p)."""
    if at_least <= 0:
        return 1.0
    if p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    below = sum(math.exp(math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1)
                         + i * math.log(p) + (n - i) * math.log1p(-p)) for i in range(min(at_least, n + 1)))
    return max(0.0, 1.0 - below)


def choose_max_cost(expected: np.ndarray, realized: np.ndarray, target: float) -> float:
    """The largest expected cost up to which the answered held-out photos (``expected``: each
    answer's expected cost, ``realized``: what it did cost) cost at most ``target`` on average; never
    below ``target`` itself, and, when every answer fits, the largest expected cost seen (nothing
    costlier was checked)."""
    if not len(expected):
        return float(target)
    order = np.argsort(expected, kind="stable")
    mean = np.cumsum(np.asarray(realized, dtype=np.float64)[order]) / np.arange(1, len(order) + 1)
    fits = np.nonzero(mean <= target)[0]
    return float(max(target, np.asarray(expected)[order][fits.max()])) if len(fits) else float(target)


def choose_min_similarity(similarity: np.ndarray, unknown_rate: float) -> float:
    """The threshold that calls ``unknown_rate`` of these (garbage, held-out) photos unknown."""
    return float(np.quantile(np.asarray(similarity, dtype=np.float64), unknown_rate))


def statuses(probabilities: np.ndarray, similarity: np.ndarray | None, thresholds: Thresholds,
             costs: BinCosts | None = None) -> np.ndarray:
    """The status of every row (``decide_rows``, statuses only)."""
    return decide_rows(probabilities, similarity, thresholds, costs)[0]


def answered_summary(probabilities: np.ndarray, labels: np.ndarray, similarity: np.ndarray | None,
                     thresholds: Thresholds, bin_of_class: list[int] | None = None,
                     costs: BinCosts | None = None) -> dict:
    """Coverage (share with status ok), accuracy of the ok photos, and the count of each status.

    With ``bin_of_class`` (each class's bin index), also the answered bins: an ok photo, or an
    unsure one whose choices all go in one bin, answers a bin (``bin_coverage``), right when it is
    the true class's bin (``bin_answered_accuracy``)."""
    status, choices = decide_rows(probabilities, similarity, thresholds, costs)
    ok = status == "ok"
    labels = np.asarray(labels)
    right = np.asarray(probabilities).argmax(1) == labels
    summary = {"coverage": float(ok.mean()) if len(ok) else 0.0,
               "answered_accuracy": float(right[ok].mean()) if ok.any() else None,
               "answered": int(ok.sum()), "answered_correct": int(right[ok].sum()), "count": len(ok),
               "statuses": {s: int((status == s).sum()) for s in STATUSES}}
    if bin_of_class is not None:
        bins = [{bin_of_class[c] for c in chosen} for chosen in choices]
        answered = np.array([len(b) == 1 for b in bins], dtype=bool)
        bin_right = np.array([b == {bin_of_class[t]} for b, t in zip(bins, labels.tolist())], dtype=bool)
        summary.update(bin_coverage=float(answered.mean()) if len(answered) else 0.0,
                       bin_answered_accuracy=float(bin_right[answered].mean()) if answered.any() else None)
    return summary
