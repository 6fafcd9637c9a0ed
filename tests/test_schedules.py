import math

import pytest

from binwise.cli import main
from binwise.training.schedules import (SCHEDULES, ScheduleConfig, cosine, exponential, inverse_time, natural_exponential, piecewise_constant, polynomial, sample)


def test_cosine_with_warmup_matches_formula():
    lr = cosine(0.05, total_steps=100, lr_end=0.001, warmup_steps=10)
    assert [lr(s) for s in range(3)] == pytest.approx([0.005, 0.010, 0.015])
    assert lr(9) == pytest.approx(0.05)
    for s in (10, 37, 55, 99):
        expected = 0.001 + (0.05 - 0.001) * 0.5 * (1 + math.cos(math.pi * (s - 10) / 90))
        assert lr(s) == pytest.approx(expected)
    assert lr(10) == pytest.approx(0.05) and lr(55) == pytest.approx((0.05 + 0.001) / 2)


def test_cosine_without_warmup_starts_at_lr_max_and_decays_monotonically():
    values = sample(cosine(0.05, 138 * 10), 138 * 10)
    assert values[0] == 0.05 and all(a >= b for a, b in zip(values, values[1:])) and values[-1] < 1e-6


def test_piecewise_constant():
    lr = piecewise_constant([10, 20], [0.1, 0.01, 0.001])
    assert [lr(s) for s in (0, 9, 10, 19, 20, 500)] == [0.1, 0.1, 0.01, 0.01, 0.001, 0.001]
    with pytest.raises(ValueError):
        piecewise_constant([10], [0.1])


@pytest.mark.parametrize("staircase", [False, True])
def test_exponential_natural_and_inverse_time(staircase):
    for s in (0, 7, 25, 60):
        p = s // 10 if staircase else s / 10
        assert exponential(0.1, 0.5, 10, staircase)(s) == pytest.approx(0.1 * 0.5 ** p)
        assert natural_exponential(0.1, 0.5, 10, staircase)(s) == pytest.approx(0.1 * math.exp(-0.5 * p))
        assert inverse_time(0.1, 0.5, 10, staircase)(s) == pytest.approx(0.1 / (1 + 0.5 * p))


def test_polynomial():
    lr = polynomial(0.1, 100, lr_end=0.01, power=2.0)
    for s in (0, 30, 99, 100, 150):
        assert lr(s) == pytest.approx(0.09 * (1 - min(s, 100) / 100) ** 2 + 0.01)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_builds_from_config(name):
    config = ScheduleConfig(name=name, lr_max=0.05, warmup_epochs=1, boundaries_epochs=(2, 4),
                            lr_values=(0.05, 0.01, 0.001))
    values = sample(config.build(steps_per_epoch=5, epochs=6), 30)
    assert len(values) == 30 and all(v > 0 for v in values)
    if name != "piecewise_constant":  # the warmup climbs to lr_max, then the decay starts from it
        assert values[0] == pytest.approx(0.01) and values[4] == pytest.approx(0.05)
        assert values[-1] < 0.05


def test_unknown_schedule_is_refused(tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown schedule"):
        ScheduleConfig(name="sawtooth").build(10, 2)
    assert main(["lr-plot", "sawtooth", "--out", str(tmp_path / "x.png")]) == 2
    assert "sawtooth" in capsys.readouterr().err


def test_lr_plot_writes_png(tmp_path, capsys):
    out = tmp_path / "lr.png"
    assert main(["lr-plot", "cosine", "exponential", "polynomial", "--warmup-epochs", "1", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "cosine" in capsys.readouterr().out


def test_lr_plot_defaults_are_the_training_presets(tmp_path, capsys):
    import math

    from binwise.training.schedules import sample
    from binwise.training.config import DEFAULT, HEAD

    for preset, config in (("default", DEFAULT), ("head", HEAD)):
        assert main(["lr-plot", "--preset", preset, "--out", str(tmp_path / f"{preset}.png")]) == 0
        steps = math.ceil(2204 * (1 - config.val_fraction) / config.batch_size)
        values = sample(config.schedule.build(steps, config.epochs), steps * config.epochs)
        line = capsys.readouterr().out.splitlines()[0]
        assert line.split()[0] == config.schedule.name and f"middle {values[len(values) // 2]:.5g}" in line
