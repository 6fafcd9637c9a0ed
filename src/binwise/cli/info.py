"""``binwise info MODEL``: what a model file holds, for every model format binwise writes."""

from __future__ import annotations

import json
import os
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="print a model file's format, architecture, classes, bins, "
                              "preprocessing and provenance")
    p.add_argument("model", help="a binwise .safetensors model file, or an .onnx or .tflite file from 'binwise export'")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    meta, file_lines = read_model_file(Path(args.model))
    if args.json:
        print(json.dumps(meta.to_dict(), indent=2, ensure_ascii=False))
        return 0
    arch, pre, tax = meta.architecture, meta.preprocessing.to_dict(), meta.taxonomy
    print(f"model        {args.model} ({os.path.getsize(args.model) / 1e6:.1f} MB)")
    for line in file_lines:
        print(line)
    # fields a model file may leave out take MobileNetV2Config's and Preprocessing's defaults
    arch = {"width_mult": 1.0, "padding": "symmetric", "dropout": 0.0, **arch}
    print(f"architecture {arch['name']} width {arch['width_mult']} padding {arch['padding']} "
          f"dropout {arch['dropout']}")
    print(f"input        {pre['input_size']}x{pre['input_size']} (resize {pre['resize_size']}, "
          f"{pre['interpolation']}), mean {list(pre['mean'])} std {list(pre['std'])}")
    print(f"classes      {tax.num_classes}" + (f" ({tax.name})" if tax.name else ""))
    for i, en in enumerate(tax.classes_en):
        zh = f" {tax.classes_zh[i]}" if tax.classes_zh else ""
        b = tax.bin_of(i)
        print(f"  {i:4d} {en}{zh}" + (f"  -> {b.en} {b.zh}" if b else ""))
    if tax.bins:
        print("bins         " + ", ".join(f"{b.id} ({b.en} {b.zh})" for b in tax.bins))
    for section in ("export", "provenance", "metrics"):
        if getattr(meta, section):
            print(f"{section:12s} " + json.dumps(getattr(meta, section), ensure_ascii=False))
    return 0


def read_model_file(path: Path):
    """The binwise metadata of a model file (``ModelMeta``), and lines describing the file itself (format,
    parameters or graph inputs and outputs), by the runner table's entry for its suffix. Reads no
    tensors and needs no torch; the readers check the metadata (``model.metadata``)."""
    from ..inference.classifier import runner_for

    return runner_for(path).describe(path)
