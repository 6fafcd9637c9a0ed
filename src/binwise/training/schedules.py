"""Per-step learning-rate schedules: the tutorial's cosine decay with linear warmup, and the
classic decays (piecewise constant, exponential, natural exponential, polynomial, inverse time).

A schedule is a function ``step -> lr`` for steps ``0 .. total_steps - 1``. The decays take
``decay_steps`` (the step count over which the rate falls by one ``decay_rate``) and ``staircase``
(decay in whole periods instead of continuously), as in TensorFlow and MindSpore. Torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

Schedule = Callable[[int], float]


def with_warmup(schedule: Schedule, lr_max: float, warmup_steps: int, lr_init: float = 0.0) -> Schedule:
    """Linear warmup from ``lr_init`` to ``lr_max`` over ``warmup_steps``, then ``schedule``
    (counting its steps from the end of the warmup)."""
    def lr(step: int) -> float:
        if step < warmup_steps:
            return lr_init + (lr_max - lr_init) * (step + 1) / warmup_steps
        return schedule(step - warmup_steps)
    return lr


def cosine(lr_max: float, total_steps: int, lr_end: float = 0.0, warmup_steps: int = 0) -> Schedule:
    """Half a cosine from ``lr_max`` down to ``lr_end`` over the steps after the warmup."""
    decay_steps = max(total_steps - warmup_steps, 1)
    return with_warmup(
        lambda s: lr_end + (lr_max - lr_end) * 0.5 * (1 + math.cos(math.pi * min(s, decay_steps) / decay_steps)),
        lr_max, warmup_steps)


def piecewise_constant(boundaries: Sequence[int], values: Sequence[float]) -> Schedule:
    """``values[i]`` for steps before ``boundaries[i]``, the last value after the last boundary."""
    if len(values) != len(boundaries) + 1:
        raise ValueError(f"{len(boundaries)} boundaries need {len(boundaries) + 1} values, got {len(values)}")
    if list(boundaries) != sorted(boundaries):
        raise ValueError(f"boundaries must increase, got {list(boundaries)}")
    return lambda step: values[sum(step >= b for b in boundaries)]


def _progress(step: int, decay_steps: int, staircase: bool) -> float:
    p = step / decay_steps
    return math.floor(p) if staircase else p


def exponential(lr_max: float, decay_rate: float, decay_steps: int, staircase: bool = False) -> Schedule:
    """``lr_max * decay_rate ** (step / decay_steps)``."""
    return lambda step: lr_max * decay_rate ** _progress(step, decay_steps, staircase)


def natural_exponential(lr_max: float, decay_rate: float, decay_steps: int, staircase: bool = False) -> Schedule:
    """``lr_max * exp(-decay_rate * step / decay_steps)``."""
    return lambda step: lr_max * math.exp(-decay_rate * _progress(step, decay_steps, staircase))


def inverse_time(lr_max: float, decay_rate: float, decay_steps: int, staircase: bool = False) -> Schedule:
    """``lr_max / (1 + decay_rate * step / decay_steps)``."""
    return lambda step: lr_max / (1 + decay_rate * _progress(step, decay_steps, staircase))


def polynomial(lr_max: float, total_steps: int, lr_end: float = 0.0, power: float = 1.0) -> Schedule:
    """``(lr_max - lr_end) * (1 - step / total_steps) ** power + lr_end``, held at ``lr_end`` after."""
    return lambda step: (lr_max - lr_end) * (1 - min(step, total_steps) / total_steps) ** power + lr_end


@dataclass
class ScheduleConfig:
    """The schedule part of a training config; ``build`` turns it into a per-step schedule."""

    name: str = "cosine"
    lr_max: float = 0.05
    lr_end: float = 0.0
    warmup_epochs: float = 0.0
    decay_rate: float = 0.5  # exponential, natural_exponential, inverse_time
    decay_epochs: float = 1.0  # exponential, natural_exponential, inverse_time
    staircase: bool = False
    power: float = 1.0  # polynomial
    boundaries_epochs: tuple[float, ...] = ()  # piecewise_constant
    lr_values: tuple[float, ...] = ()  # piecewise_constant

    def build(self, steps_per_epoch: int, epochs: int) -> Schedule:
        total = steps_per_epoch * epochs
        warmup = round(self.warmup_epochs * steps_per_epoch)
        decay_steps = max(round(self.decay_epochs * steps_per_epoch), 1)
        if self.name == "cosine":
            return cosine(self.lr_max, total, self.lr_end, warmup)
        if self.name == "piecewise_constant":
            boundaries = [round(b * steps_per_epoch) for b in self.boundaries_epochs]
            return piecewise_constant(boundaries, self.lr_values)
        decays = {"exponential": exponential, "natural_exponential": natural_exponential,
                  "inverse_time": inverse_time}
        if self.name in decays:
            decay = decays[self.name](self.lr_max, self.decay_rate, decay_steps, self.staircase)
        elif self.name == "polynomial":
            decay = polynomial(self.lr_max, max(total - warmup, 1), self.lr_end, self.power)
        else:
            raise ValueError(f"unknown schedule {self.name!r}; choose from {', '.join(SCHEDULES)}")
        return with_warmup(decay, self.lr_max, warmup) if warmup else decay


SCHEDULES = ("cosine", "piecewise_constant", "exponential", "natural_exponential", "polynomial", "inverse_time")


def sample(schedule: Schedule, total_steps: int) -> list[float]:
    return [schedule(s) for s in range(total_steps)]
