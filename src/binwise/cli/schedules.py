"""``binwise lr-plot``: draw learning-rate schedules."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..schedules import SCHEDULES

    p = subparsers.add_parser("lr-plot", help="plot learning-rate schedules to a PNG")
    p.add_argument("schedules", nargs="*", default=["cosine"], metavar="SCHEDULE",
                   help=f"any of {', '.join(SCHEDULES)} (default: cosine)")
    p.add_argument("--out", default="lr.png", help="PNG file (default: lr.png)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--steps-per-epoch", type=int, default=138, help="default: garbage26 at batch 16")
    p.add_argument("--lr-max", type=float, default=0.05)
    p.add_argument("--lr-end", type=float, default=0.0)
    p.add_argument("--warmup-epochs", type=float, default=0.0)
    p.add_argument("--decay-rate", type=float, default=0.5)
    p.add_argument("--decay-epochs", type=float, default=2.0)
    p.add_argument("--staircase", action="store_true")
    p.add_argument("--power", type=float, default=2.0)
    p.add_argument("--boundaries-epochs", default="3,6", help="piecewise_constant (default: 3,6)")
    p.add_argument("--lr-values", default="0.05,0.01,0.001", help="piecewise_constant (default: 0.05,0.01,0.001)")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..errors import BinwiseError
    from ..plots import learning_rates
    from ..schedules import ScheduleConfig, sample

    curves = {}
    for name in args.schedules:
        config = ScheduleConfig(name=name, lr_max=args.lr_max, lr_end=args.lr_end, warmup_epochs=args.warmup_epochs,
                                decay_rate=args.decay_rate, decay_epochs=args.decay_epochs,
                                staircase=args.staircase, power=args.power,
                                boundaries_epochs=tuple(float(v) for v in args.boundaries_epochs.split(",")),
                                lr_values=tuple(float(v) for v in args.lr_values.split(",")))
        try:
            schedule = config.build(args.steps_per_epoch, args.epochs)
        except ValueError as e:
            raise BinwiseError(f"{name}: {e}") from None
        curves[name] = sample(schedule, args.steps_per_epoch * args.epochs)
    learning_rates(curves, Path(args.out), args.steps_per_epoch)
    for name, values in curves.items():
        print(f"{name:20s} first {values[0]:.5g}  middle {values[len(values) // 2]:.5g}  last {values[-1]:.5g}")
    print(f"wrote {args.out}")
    return 0
