"""``binwise rebin MODEL --taxonomy RULES --out NEW``: another region's bins, same classifier."""

from __future__ import annotations


def register(subparsers) -> None:
    from ..taxonomy.files import rule_names

    p = subparsers.add_parser("rebin", help="give a model another region's bins without retraining",
                              description="Copy a model with the class-to-bin map and bins of RULES; the "
                              "classes and their probabilities stay the same.")
    p.add_argument("model", help="a binwise .safetensors model file")
    p.add_argument("--taxonomy", required=True, metavar="RULES",
                   help=f"a taxonomy file, or shipped rules: {', '.join(rule_names())}")
    p.add_argument("--out", required=True, metavar="NEW", help="the new model file")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..model.rebin import rebin

    result = rebin(args.model, args.taxonomy, args.out)
    tax = result.taxonomy
    print(f"{args.out}: {tax.num_classes} classes in {len(tax.bins)} bins ({tax.name}): "
          + ", ".join(b.en for b in tax.bins))
    return 0
