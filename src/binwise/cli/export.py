"""``binwise export MODEL --format F [--int8]``: a model file in a deployment format (see binwise.export)."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    from ..export import FORMATS  # torch-free: each exporter imports what it needs when it runs

    formats = list(FORMATS)
    p = subparsers.add_parser("export", help=f"export a model file for deployment ({', '.join(formats)})")
    p.add_argument("model", help="a binwise .safetensors model file")
    p.add_argument("--format", choices=formats, default="onnx", help="output format (default onnx)")
    p.add_argument("--int8", action="store_true",
                   help="quantize weights and activations to int8, calibrated on training photos ("
                   + ", ".join(name for name, f in FORMATS.items() if f.int8_suffix) + ")")
    p.add_argument("--int8-calibration", choices=["lp", "minmax", "moving-average"], default="lp",
                   help="int8 activation ranges from the calibration photos: 'lp', each tensor's range of least "
                   "quantization error (clips its rarest values; closest to fp32); 'minmax', its absolute min/max; "
                   "'moving-average', a moving average of each photo's min/max (default: %(default)s; see "
                   "docs/benchmarks.md)")
    p.add_argument("--int8-format", choices=["qdq", "qoperator"], default="qdq",
                   help="onnx --int8: qdq (default), standard ONNX operators only, runs in onnxruntime-web and "
                   "-mobile and OpenVINO; qoperator, onnxruntime's fused operators (partly its own "
                   "com.microsoft domain), faster on onnxruntime's CPU")
    p.add_argument("--int8-weights", choices=["unsigned", "reduced", "full"], default="unsigned",
                   help="ONNX int8 weights: 'unsigned', uint8 with a zero point per tensor (exact for weights from a "
                   "uint8 file such as the ImageNet backbone's; closest to fp32); 'reduced', int8 per channel in 7 bits "
                   "(faster on x86 CPUs without VNNI); 'full', int8 per channel in 8 bits (saturates in onnxruntime's "
                   "x86 kernels without VNNI) (default: %(default)s; see docs/inference.md)")
    p.add_argument("--int8-depthwise", choices=["float", "int8"], default="float",
                   help="ONNX int8: leave the depthwise convolutions in float (closer to fp32 at the same speed, "
                   "see docs/benchmarks.md), or quantize them too (default: %(default)s)")
    p.add_argument("--int8-first-conv", choices=["float", "int8"], default="float",
                   help="ONNX int8: leave the first convolution (3.6%% of the multiply-adds) in float, the layer int8 "
                   "hurt most, or quantize it too (default: %(default)s)")
    p.add_argument("--int8-activations", choices=["unsigned", "symmetric"], default="unsigned",
                   help="ONNX int8 activations: 'unsigned', uint8 with a zero point (closest to fp32); 'symmetric', "
                   "int8 with zero point 0 and float biases, the form TensorRT builds an engine from (with "
                   "--int8-weights full); on onnxruntime's CPU binwise runs it as an exact simulation, slower "
                   "than fp32 (default: %(default)s; see docs/inference.md)")
    p.add_argument("--data", help="int8 calibration photos: an ImageFolder tree (default: $BINWISE_DATA "
                   "or ../shared/data/garbage26; its train/ split is used)")
    p.add_argument("--calibration-count", type=int, default=300,
                   help="photos used to calibrate int8 activation ranges (default 300)")
    p.add_argument("--allow-padding-change", action="store_true",
                   help="mindspore-ckpt only: write a model with TF 'SAME' padding although the tutorial's "
                   "network pads symmetrically (it then needs pad_mode='same' convolutions)")
    p.add_argument("--mindspore-python", metavar="PYTHON", help="mindir only: a Python with MindSpore (default: "
                   "$BINWISE_MINDSPORE_PYTHON, this Python, then .venv-mindspore beside the checkout)")
    p.add_argument("--out", help="output file (default: MODEL with the format's suffix, e.g. .onnx, "
                   ".int8.onnx, .ckpt)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..export import export_model

    out = export_model(args.model, args.format, args.out, int8=args.int8, calibration_dir=args.data,
                       calibration_count=args.calibration_count, calibration=args.int8_calibration,
                       allow_padding_change=args.allow_padding_change,
                       int8_format=args.int8_format, weight_range=args.int8_weights,
                       depthwise=args.int8_depthwise, first_conv=args.int8_first_conv,
                       activations=args.int8_activations,
                       mindspore_python=args.mindspore_python)
    print(f"wrote {out}", file=sys.stderr)
    return 0
