"""Exporting a binwise model file for deployment: one table of formats, one function per format.

Each format's function takes the .safetensors model file, the output path, an ``Int8Recipe`` (or
None) and the options that format lists, writes the file atomically and returns its path; one that
needs an optional package says in one line which to install. ``export_model`` refuses whatever a
format does not take. Everything inference needs
(classes, bins, preprocessing) travels inside each exported file, as in the model file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

from ..errors import BinwiseError
from .onnx_file import export_onnx
from .recipe import Int8Recipe


@dataclass(frozen=True)
class ExportFormat:
    name: str
    suffix: str  # of the default output file, beside the model
    int8_suffix: str | None  # None: the format has no int8 variant
    export: Callable[..., Path]  # (model, out, int8 recipe or None, **options) -> the written path
    int8_fields: tuple[str, ...] = ()  # the Int8Recipe fields it takes
    options: tuple[str, ...] = ()  # the other options it takes (keywords of ``export``, flags of the CLI)


def _mindspore_ckpt(model: Path, out: Path, int8: None, allow_padding_change: bool = False) -> Path:
    from ..weights.mindspore_ckpt import write_ckpt

    write_ckpt(out, model, allow_padding_change=allow_padding_change)
    return out


def _onnx(model: Path, out: Path, int8: Int8Recipe | None) -> Path:
    if int8 is None:
        return export_onnx(model, out)
    return export_onnx(model, out, int8=True, calibration_dir=int8.data, calibration_count=int8.photos,
                       calibration=int8.calibration, int8_format=int8.onnx_format, weight_range=int8.onnx_weights,
                       depthwise=int8.onnx_depthwise, first_conv=int8.onnx_first_conv,
                       activations=int8.onnx_activations)


def _tflite(model: Path, out: Path, int8: Int8Recipe | None) -> Path:
    from .tflite_file import export_tflite

    if int8 is None:
        return export_tflite(model, out)
    return export_tflite(model, out, int8=True, calibration_dir=int8.data, calibration_count=int8.photos,
                         calibration=int8.calibration)


def _mindir(model: Path, out: Path, int8: None, mindspore_python=None) -> Path:
    from .mindir_file import export_mindir

    return export_mindir(model, out, mindspore_python)


ALL_INT8_FIELDS = tuple(f.name for f in fields(Int8Recipe))
FORMATS = {f.name: f for f in (
    ExportFormat("onnx", ".onnx", ".int8.onnx", _onnx, int8_fields=ALL_INT8_FIELDS),
    ExportFormat("tflite", ".tflite", ".int8.tflite", _tflite, int8_fields=("calibration", "photos", "data")),
    ExportFormat("mindspore-ckpt", ".ckpt", None, _mindspore_ckpt, options=("allow_padding_change",)),
    ExportFormat("mindir", ".mindir", None, _mindir, options=("mindspore_python",)),
)}


def export_model(model: str | os.PathLike, format: str, out: str | os.PathLike | None = None,
                 int8: Int8Recipe | None = None, **options) -> Path:
    """Export ``model`` (a binwise .safetensors file) as ``format`` (a key of FORMATS) to ``out``
    (default: beside the model, with the format's suffix); ``int8``: quantized per the recipe.
    Returns the written path. An option the format does not take, a recipe field changed for a
    format that ignores it, or a recipe for a format without int8, is refused in one line (as
    Ultralytics' ``validate_args`` does), before anything is written."""
    if format not in FORMATS:
        raise BinwiseError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    spec = FORMATS[format]
    if int8 is not None and spec.int8_suffix is None:
        raise BinwiseError(f"--int8 does not apply to {format}; it does to "
                           f"{', '.join(f.name for f in FORMATS.values() if f.int8_suffix)}")
    not_taken = ["--" + name.replace("_", "-") for name, value in options.items()
                 if value not in (None, False) and name not in spec.options]
    if int8 is not None:
        recipe_fields = {f.name: f for f in fields(Int8Recipe)}
        not_taken += [recipe_fields[name].metadata["flag"] for name in int8.check().changed()
                      if name not in spec.int8_fields]
    if not_taken:
        raise BinwiseError(f"{format} export does not take {', '.join(not_taken)}")
    model = Path(model)
    out = Path(out) if out else model.with_suffix(spec.int8_suffix if int8 is not None else spec.suffix)
    return spec.export(model, out, int8, **{k: v for k, v in options.items() if k in spec.options})


__all__ = ["FORMATS", "ExportFormat", "Int8Recipe", "export_model", "export_onnx"]
