"""Activation ranges for int8 that minimise the quantization error instead of covering every value.

Min/max calibration spends the 256 levels of a tensor on its rarest values: one photo's largest
activation sets the step for all. A narrower range clips those few values and rounds all the
others more finely. For each tensor this searches the range [lo, hi] that minimises the
expected Lp error of 8-bit quantization, p = 2.4 (Nagel et al., "A White Paper on Neural Network
Quantization", 2021, section 3.4: a little above the mean squared error, so that clipping the
outliers is penalised more than rounding). The error is computed from a histogram of the
tensor's values on the calibration photos: a value inside the range costs the mean rounding
error of a uniform step, (step / 2)^p / (p + 1); a value outside it its distance to the range, to
the power p.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

LP_NORM = 2.4
LEVELS = 256
HISTOGRAM_BINS = 2048
# the range's ends are searched as fractions of the observed min and max
CANDIDATE_FRACTIONS = np.linspace(0.3, 1.0, 36)


def lp_ranges(tensor_values: Callable[[Any], dict[str, np.ndarray]], feeds: list) -> dict[str, tuple[float, float]]:
    """(lo, hi) for every tensor that ``tensor_values(feed)`` returns, from its values over
    ``feeds`` (the calibration photos, as the runtime's input feeds). The photos are run twice,
    once for each tensor's min and max and once for its histogram, so that no photo's activations
    are kept."""
    low, high = {}, {}
    for feed in feeds:
        for name, values in tensor_values(feed).items():
            low[name] = min(low.get(name, np.inf), float(values.min()))
            high[name] = max(high.get(name, -np.inf), float(values.max()))
    # the range always holds 0, as the quantizers' do; a constant tensor keeps its min/max
    bounds = {name: (min(low[name], 0.0), max(high[name], 0.0)) for name in low}
    counts = {name: np.zeros(HISTOGRAM_BINS) for name, (lo, hi) in bounds.items() if hi - lo > 1e-6}
    for feed in feeds:
        for name, values in tensor_values(feed).items():
            if name in counts:
                counts[name] += bin_counts(values, *bounds[name])
    return {name: best_range(counts[name], *bounds[name]) if name in counts else bounds[name] for name in bounds}


def bin_counts(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """How many of ``values`` fall in each of HISTOGRAM_BINS equal bins over [low, high] (what
    np.histogram counts, three times as fast on activations)."""
    bins = ((values - np.float32(low)) * np.float32(HISTOGRAM_BINS / (high - low))).astype(np.int32)
    return np.bincount(np.clip(bins, 0, HISTOGRAM_BINS - 1, out=bins).ravel(), minlength=HISTOGRAM_BINS)


def best_range(counts: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """The range (lo, hi), each a fraction of ``low`` and ``high``, with the least Lp quantization
    error for a histogram ``counts`` of equal bins over [low, high]."""
    edges = np.linspace(low, high, len(counts) + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    best, best_error = (low, high), np.inf
    for lo in (low * CANDIDATE_FRACTIONS if low < 0 else [0.0]):
        for hi in (high * CANDIDATE_FRACTIONS if high > 0 else [0.0]):
            step = (hi - lo) / (LEVELS - 1)
            clipped = np.abs(centres - np.clip(centres, lo, hi)) ** LP_NORM
            rounded = (step / 2) ** LP_NORM / (LP_NORM + 1)
            error = float(np.sum(counts * np.where((centres < lo) | (centres > hi), clipped, rounded)))
            if error < best_error:
                best, best_error = (float(lo), float(hi)), error
    return best
