"""The ``binwise`` command. Each subcommand lives in the module named after it (``check-data``: ``check_data``)
with ``register(subparsers)``.

Commands import their heavy dependencies (torch, onnxruntime) inside their handlers, so
``binwise --help`` is instant and the torch-free inference path stays torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from ..errors import BinwiseError

# The distribution's name: ``binwise`` on the package index is another project.
DISTRIBUTION = "binwise-sort"
# Modules only the ``train`` extra installs (training, export, weight import, running .safetensors
# models); a torch-free install names the extra instead of showing an ImportError traceback.
TRAIN_EXTRA_MODULES = {"torch", "torchvision", "kornia", "tflite", "safetensors.torch"}
# Every optional module's extra: LiteRT, which runs .tflite models, is the 'tflite' extra; psycopg,
# which reaches a PostgreSQL feedback store, the 'postgres' extra.
EXTRA_OF_MODULE = {**dict.fromkeys(TRAIN_EXTRA_MODULES, "train"), "ai_edge_litert": "tflite", "psycopg": "postgres"}

# Subcommand modules, in the order ``binwise --help`` lists them.
COMMAND_MODULES = ["info", "serve", "predict", "export", "bench", "explain", "import_weights", "train", "rebin", "eval",
                   "check_data", "lr_plot", "feedback", "review", "runs"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(prog="binwise", description="Which bin does it go in? "
                                     "Train, evaluate, export and serve MobileNetV2 garbage classifiers.")
    parser.add_argument("--version", action="version", version=f"binwise {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


class _StderrHandler(logging.Handler):
    """The library's log records as ``warning: ...`` lines on the current standard error."""

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        print(f"{level}{record.getMessage()}", file=sys.stderr)


def show_library_log() -> None:
    logger = logging.getLogger("binwise")
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        logger.addHandler(_StderrHandler())
    logger.setLevel(logging.INFO)


def keep_printable_output() -> None:
    """File names that are not valid UTF-8 (Linux keeps them as bytes; Python as lone surrogates)
    are printed with backslash escapes instead of ending the command with UnicodeEncodeError."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    keep_printable_output()
    show_library_log()
    try:
        return args.func(args) or 0
    except BinwiseError as e:
        print(f"binwise {args.command}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        extra = EXTRA_OF_MODULE.get(e.name) or EXTRA_OF_MODULE.get((e.name or "").split(".")[0])
        if extra is None:
            raise
        lacking = "this torch-free install lacks" if extra == "train" else "this install lacks"
        hint = " Exported .onnx models run without it." if extra == "train" else ""
        print(f"binwise {args.command}: error: this needs {e.name}, which {lacking}; install the '{extra}' "
              f"extra (pip install '{DISTRIBUTION}[{extra}]', or '.[{extra}]' in a checkout).{hint}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"binwise {args.command}: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # an input too large for this machine, or a memory limit set on the process
        print(f"binwise {args.command}: error: out of memory: this input needs more memory than this process may "
              "use", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # the reader went away (``binwise predict ... | head``): stop quietly, and point standard
        # output at /dev/null so that the interpreter's last flush does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
