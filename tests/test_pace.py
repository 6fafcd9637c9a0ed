"""A training phase with a time budget: the plan follows the pace and the phase ends by its deadline."""

import time
from dataclasses import replace

import torch

from binwise.model.network import MobileNetV2
from binwise.training.schedules import ScheduleConfig
from binwise.training.config import HEAD
from binwise.training.head import head_phase
from binwise.training.loop import Budget, fit
from binwise.training.pace import StepPlan


def cosine_to_zero(total):
    return ScheduleConfig(name="cosine", lr_max=0.1).build(1, total)


def test_the_plan_is_cut_when_the_pace_drops_and_the_rate_still_anneals_to_zero():
    plan = StepPlan(steps_per_epoch=40, most=400, deadline=100.0)
    schedule = cosine_to_zero(400)
    plan.fit_to(0, 0.1, schedule, now=0.0)  # 0.1 s a step: 1000 steps would fit, the recipe asks for 400
    assert plan.total == 400 and plan.anchor is None
    plan._marks = [(0, 0.0)]
    clock, lrs, step = 0.0, [], 0
    while step < plan.total:
        lrs.append(plan.lr(step, schedule))
        clock += 0.1 if step < 100 else 0.5  # after 100 steps another job takes the cores
        step += 1
        plan.check(step, schedule, now=clock)
    assert plan.changes and plan.total < 400
    assert clock <= 100.0  # it ended by the deadline
    assert lrs[0] == schedule(0) and lrs[-1] < 0.01 * lrs[0]  # ended on a decayed rate
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # and never jumped up


def test_the_plan_grows_back_when_the_pace_recovers_but_never_beyond_the_recipe():
    plan = StepPlan(steps_per_epoch=10, most=100, deadline=30.0)
    schedule = cosine_to_zero(100)
    plan.fit_to(0, 1.0, schedule, now=0.0)
    assert plan.total == 30
    plan._marks = [(0, 0.0)]
    for step in range(2, 22, 2):  # much faster than planned
        plan.check(step, schedule, now=step * 0.05)
    assert plan.total == 100


def test_a_warm_up_runs_whole_before_the_rate_anneals_from_its_peak():
    plan = StepPlan(steps_per_epoch=10, most=100, warmup=10, deadline=5.0)
    schedule = ScheduleConfig(name="cosine", lr_max=0.1, warmup_epochs=1).build(10, 10)
    plan.fit_to(0, 0.1, schedule, now=0.0)
    assert plan.total == 50 and plan.anchor == 10
    assert plan.lr(5, schedule) == schedule(5) and plan.lr(10, schedule) == schedule(10) == 0.1


def test_a_phase_slowed_down_midway_ends_within_its_budget(tmp_path):
    """A real ``fit`` of a small head whose steps become ten times slower after the first epoch."""
    torch.manual_seed(0)
    x, y = torch.randn(64, 1, 16), torch.randint(0, 3, (64,))
    config = replace(HEAD, epochs=50, batch_size=4, keep_checkpoints=1, schedule=ScheduleConfig(lr_max=0.01)).validate()
    model = MobileNetV2(num_classes=3, width_mult=0.35, last_channel=16)
    phase = head_phase("head", model, x, y, None, config, tmp_path, torch.device("cpu"))
    steps = [0]

    def slowing_forward(inputs):
        steps[0] += 1
        time.sleep(0.002 if steps[0] <= 16 else 0.02)
        return model.head(inputs)

    budget_seconds = 2.0
    started = time.perf_counter()
    history = fit(replace(phase, forward=slowing_forward), config,
                  budget=Budget(started + budget_seconds, seconds_per_step=0.002))
    took = time.perf_counter() - started
    assert took <= budget_seconds * 1.1
    planned = history[-1]["planned_steps"]
    assert planned < 50 * 16 and steps[0] == planned  # it stopped where the cut plan said
    assert history[-1]["lr"] < 0.001  # on a decayed rate, not mid-schedule


def test_the_work_after_the_phase_is_reserved_and_slows_down_with_the_steps():
    schedule = cosine_to_zero(1000)
    quiet = StepPlan(steps_per_epoch=10, most=1000, deadline=100.0, after_seconds=20.0, first_pace=0.1)
    quiet.fit_to(0, 0.1, schedule, now=0.0)
    assert quiet.total == 800  # (100 - 20) / 0.1
    shared = StepPlan(steps_per_epoch=10, most=1000, deadline=100.0, after_seconds=20.0, first_pace=0.1)
    shared.fit_to(0, 0.2, schedule, now=0.0)  # twice as slow: the scoring after it will be too
    assert shared.total == 300  # (100 - 40) / 0.2


def test_the_command_line_counts_the_budget_from_the_process_start():
    import subprocess
    import sys

    script = ("import time; time.sleep(1.0); from binwise.cli.train import process_started; "
              "print(time.perf_counter() - process_started())")
    elapsed = float(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                                   check=True).stdout)
    assert 1.0 <= elapsed < 10.0
