"""Keeping a training phase inside its time: the pace measured as it runs, the plan fitted to it.

A phase with a deadline starts with the recipe's steps (``most``). Every quarter of an epoch it
measures the seconds per step of the steps since the last look (data loading included, so another
job on the same cores shows up within a quarter epoch), adds the validations still to run, and
fits the number of steps to the time left before the deadline: fewer when the pace drops, more
(never beyond ``most``) when it recovers. The work that follows the phase (scoring photos) is
assumed to slow down as the steps do. Whenever the plan changes, the learning rate anneals from
where it is to zero over the steps now planned (half a cosine), so a cut run still ends on a fully
decayed rate instead of stopping at a high one.

Without a deadline nothing is re-planned and the config's schedule runs unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

CHECKS_PER_EPOCH = 4  # how often the pace is looked at
SLACK = 0.05  # the plan grows only when more than this share more steps fit


@dataclass
class StepPlan:
    """How many steps a phase runs, and its learning rate at each step."""

    steps_per_epoch: int
    most: int  # what the recipe asks for: config.epochs * steps_per_epoch
    warmup: int = 0  # the schedule's warm-up steps, which run as configured
    deadline: float | None = None  # time.perf_counter() by which the phase ends, validations included
    validation_seconds: float = 0.0  # one validation, estimated until one has run
    # work after the phase that must also end by ``deadline`` (scoring photos for the model file):
    # ``after_seconds`` at ``first_pace`` seconds a step; it slows down as the steps do
    after_seconds: float = 0.0
    first_pace: float = 0.0
    total: int = 0  # steps planned now
    anchor: int | None = None  # the step where the plan last changed (None: the schedule as configured)
    anchor_lr: float = 0.0  # the learning rate there, annealed to zero from it
    changes: list[dict] = field(default_factory=list)  # every re-plan, for the log and metrics.json
    _marks: list[tuple[int, float]] = field(default_factory=list)  # (step, training clock) at each look
    _excluded: float = 0.0  # seconds of validation and checkpoints so far, left out of the pace

    def __post_init__(self):
        self.total = self.total or self.most

    def lr(self, step: int, schedule: Callable[[int], float]) -> float:
        if self.anchor is None or step < self.anchor:
            return schedule(step)
        span = max(self.total - self.anchor, 1)
        return self.anchor_lr * 0.5 * (1 + math.cos(math.pi * min(step - self.anchor, span) / span))

    def validates_after(self, step: int) -> bool:
        """Whether the epoch ending at ``step`` is validated: the second half of the plan and its
        last step (the best epoch is chosen among those; early epochs would not be kept anyway)."""
        return step >= self.total or 2 * step >= self.total

    def start(self, step: int) -> None:
        """Training (re)starts at ``step``: the pace is measured from here."""
        self._marks = [(step, self._clock())]

    def exclude(self, seconds: float) -> None:
        """``seconds`` just spent on other work (validation, checkpoints): not part of the pace."""
        self._excluded += seconds

    def check(self, step: int, schedule: Callable[[int], float], now: float | None = None) -> dict | None:
        """Look at the pace at ``step`` (every ``steps_per_epoch / CHECKS_PER_EPOCH`` steps) and fit
        the plan to the time left; returns the change made, or None.

        The pace is that of the last epoch's worth of steps: it holds one epoch's start-up (data
        workers) at its true share, and follows a change of load within an epoch."""
        if self.deadline is None or not self._marks:
            return None
        every = max(self.steps_per_epoch // CHECKS_PER_EPOCH, 1)
        if step - self._marks[-1][0] < every:
            return None
        now = time.perf_counter() if now is None else now
        self._marks.append((step, now - self._excluded))
        while len(self._marks) > 2 and step - self._marks[1][0] >= self.steps_per_epoch:
            self._marks.pop(0)
        first_step, first_time = self._marks[0]
        pace = (self._marks[-1][1] - first_time) / (step - first_step)
        return self.fit_to(step, pace, schedule, now)

    def _clock(self) -> float:
        return time.perf_counter() - self._excluded

    def fit_to(self, step: int, pace: float, schedule: Callable[[int], float], now: float) -> dict | None:
        """Plan as many steps as fit before the deadline at ``pace`` seconds per step. The rate
        anneals from the one at ``step`` (from the end of the warm-up, when still in it)."""
        slowdown = pace / self.first_pace if self.first_pace > 0 else 1.0
        left = self.deadline - self.after_seconds * slowdown - now
        # validations still to come: the epochs ending in the second half of the plan, and the last
        epochs_left = math.ceil(max(self.total - step, 0) / self.steps_per_epoch)
        validations = min(epochs_left, math.ceil(self.total / self.steps_per_epoch / 2)) + 1
        fits = max(int((left - validations * self.validation_seconds) / max(pace, 1e-9)), 0)
        wanted = max(min(step + fits, self.most), step)
        # cut whenever the plan overruns; grow only by more than SLACK, so noise does not re-plan
        if wanted == self.total or self.total < wanted <= self.total * (1 + SLACK):
            return None
        change = {"at_step": step, "from_steps": self.total, "to_steps": wanted,
                  "seconds_per_step": round(pace, 4), "seconds_left": round(left, 1)}
        anchor = max(step, min(self.warmup, wanted))
        self.anchor_lr, self.anchor, self.total = self.lr(anchor, schedule), anchor, wanted
        self.changes.append(change)
        return change

    def saved(self) -> dict:
        return {"total": self.total, "anchor": self.anchor, "anchor_lr": self.anchor_lr, "changes": self.changes}

    def restore(self, saved: dict | None) -> None:
        if saved:
            self.total, self.anchor, self.anchor_lr = saved["total"], saved["anchor"], saved["anchor_lr"]
            self.changes = list(saved.get("changes", []))
