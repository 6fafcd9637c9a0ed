"""``binwise export MODEL --format onnx [--int8]``: a model file as ONNX (or a MindSpore checkpoint)."""

from __future__ import annotations

import sys
from pathlib import Path

FORMATS = ("onnx", "mindspore-ckpt")


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a model file to ONNX (fp32 or int8) or a MindSpore checkpoint")
    p.add_argument("model", help="a binwise .safetensors model file")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="output format (default onnx)")
    p.add_argument("--int8", action="store_true",
                   help="ONNX only: quantize weights and activations to int8, calibrated on training photos")
    p.add_argument("--data", help="int8 calibration photos: an ImageFolder tree (default: $BINWISE_DATA "
                   "or ../shared/data/garbage26; its train/ split is used)")
    p.add_argument("--calibration-count", type=int, default=300,
                   help="photos used to calibrate int8 activation ranges (default 300)")
    p.add_argument("--allow-padding-change", action="store_true",
                   help="mindspore-ckpt only: write a model with TF 'SAME' padding although the tutorial's "
                   "network pads symmetrically (it then needs pad_mode='same' convolutions)")
    p.add_argument("--out", help="output file (default: MODEL with .onnx, .int8.onnx or .ckpt)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import BinwiseError

    if args.int8 and args.format != "onnx":
        raise BinwiseError("--int8 applies to --format onnx only")
    model = Path(args.model)
    if args.format == "onnx":
        from ..export import export_onnx

        out = args.out or model.with_suffix(".int8.onnx" if args.int8 else ".onnx")
        export_onnx(model, out, int8=args.int8, calibration_dir=args.data,
                    calibration_count=args.calibration_count)
    else:
        from ..weights.mindspore_ckpt import write_ckpt

        out = args.out or model.with_suffix(".ckpt")
        write_ckpt(out, model, allow_padding_change=args.allow_padding_change)
    print(f"wrote {out}", file=sys.stderr)
    return 0
