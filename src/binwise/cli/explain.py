"""``binwise explain MODEL IMAGE --out cam.png``: Grad-CAM, where in the photo the class was seen."""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="draw a Grad-CAM heatmap: which part of a photo made the "
                              "model choose a class")
    p.add_argument("model", help="a binwise .safetensors model file (ONNX models have no gradients)")
    p.add_argument("image", help="a photo")
    p.add_argument("--out", required=True, help="where to write the figure (PNG, JPEG, SVG, PDF): the "
                   "overlay titled with the class and its probability, beside the heatmap's colour bar")
    p.add_argument("--class", dest="class_name", metavar="NAME|INDEX",
                   help="the class to explain: index, English or Chinese name (default: the top-1 class)")
    p.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity (default 0.5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation import plots
    from ..errors import BinwiseError
    from ..inference.explain import grad_cam, overlay
    from ..evaluation.fonts import bilingual
    from ..inference.classifier import Classifier
    from .process import own_the_process

    own_the_process()
    classifier = Classifier.load(args.model)
    class_index = None if args.class_name is None else class_index_of(classifier.taxonomy, args.class_name)
    heatmap, class_index = grad_cam(classifier, args.image, class_index)
    prediction = classifier.predict(args.image, top_k=classifier.taxonomy.num_classes)
    score = next(s for s in prediction.top if s.index == class_index)
    image = overlay(args.image, heatmap, args.alpha, classifier.preprocessing)
    try:
        plots.grad_cam_figure(image, bilingual(score.en, score.zh), score.probability, args.out)
    except (OSError, ValueError) as e:
        raise BinwiseError(f"cannot write the figure ({e})", args.out) from None
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
