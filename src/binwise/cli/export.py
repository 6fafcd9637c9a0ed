"""``binwise export MODEL --format F [--int8]``: a model file in a deployment format (see binwise.export)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from pathlib import Path

from ..export.recipe import Int8Recipe


def register(subparsers) -> None:
    from ..export import FORMATS  # torch-free: each exporter imports what it needs when it runs

    formats = list(FORMATS)
    p = subparsers.add_parser("export", help=f"export a model file for deployment ({', '.join(formats)})")
    p.add_argument("model", help="a binwise .safetensors model file")
    p.add_argument("--format", choices=formats, default="onnx", help="output format (default onnx)")
    p.add_argument("--int8", action="store_true",
                   help="quantize weights and activations to int8, calibrated on training photos ("
                   + ", ".join(name for name, f in FORMATS.items() if f.int8_suffix) + ")")
    recipe = p.add_argument_group("int8 recipe (with --int8; binwise.export.Int8Recipe)")
    for f in fields(Int8Recipe):  # one flag per field
        kind = Path if f.name == "data" else type(f.default) if f.default is not None else str
        recipe.add_argument(f.metadata["flag"], dest=f"int8:{f.name}", type=kind, choices=f.metadata["choices"],
                            default=argparse.SUPPRESS, help=f"{f.metadata['help']} (default: {f.default})")
    p.add_argument("--allow-padding-change", action="store_true",
                   help="mindspore-ckpt only: write a model with TF 'SAME' padding although the tutorial's "
                   "network pads symmetrically (it then needs pad_mode='same' convolutions)")
    p.add_argument("--mindspore-python", metavar="PYTHON", help="mindir only: a Python with MindSpore (default: "
                   "$BINWISE_MINDSPORE_PYTHON, this Python, then .venv-mindspore beside the checkout)")
    p.add_argument("--out", help="output file (default: MODEL with the format's suffix, e.g. .onnx, "
                   ".int8.onnx, .ckpt)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import BinwiseError
    from ..export import export_model

    given = {k[5:]: v for k, v in vars(args).items() if k.startswith("int8:")}
    if given and not args.int8:
        flags = ", ".join(f.metadata["flag"] for f in fields(Int8Recipe) if f.name in given)
        raise BinwiseError(f"{flags} set how --int8 quantizes; add --int8")
    out = export_model(args.model, args.format, args.out, int8=Int8Recipe(**given) if args.int8 else None,
                       allow_padding_change=args.allow_padding_change, mindspore_python=args.mindspore_python)
    print(f"wrote {out}", file=sys.stderr)
    return 0
