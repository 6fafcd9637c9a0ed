"""``binwise lr-plot``: draw learning-rate schedules."""

from __future__ import annotations


# garbage26's training photos: with a preset's batch size and validation fraction they give the
# steps per epoch ``binwise train`` takes on it.
GARBAGE26_TRAIN_PHOTOS = 2204


def register(subparsers) -> None:
    from ..training.schedules import SCHEDULES
    from ..training.config import PRESETS

    p = subparsers.add_parser("lr-plot", help="plot learning-rate schedules to a PNG")
    p.add_argument("schedules", nargs="*", metavar="SCHEDULE",
                   help=f"any of {', '.join(SCHEDULES)} (default: the preset's)")
    p.add_argument("--preset", default="default", choices=list(PRESETS),
                   help="take every value not given below from this training preset, as 'binwise train "
                   "--preset' runs it on garbage26 (default: %(default)s, what 'binwise train' runs)")
    p.add_argument("--out", default="lr.png", help="PNG file (default: lr.png)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--steps-per-epoch", type=int, help="default: garbage26's training photos at the preset's "
                   "batch size, less its validation split")
    for flag, kind in (("--lr-max", float), ("--lr-end", float), ("--warmup-epochs", float), ("--decay-rate", float),
                       ("--decay-epochs", float), ("--power", float)):
        p.add_argument(flag, type=kind)
    p.add_argument("--staircase", action="store_true", default=None)
    p.add_argument("--boundaries-epochs", help="piecewise_constant, comma-separated (e.g. 3,6)")
    p.add_argument("--lr-values", help="piecewise_constant, comma-separated (e.g. 0.05,0.01,0.001)")
    p.set_defaults(func=run)


def run(args) -> int:
    import math
    from dataclasses import fields, replace
    from pathlib import Path

    from ..errors import BinwiseError
    from ..evaluation.plots import learning_rates
    from ..training.schedules import ScheduleConfig, sample
    from ..training.config import PRESETS

    preset = PRESETS[args.preset]
    given = {f.name: getattr(args, f.name) for f in fields(ScheduleConfig)
             if f.name != "name" and getattr(args, f.name, None) is not None}
    for name in ("boundaries_epochs", "lr_values"):
        if name in given:
            try:
                given[name] = tuple(float(v) for v in given[name].split(","))
            except ValueError:
                raise BinwiseError(f"--{name.replace('_', '-')} takes comma-separated numbers, not "
                                   f"{given[name]!r}") from None
    epochs = args.epochs or preset.epochs
    steps_per_epoch = args.steps_per_epoch or math.ceil(
        GARBAGE26_TRAIN_PHOTOS * (1 - preset.val_fraction) / preset.batch_size)
    curves = {}
    for name in args.schedules or [preset.schedule.name]:
        config = replace(preset.schedule, name=name, **given)
        try:
            schedule = config.build(steps_per_epoch, epochs)
        except ValueError as e:
            raise BinwiseError(f"{name}: {e}") from None
        curves[name] = sample(schedule, steps_per_epoch * epochs)
    learning_rates(curves, Path(args.out), steps_per_epoch)
    for name, values in curves.items():
        print(f"{name:20s} first {values[0]:.5g}  middle {values[len(values) // 2]:.5g}  last {values[-1]:.5g}")
    print(f"wrote {args.out}")
    return 0
