"""``binwise info MODEL``: what a model file holds."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="print a model file's architecture, classes, bins, "
                              "preprocessing and provenance")
    p.add_argument("model", help="a binwise .safetensors model file")
    p.add_argument("--json", action="store_true", help="print the raw metadata as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..modelfile import load_model, read_metadata

    meta = read_metadata(args.model)
    if args.json:
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return 0
    model_file = load_model(args.model)
    arch, pre, tax = meta["architecture"], meta["preprocessing"], model_file.taxonomy
    params = sum(p.numel() for p in model_file.model.parameters())
    print(f"model        {args.model}")
    print(f"architecture {arch['name']} width {arch['width_mult']} padding {arch['padding']} "
          f"dropout {arch['dropout']}")
    print(f"parameters   {params:,}")
    print(f"input        {pre['input_size']}x{pre['input_size']} (resize {pre['resize_size']}, "
          f"{pre['interpolation']}), mean {list(pre['mean'])} std {list(pre['std'])}")
    print(f"classes      {tax.num_classes}" + (f" ({tax.name})" if tax.name else ""))
    for i, en in enumerate(tax.classes_en):
        zh = f" {tax.classes_zh[i]}" if tax.classes_zh else ""
        b = tax.bin_of(i)
        print(f"  {i:4d} {en}{zh}" + (f"  -> {b.en} {b.zh}" if b else ""))
    if tax.bins:
        print("bins         " + ", ".join(f"{b.id} ({b.en} {b.zh})" for b in tax.bins))
    for section in ("provenance", "metrics"):
        if meta.get(section):
            print(f"{section:12s} " + json.dumps(meta[section], ensure_ascii=False))
    return 0
