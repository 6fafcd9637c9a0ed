"""The ``binwise`` command. Each subcommand lives in its own module with ``register(subparsers)``.

Commands import their heavy dependencies (torch, onnxruntime) inside their handlers, so
``binwise --help`` is instant and the torch-free inference path stays torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ..errors import BinwiseError

# Subcommand modules, in the order ``binwise --help`` lists them.
COMMAND_MODULES = ["info", "serve", "predict", "export", "bench", "explain", "weights", "train", "evaluate", "data", "schedules"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="binwise", description="Which bin does it go in? "
                                     "Train, evaluate, export and serve MobileNetV2 garbage classifiers.")
    parser.add_argument("--version", action="version", version=f"binwise {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except BinwiseError as e:
        print(f"binwise {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"binwise {args.command}: interrupted", file=sys.stderr)
        return 130
