"""``binwise check-data DIR``: what is in a dataset, and what is wrong with it."""

from __future__ import annotations

import json


def register(subparsers) -> None:
    p = subparsers.add_parser("check-data", help="class counts, unreadable photos, duplicates and sizes of a dataset")
    p.add_argument("data", nargs="?", help="dataset folder (default: $BINWISE_DATA or ../shared/data/garbage26)")
    p.add_argument("--json", action="store_true", help="print the full report as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..data.dataset import check_dataset
    from ..paths import resolve_data

    report = check_dataset(resolve_data(args.data))
    if args.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return 0
    print(f"dataset {report['root']}  ({len(report['classes'])} classes, order: {report['taxonomy']})")
    splits = report["splits"]
    print(f"{'class':28s}" + "".join(f"{s:>8s}" for s in splits))
    for name in report["classes"]:
        print(f"{name[:28]:28s}" + "".join(f"{splits[s]['per_class'][name]:8d}" for s in splits))
    print(f"{'total':28s}" + "".join(f"{splits[s]['photos']:8d}" for s in splits))
    if "sizes" in report:
        w, h = report["sizes"]["width"], report["sizes"]["height"]
        print(f"sizes: width {w['min']}-{w['max']} (median {w['median']}), height {h['min']}-{h['max']} "
              f"(median {h['median']}); {report['sizes']['shorter_side_below_224']} with a side below 224")
    print(f"unreadable: {len(report['unreadable'])}")
    for error in report["unreadable"]:
        print(f"  {error}")
    for key, title in (("duplicates_within_split", "exact duplicates inside a split"),
                       ("duplicates_across_splits", "exact duplicates across splits")):
        print(f"{title}: {len(report[key])} groups")
        for group in report[key]:
            print("  " + "  ==  ".join(group))
    near = report["near_duplicates_across_splits"]
    print(f"near-duplicates across splits (test photos with a look-alike in train, which inflates the test "
          f"score): {len(near)} pairs")
    for pair in near:
        print(f"  test: {pair['test']}  ~  train: {pair['train']}  (similarity {pair['similarity']:.3f})")
    return 0
