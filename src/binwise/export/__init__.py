"""Exporting a binwise model file for deployment: one table of formats, one function per format.

Each format's function takes the .safetensors model file, the output path and the options that
format understands (ignoring the others), writes the file atomically and returns its path; one
that needs an optional package says in one line which to install. Everything inference needs
(classes, bins, preprocessing) travels inside each exported file, as in the model file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import BinwiseError
from .onnx_file import export_onnx


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # of the default output file, beside the model
    int8_suffix: str | None  # None: the format has no int8 variant
    export: Callable[..., Path]


def _mindspore_ckpt(model: Path, out: Path, allow_padding_change: bool = False, **_) -> Path:
    from ..weights.mindspore_ckpt import write_ckpt

    write_ckpt(out, model, allow_padding_change=allow_padding_change)
    return out


def _onnx(model: Path, out: Path, int8: bool = False, calibration_dir=None, calibration_count=None,
          calibration: str = "lp", int8_format: str = "qdq", weight_range: str = "unsigned", depthwise: str = "float",
          first_conv: str = "float", activations: str = "unsigned", **_) -> Path:
    from .onnx_file import DEFAULT_CALIBRATION_COUNT

    return export_onnx(model, out, int8=int8, calibration_dir=calibration_dir,
                       calibration_count=calibration_count or DEFAULT_CALIBRATION_COUNT, calibration=calibration,
                       int8_format=int8_format,
                       weight_range=weight_range, depthwise=depthwise, first_conv=first_conv,
                       activations=activations)


def _tflite(model: Path, out: Path, int8: bool = False, calibration_dir=None, calibration_count=None,
            calibration: str = "lp", **_) -> Path:
    from .onnx_file import DEFAULT_CALIBRATION_COUNT
    from .tflite_file import export_tflite

    return export_tflite(model, out, int8=int8, calibration_dir=calibration_dir,
                         calibration_count=calibration_count or DEFAULT_CALIBRATION_COUNT, calibration=calibration)


def _mindir(model: Path, out: Path, mindspore_python=None, **_) -> Path:
    from .mindir_file import export_mindir

    return export_mindir(model, out, mindspore_python)


FORMATS = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", ".int8.onnx", _onnx),
    ExportFormat("tflite", ".tflite", ".int8.tflite", _tflite),
    ExportFormat("mindspore-ckpt", ".ckpt", None, _mindspore_ckpt),
    ExportFormat("mindir", ".mindir", None, _mindir),
)}


def export_model(model: str | os.PathLike, format: str, out: str | os.PathLike | None = None,
                 int8: bool = False, **options) -> Path:
    """Export ``model`` (a binwise .safetensors file) as ``format`` (a key of FORMATS) to ``out``
    (default: beside the model, with the format's suffix); returns the written path."""
    if format not in FORMATS:
        raise BinwiseError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    spec = FORMATS[format]
    if int8 and spec.int8_suffix is None:
        raise BinwiseError(f"--int8 does not apply to {format}; it does to "
                           f"{', '.join(f.name for f in FORMATS.values() if f.int8_suffix)}")
    if options.get("calibration_count") is not None and options["calibration_count"] < 1:
        raise BinwiseError("--calibration-count must be at least 1")
    model = Path(model)
    out = Path(out) if out else model.with_suffix(spec.int8_suffix if int8 else spec.suffix)
    options = {**options, "int8": int8} if spec.int8_suffix else options
    return spec.export(model, out, **options)


__all__ = ["FORMATS", "ExportFormat", "export_model", "export_onnx"]
