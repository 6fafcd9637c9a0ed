"""``binwise import-weights SRC --out MODEL``: any supported weights file (local, ``torchvision`` or a
URL) to a binwise model file."""

from __future__ import annotations

from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("import-weights", help="convert MobileNetV2 weights (TFLite, MindSpore .ckpt, "
                              "torchvision .pth) into a binwise model file")
    p.add_argument("src", help="the weights file (its format is told from its content, not its name), "
                   "torchvision (its ImageNet MobileNetV2, downloaded once) or an http(s) URL of a file")
    p.add_argument("--out", required=True, help="the binwise model file to write (.safetensors)")
    p.add_argument("--classes", help="class names: a preset (garbage26) or a text file with one class "
                   "name per line. Default: ImageNet for 1000 outputs, garbage26 for 26")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model.file import save_model
    from ..weights import detect_format, import_weights
    from ..downloads import local_file

    taxonomy = load_classes(args.classes) if args.classes else None
    src = local_file(args.src)
    model_file = import_weights(src, taxonomy)
    save_model(args.out, model_file)
    config, tax = model_file.model.config, model_file.taxonomy
    params = sum(p.numel() for p in model_file.model.parameters())
    print(f"imported {src} ({detect_format(src)}) -> {args.out}: MobileNetV2 width "
          f"{config.width_mult}, {tax.num_classes} classes" + (f" ({tax.name})" if tax.name else "") +
          f", padding {config.padding}, {params:,} parameters")
    return 0


def load_classes(spec: str):
    """A preset name, or a UTF-8 text file with one class name per line (blank lines ignored)."""
    from ..errors import BinwiseError
    from ..taxonomy.classes import PRESETS, Taxonomy

    if spec in PRESETS:
        return PRESETS[spec]
    path = Path(spec)
    if not path.is_file():
        raise BinwiseError(f"--classes is neither a preset ({', '.join(PRESETS)}) nor a file", path)
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise BinwiseError("class names file is not UTF-8 text", path) from None
    if not names:
        raise BinwiseError("class names file is empty", path)
    if len(set(names)) != len(names):
        raise BinwiseError("class names file lists a class twice", path)
    return Taxonomy.from_names(names, name=path.stem)
