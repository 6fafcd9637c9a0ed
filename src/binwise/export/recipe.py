"""How an int8 export is calibrated and quantized: one typed object, whose fields also make the
``binwise export`` flags (``cli/export.py``) and are checked once, here.

Fields named ``onnx_*`` apply to ONNX alone; each format in ``export.FORMATS`` lists the fields it
takes, and ``export_model`` refuses a field set away from its default for a format that does not
take it, in one line, instead of ignoring it. The values and why they are the defaults are in
``export.onnx_file`` (CALIBRATIONS, INT8_FORMATS, WEIGHT_RANGES, CONV_PRECISIONS, ACTIVATION_RANGES).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

from ..errors import BinwiseError
from .onnx_file import (ACTIVATION_RANGES, CALIBRATIONS, CONV_PRECISIONS, DEFAULT_CALIBRATION_COUNT, INT8_FORMATS,
                        WEIGHT_RANGES, check_activation_range)


def _flag(name: str, help: str, choices: tuple[str, ...] | None = None):
    return {"flag": name, "help": help, "choices": choices}


@dataclass(frozen=True)
class Int8Recipe:
    calibration: str = field(default="lp", metadata=_flag(
        "--int8-calibration", "int8 activation ranges from the calibration photos: 'lp', each tensor's range of "
        "least quantization error (clips its rarest values; closest to fp32); 'minmax', its absolute min/max; "
        "'moving-average', a moving average of each photo's min/max (see docs/benchmarks.md)", CALIBRATIONS))
    photos: int = field(default=DEFAULT_CALIBRATION_COUNT, metadata=_flag(
        "--calibration-count", "photos used to calibrate int8 activation ranges"))
    data: Path | None = field(default=None, metadata=_flag(
        "--data", "int8 calibration photos: an ImageFolder tree (default: $BINWISE_DATA or "
        "../shared/data/garbage26; its train/ split is used)"))
    onnx_format: str = field(default="qdq", metadata=_flag(
        "--int8-format", "ONNX: qdq, standard ONNX operators only, runs in onnxruntime-web and -mobile and "
        "OpenVINO; qoperator, onnxruntime's fused operators (partly its own com.microsoft domain), faster on "
        "onnxruntime's CPU", INT8_FORMATS))
    onnx_weights: str = field(default="unsigned", metadata=_flag(
        "--int8-weights", "ONNX: 'unsigned', uint8 with a zero point per tensor (exact for weights from a uint8 "
        "file such as the ImageNet backbone's; closest to fp32); 'reduced', int8 per channel in 7 bits (faster on "
        "x86 CPUs without VNNI); 'full', int8 per channel in 8 bits (saturates in onnxruntime's x86 kernels "
        "without VNNI) (see docs/inference.md)", WEIGHT_RANGES))
    onnx_depthwise: str = field(default="float", metadata=_flag(
        "--int8-depthwise", "ONNX: leave the depthwise convolutions in float (closer to fp32 at the same speed, "
        "see docs/benchmarks.md), or quantize them too", CONV_PRECISIONS))
    onnx_first_conv: str = field(default="float", metadata=_flag(
        "--int8-first-conv", "ONNX: leave the first convolution (3.6%% of the multiply-adds) in float, the "
        "layer int8 hurt most, or quantize it too", CONV_PRECISIONS))
    onnx_activations: str = field(default="unsigned", metadata=_flag(
        "--int8-activations", "ONNX: 'unsigned', uint8 with a zero point (closest to fp32); 'symmetric', int8 "
        "with zero point 0 and float biases, the form TensorRT builds an engine from (with --int8-weights full); "
        "on onnxruntime's CPU binwise runs it as an exact simulation, slower than fp32 (see docs/inference.md)",
        ACTIVATION_RANGES))

    def check(self) -> "Int8Recipe":
        for f in fields(self):
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                raise BinwiseError(f"{f.metadata['flag']} must be one of {', '.join(choices)}, "
                                   f"got {getattr(self, f.name)!r}")
        if self.photos < 1:
            raise BinwiseError("--calibration-count must be at least 1")
        check_activation_range(self.onnx_activations, self.onnx_weights)
        return self

    def changed(self) -> list[str]:
        """The fields set away from their defaults."""
        return [f.name for f in fields(self) if getattr(self, f.name) != f.default]
