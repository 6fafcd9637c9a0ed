"""``binwise runs compare RUN_A RUN_B``: what changed between two training runs."""

from __future__ import annotations

import json
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser("runs", help="compare training runs: data, settings, metrics and the photos "
                              "one gets right and the other wrong")
    commands = p.add_subparsers(dest="runs_command", metavar="COMMAND", required=True)
    compare = commands.add_parser("compare", help="what changed between two run directories")
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    compare.add_argument("--most", type=int, default=20, help="photos listed each way (default 20)")
    compare.add_argument("--json", action="store_true", help="print the comparison as JSON")
    compare.set_defaults(func=run)


def run(args) -> int:
    from ..evaluation.compare import compare_runs

    result = compare_runs(args.run_a, args.run_b, args.most)
    if args.json:
        print(json.dumps(result, indent=2, ensure_ascii=False))
        return 0
    print(f"A {result['runs'][0]}\nB {result['runs'][1]}")
    print("settings     " + ("the same" if not result["settings"] else ""))
    for key, (a, b) in result["settings"].items():
        print(f"  {key}: {a} -> {b}")
    print("photos       split: A / B (only in A, only in B)")
    for split, row in result["data"].items():
        print(f"  {split}: {row['a']} / {row['b']} ({row['only_in_a']}, {row['only_in_b']})")
    print("metrics      A / B")
    for key, (a, b) in result["metrics"].items():
        print(f"  {key}: {show(a)} / {show(b)}")
    a, b = result["shared_top1"]
    print(f"test photos both scored: {result['shared_test_photos']}; top-1 {show(a['top1'])} "
          f"[{show(a['ci95'][0])}-{show(a['ci95'][1])}] / {show(b['top1'])} [{show(b['ci95'][0])}-{show(b['ci95'][1])}]")
    counts = result["counts"]
    print(f"right only in A: {counts['right_only_in_a']}, right only in B: {counts['right_only_in_b']} "
          f"(McNemar, one-sided: p = {result['p_value']:.2g})")
    for label, rows in (("right only in A", result["right_only_in_a"]), ("right only in B", result["right_only_in_b"])):
        for row in rows:
            print(f"  {label}: {row['path']} ({row['class']}; A says {row['a_says']}, B says {row['b_says']})")
    return 0


def show(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)
