"""``binwise train [DATA]``: train a classifier; every config field is also a flag."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time

from ..training.schedules import SCHEDULES
from ..training.config import CLASS_BALANCE, MODES, OPTIMIZERS, POLICIES, PRESETS, flat_fields

# fields with a fixed set of values: --help lists them and argparse refuses others
CHOICES = {"mode": MODES, "optimizer": OPTIMIZERS, "class_balance": CLASS_BALANCE, "augment.policy": POLICIES,
           "batchnorm": ("train", "frozen"), "engine": ("auto", "onnx", "torch"),
           "data_on_device": ("auto", "yes", "no"), "schedule.name": tuple(SCHEDULES)}


def _flag(dotted: str) -> str:
    """schedule.lr_max -> --lr-max; schedule.name -> --schedule."""
    return "--" + ("schedule" if dotted == "schedule.name" else dotted.split(".")[-1].replace("_", "-"))


def _parse_optional_int(text: str) -> int | None:
    return None if text.lower() in ("none", "all") else int(text)


def _parse_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _parse_floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(",") if v.strip())


def register(subparsers) -> None:
    p = subparsers.add_parser("train", help="train a classifier on an ImageFolder dataset",
                              description="Train a MobileNetV2 classifier from pretrained weights. "
                              "Settings: --preset, then --config FILE (YAML or TOML), then the flags below.")
    p.add_argument("data", nargs="?", help="dataset folder (default: $BINWISE_DATA or ../shared/data/garbage26)")
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="starting settings (default: the preset of --mode finetune / head, else default, which is auto)")
    p.add_argument("--config", metavar="FILE", help="YAML or TOML file of config fields")
    p.add_argument("--pretrained", metavar="FILE|torchvision|URL", help="backbone weights: a file (TFLite, "
                   "MindSpore .ckpt, torchvision .pth or binwise .safetensors), torchvision (its ImageNet "
                   "MobileNetV2, downloaded once into $TORCH_HOME/hub/checkpoints) or an http(s) URL of a file "
                   "(cached there too; see docs/weights.md). Default: $BINWISE_PRETRAINED or ../shared/weights/...")
    p.add_argument("--run-dir", metavar="DIR", help="where the run is written (default: runs/<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run with its own settings")
    p.add_argument("--cache-dir", metavar="DIR", help="feature cache (default: $BINWISE_CACHE or ~/.cache/binwise)")
    p.add_argument("--taxonomy", metavar="FILE", help="classes and bins (YAML, TOML, JSON or CSV; default: "
                   "DATA/taxonomy.yaml when present); see docs/training.md")
    p.add_argument("--extra", action="append", default=[], metavar="DIR", help="more training photos: an ImageFolder "
                   "DIR/<class>/* of DATA's classes (binwise feedback export writes one); added to the training "
                   "split only, so validation and test stay comparable; repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--devices", type=_positive_int, default=1, metavar="N",
                   help="fine-tune data-parallel in N processes on this machine, one GPU each (gloo on CPU); "
                   "batch_size stays the global batch. Several machines: torchrun (docs/training.md)")
    group = p.add_argument_group("config fields (override the preset and --config)")
    for dotted, f, default in flat_fields(PRESETS["default"]):
        if isinstance(default, bool):
            kind, meta = _parse_bool, "BOOL"
        elif isinstance(default, tuple):
            kind, meta = _parse_floats, "X,Y,..."
        elif dotted == "trainable_blocks":
            kind, meta = _parse_optional_int, "N|all"
        else:
            kind, meta = {"int": int, "float": float, "str": str}[f.type], dotted.split(".")[-1].upper()
        choices = CHOICES.get(dotted)
        group.add_argument(_flag(dotted), dest=f"cfg:{dotted}", type=kind, default=argparse.SUPPRESS,
                           metavar="{" + ",".join(choices) + "}" if choices else meta, choices=choices,
                           help=f"{dotted} (default preset: {default})")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..training import distributed
    from ..paths import resolve_data, resolve_pretrained
    from ..training.config import resolve_config
    from ..training.run_spec import RunSpec

    if args.resume:
        spec = RunSpec.load(Path(args.resume))
    else:
        overrides = {k[4:]: v for k, v in vars(args).items() if k.startswith("cfg:")}
        spec = RunSpec(resolve_config(args.preset, args.config, overrides), resolve_data(args.data),
                       Path(args.run_dir or f"runs/{time.strftime('%Y%m%d-%H%M%S')}"),
                       resolve_pretrained(args.pretrained), Path(args.cache_dir) if args.cache_dir else None,
                       Path(args.taxonomy) if args.taxonomy else None, tuple(Path(e) for e in args.extra))
    if args.devices == 1:  # one process, or one of torchrun's
        stop_on_sigterm()
        try:
            return train_and_report(spec, not args.quiet)
        finally:
            distributed.leave()
    import torch.multiprocessing as mp

    distributed.check_config(spec.config, args.devices)  # before starting any process
    try:
        distributed.launch(args.devices, rank_main, spec, not args.quiet)
    except mp.ProcessExitedException as e:  # its error is printed by the process
        return e.exit_code if e.exit_code and e.exit_code > 0 else 1
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM (a scheduler, systemd, docker stop) ends training as Ctrl-C does: the phase saves a
    checkpoint where it is and says how to resume, instead of dying mid-write."""
    import signal

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def process_started() -> float:
    """``time.perf_counter()`` at this process's start (Linux; elsewhere: now), so that the time
    budget also covers Python's start-up and the imports."""
    import os

    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime, in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.perf_counter() - max(uptime - ticks / os.sysconf("SC_CLK_TCK"), 0.0)
    except (OSError, ValueError, IndexError):
        return time.perf_counter()


def with_interval(value: float, interval: list[float]) -> str:
    """94.1% [90.2-96.5] : the value and its 95% confidence interval."""
    return f"{value:.1%} [95% CI {interval[0]:.1%}-{interval[1]:.1%}]"


def rank_main(spec, show_progress: bool) -> None:
    """One process of ``--devices N``: errors are printed here and end it with status 2."""
    from ..errors import BinwiseError

    try:
        train_and_report(spec, show_progress)
    except BinwiseError as e:
        print(f"binwise train: error: {e}", file=sys.stderr)
        sys.exit(2)


def train_and_report(spec, show_progress: bool) -> int:
    from ..training import distributed
    from ..errors import BinwiseError
    from ..progress import SILENT, Several
    from ..training.run import train
    from .progress import ProgressBar

    progresses = [ProgressBar()] if show_progress else []
    if importlib.util.find_spec("tensorboard") is not None:  # the event files, when TensorBoard is installed
        from ..training.tensorboard_log import TensorBoardLog

        progresses.append(TensorBoardLog(spec.run_dir / "tensorboard"))
    try:
        metrics = train(spec, Several(*progresses) if progresses else SILENT, started=process_started())
    except BinwiseError as e:
        if e.kind == "disk_full":  # say what is kept and how to go on from it
            kept = max(spec.run_dir.glob("checkpoints/**/ckpt-*.safetensors"), key=lambda c: c.stat().st_mtime,
                       default=None)
            raise BinwiseError(f"{e}; " + (f"the last complete checkpoint is {kept}: free some space and run "
                                           f"'binwise train --resume {spec.run_dir}'" if kept else
                                           "no checkpoint was written yet: free some space and train again")) from None
        raise
    if not distributed.current().is_main:
        return 0
    if metrics["reason"]:
        print(f"chose {metrics['chosen']}: {metrics['reason']}")
    line = f"test top-1 {with_interval(metrics['test_top1'], metrics['test_top1_ci95'])}  top-5 {metrics['test_top5']:.2%}"
    if metrics.get("test_bin_accuracy") is not None:
        line += f"  bin {with_interval(metrics['test_bin_accuracy'], metrics['test_bin_accuracy_ci95'])}"
    print(f"{line}  on {metrics['test_photos']} test photos ({metrics['test_split']})  "
          f"({metrics['wall_seconds']:.1f} s)")
    if metrics["unreadable_photos"]:
        print(f"{len(metrics['unreadable_photos'])} unreadable photos skipped (named above)")
    print(f"model: {spec.run_dir / 'model.safetensors'}")
    return 0
