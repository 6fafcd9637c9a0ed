"""Drift: is the service being shown photos unlike the ones the model was checked on?

The model file holds the mix of its held-out photos' answers (``calibration.held_out_mix``: how many
were ok, unsure and unknown, and how many went to each top class). The service compares its own
answers with that mix, one window of ``window`` photos at a time (non-overlapping, so each window
is one test): a chi-square goodness-of-fit test of the status counts and one of the top-class
counts (classes expected fewer than ``MIN_EXPECTED`` times pooled into one cell; a small window
pools most of them, so the class test also asks whether the most-seen class is seen far more often
than its share allows: an exact binomial tail, times the number of classes). The window is an
alarm when either p-value is below ``false_alarm / 2`` (Bonferroni), so photos drawn like the
held-out ones raise a false alarm in at most about ``false_alarm`` of windows. The p-values use the
Wilson-Hilferty normal approximation of the chi-square distribution, close enough at these tails
(the tests check the false-alarm rate by simulation) and free of a SciPy dependency.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from ..model.status import STATUSES, binomial_tail

MIN_EXPECTED = 5.0  # a chi-square cell needs about this many expected photos


@dataclass(frozen=True)
class DriftReference:
    """The held-out answers' shares: of each status, and of each top class."""

    statuses: np.ndarray  # shares of ok, unsure, unknown (STATUSES order)
    classes: np.ndarray  # share of each top class
    photos: int  # how many held-out photos they come from

    @classmethod
    def from_calibration(cls, calibration: dict) -> "DriftReference | None":
        mix = calibration.get("held_out_mix")
        if not mix:
            return None
        statuses = np.array([mix["statuses"][s] for s in STATUSES], dtype=float)
        classes = np.array(mix["top_classes"], dtype=float)
        total = statuses.sum()
        if total <= 0 or classes.sum() <= 0:
            return None
        return cls(statuses / total, classes / classes.sum(), int(total))


def chi_square_p(observed: np.ndarray, expected_shares: np.ndarray) -> float:
    """P(a chi-square statistic at least this large) under ``expected_shares``, cells expected
    fewer than MIN_EXPECTED times pooled into one."""
    n = observed.sum()
    expected = expected_shares * n
    small = expected < MIN_EXPECTED
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    # a cell expected (almost) never and seen anyway is itself the strongest evidence of drift
    if (expected <= 1e-9).any() and observed[expected <= 1e-9].sum() > 0:
        return 0.0
    keep = expected > 1e-9
    observed, expected = observed[keep], expected[keep]
    dof = len(observed) - 1
    if dof < 1:
        return 1.0
    statistic = float(((observed - expected) ** 2 / expected).sum())
    return chi_square_survival(statistic, dof)


def most_seen_p(observed: np.ndarray, expected_shares: np.ndarray) -> float:
    """How unlikely the most over-represented class's count is: its binomial upper tail under its
    share, Bonferroni-corrected for having picked it among all classes."""
    n = int(observed.sum())
    tails = [binomial_tail(int(k), n, float(q)) for k, q in zip(observed, expected_shares) if k > q * n]
    return min(1.0, len(observed) * min(tails)) if tails else 1.0


def chi_square_survival(x: float, dof: int) -> float:
    """Wilson-Hilferty: (X / k)^(1/3) is nearly normal with mean 1 - 2/(9k), variance 2/(9k)."""
    if x <= 0:
        return 1.0
    a = 2.0 / (9.0 * dof)
    z = ((x / dof) ** (1.0 / 3.0) - (1.0 - a)) / math.sqrt(a)
    return 0.5 * math.erfc(z / math.sqrt(2.0))


class DriftMonitor:
    """Counts the answers of the current window; at its end, tests it against the reference."""

    def __init__(self, reference: DriftReference, window: int, false_alarm: float, on_change=None):
        self.reference = reference
        self.window = window
        self.false_alarm = false_alarm
        self.on_change = on_change  # called with the report when a window turns the alarm on or off
        self._lock = threading.Lock()
        self._statuses = np.zeros(len(STATUSES), dtype=np.int64)
        self._classes = np.zeros(len(reference.classes), dtype=np.int64)
        self.windows = 0
        self.alarms = 0
        self.alarm = False
        self.last: dict | None = None  # the last finished window's counts and p-values

    def add(self, status: str, top_class: int) -> None:
        with self._lock:
            self._statuses[STATUSES.index(status)] += 1
            self._classes[top_class] += 1
            if self._statuses.sum() < self.window:
                return
            statuses, classes = self._statuses.copy(), self._classes.copy()
            self._statuses[:] = 0
            self._classes[:] = 0
        self.close_window(statuses, classes)

    def close_window(self, statuses: np.ndarray, classes: np.ndarray) -> None:
        """Test one window's counts (of each status, of each top class) against the reference."""
        p_statuses = chi_square_p(statuses.astype(float), self.reference.statuses)
        p_classes = min(chi_square_p(classes.astype(float), self.reference.classes),
                        most_seen_p(classes, self.reference.classes))
        alarm = min(p_statuses, p_classes) < self.false_alarm / 2
        with self._lock:
            changed = alarm != self.alarm
            self.windows += 1
            self.alarms += alarm
            self.alarm = alarm
            self.last = {"photos": int(statuses.sum()), "p_statuses": p_statuses, "p_classes": p_classes,
                         "statuses": dict(zip(STATUSES, (statuses / statuses.sum()).round(4).tolist())),
                         "alarm": alarm}
        if changed and self.on_change is not None:
            self.on_change(self.report())

    def report(self) -> dict:
        with self._lock:
            return {"available": True, "window": self.window, "false_alarm": self.false_alarm,
                    "in_window": int(self._statuses.sum()), "windows": self.windows, "alarms": self.alarms,
                    "alarm": self.alarm, "last_window": self.last,
                    "reference": {"photos": self.reference.photos,
                                  "statuses": dict(zip(STATUSES, self.reference.statuses.round(4).tolist()))}}
