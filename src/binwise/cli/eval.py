"""``binwise eval MODEL [DATA]``: accuracy, per-class scores, bins, confusion matrices, mistakes."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a model file on a dataset's test split")
    p.add_argument("model", help="a binwise .safetensors model file, or an .onnx file from 'binwise export'")
    p.add_argument("data", nargs="?", help="dataset folder (default: $BINWISE_DATA or ../shared/data/garbage26)")
    p.add_argument("--split", default="test", choices=["test", "train", "all"], help="which photos (default: test; in a flat folder, the photos the model never trained or validated on)")
    p.add_argument("--out", metavar="DIR", help="write report.json, confusion.png, bin_confusion.png, "
                   "misclassified.png, reliability.png and risk_coverage.png here (default: eval-<model name>/ beside the model)")
    p.add_argument("--region", metavar="NAME|FILE", help="score bins and costs by this region's rules instead of "
                   "the model file's: a shipped rule set or a rule file (as binwise predict --region)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="photo-decoding threads (default: 2)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from ..evaluation.evaluate import evaluate
    from ..paths import resolve_data
    from .process import own_the_process

    own_the_process()
    model = Path(args.model)
    out = Path(args.out) if args.out else model.parent / f"eval-{model.stem}"
    report = evaluate(model, resolve_data(args.data), out, args.batch_size, args.workers, args.device, args.split,
                      args.region)
    from .train import with_interval

    print(f"{report['count']} photos  top-1 {with_interval(report['top1'], report['top1_ci95'])}  "
          f"top-5 {report['top5']:.2%}  macro F1 {report['macro_f1']:.3f}" +
          (f"  bin accuracy {with_interval(report['bin_accuracy'], report['bin_accuracy_ci95'])}"
           if "bin_accuracy" in report else ""))
    if report["excluded_as_seen"]:
        print(f"{report['excluded_as_seen']} photos the model trained or validated on were left out "
              "(--split all keeps them)")
    print(f"{'class':28s} {'precision':>9s} {'recall':>7s} {'F1':>6s} {'n':>5s}")
    for c in report["per_class"]:
        print(f"{c['class'][:28]:28s} {c['precision']:9.3f} {c['recall']:7.3f} {c['f1']:6.3f} {c['support']:5d}")
    st = report["status"]
    at = st["at_thresholds"]
    answered = f"{at['answered_accuracy']:.2%} right" if at["answered_accuracy"] is not None else "none answered"
    print(f"calibration: ECE ({st['ece_bins']} bins) {st['ece_before']:.3f} at temperature 1, "
          f"{st['ece_after']:.3f} at {st['temperature']:.3f}" + ("" if st["calibrated"] else " (uncalibrated model)"))
    print(f"status: {at['statuses']['ok']} ok, {at['statuses']['unsure']} unsure, {at['statuses']['unknown']} unknown: "
          f"{at['coverage']:.1%} answered, {answered} (min confidence {st['thresholds']['min_confidence']:.3f}, "
          f"min similarity {similarity_words(st['thresholds']['min_similarity'])})")
    cost = report.get("cost")
    if cost:
        stated = sum(len(row) for row in cost["stated_costs"].values())
        line = (f"cost of wrong bins: {cost['cost_per_photo']:.3f} per photo (binwise.taxonomy.costs"
                + (f"; {stated} stated by the {report['region']} rules)" if stated else ")"))
        if cost.get("hazardous_items"):
            low, high = cost["hazardous_miss_rate_ci95"]
            line += (f"; hazardous items sent elsewhere: {cost['hazardous_missed']} of {cost['hazardous_items']} "
                     f"({cost['hazardous_miss_rate']:.1%} [{low:.1%}-{high:.1%}]), "
                     f"{cost['hazardous_answered_ok_in_another_bin']} of them answered ok")
        print(line)
    if report["unreadable"]:
        print(f"{len(report['unreadable'])} unreadable photos skipped (named above)")
    print(f"{len(report['misclassified'])} misclassified; report and figures in {out}")
    return 0


def similarity_words(threshold: float | None) -> str:
    return "none: never unknown" if threshold is None else f"{threshold:.3f}"
