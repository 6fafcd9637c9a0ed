"""``binwise explain MODEL IMAGE --out cam.png``: Grad-CAM, where in the photo the class was seen."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="draw a Grad-CAM heatmap: which part of a photo made the "
                              "model choose a class")
    p.add_argument("model", help="a binwise .safetensors model file (ONNX models have no gradients)")
    p.add_argument("image", help="a photo")
    p.add_argument("--out", required=True, help="where to write the overlay (PNG, JPEG, ...)")
    p.add_argument("--class", dest="class_name", metavar="NAME|INDEX",
                   help="the class to explain: index, English or Chinese name (default: the top-1 class)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import BinwiseError
    from ..explain import grad_cam, overlay
    from ..predict import Classifier

    classifier = Classifier.load(args.model)
    class_index = None if args.class_name is None else class_index_of(classifier.taxonomy, args.class_name)
    heatmap, class_index = grad_cam(classifier, args.image, class_index)
    image = overlay(args.image, heatmap, args.alpha, classifier.preprocessing)
    try:
        image.save(args.out)
    except (OSError, ValueError) as e:
        raise BinwiseError(f"cannot write the overlay ({e})", args.out) from None
    probability = classifier.predict(args.image, top_k=classifier.taxonomy.num_classes)
    score = next(s for s in probability.top if s.index == class_index)
    print(f"{args.image}: explained class {class_index} {score.en} {score.zh} "
          f"(probability {score.probability:.1%}); wrote {args.out}", file=sys.stderr)
    return 0


def class_index_of(taxonomy, name: str) -> int:
    from ..errors import BinwiseError

    if name.isdigit():
        index = int(name)
        if index < taxonomy.num_classes:
            return index
        raise BinwiseError(f"class index {index} is out of range (the model has {taxonomy.num_classes} classes)")
    names = [n.casefold() for n in taxonomy.classes_en]
    if name.casefold() in names:
        return names.index(name.casefold())
    if name in taxonomy.classes_zh:
        return taxonomy.classes_zh.index(name)
    raise BinwiseError(f"unknown class {name!r}; the classes are: {', '.join(taxonomy.classes_en)}")
