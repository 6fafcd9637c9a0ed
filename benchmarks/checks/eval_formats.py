"""``binwise eval`` on every model format: the .safetensors model, its fp32 and its int8 ONNX export.

    .venv/bin/python benchmarks/checks/eval_formats.py [--model M.safetensors] [--data DIR] [--json out.json]

Without ``--model`` it trains one first (``binwise train --mode head``, the quickstart's model). Each
file goes through the same ``binwise.evaluation.evaluate.evaluate`` on the dataset's test split; the table
gives each one's top-1, top-5, bin accuracy and macro F1, and how many photos each ONNX file
answers differently from the .safetensors model. Goal: the fp32 export's report equals the
model's, int8 within its quantisation error (agreement >= 99%, drop <= 1 point).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from binwise.evaluation.evaluate import evaluate
from binwise.export import export_onnx
from binwise.paths import resolve_data

KEYS = ("top1", "top5", "bin_accuracy", "macro_f1")


def predicted_by_photo(report: dict) -> dict[str, str]:
    """Each misclassified photo's predicted class (correct photos are absent)."""
    return {m["path"]: m["predicted"] for m in report["misclassified"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a .safetensors model (default: train one with --mode head)")
    parser.add_argument("--data", help="dataset (default: garbage26)")
    parser.add_argument("--json", help="write the numbers here too")
    args = parser.parse_args(argv)
    data = resolve_data(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else Path(tmp) / "run" / "model.safetensors"
        if not args.model:
            subprocess.run([sys.executable, "-m", "binwise.cli", "train", str(data), "--mode", "head",
                            "--run-dir", str(model.parent), "--quiet"], check=True)
        files = {"safetensors": model, "onnx-fp32": export_onnx(model, Path(tmp) / "fp32.onnx"),
                 "onnx-int8": export_onnx(model, Path(tmp) / "int8.onnx", int8=True)}
        reports = {name: evaluate(path, data) for name, path in files.items()}
    reference = predicted_by_photo(reports["safetensors"])
    results = {"data": str(data), "photos": reports["safetensors"]["count"], "formats": {}}
    for name, report in reports.items():
        mistakes = predicted_by_photo(report)
        # a photo is answered differently when it is wrong in one and right (or wrong otherwise) in the other
        differ = sum(reference.get(p) != mistakes.get(p) for p in set(reference) | set(mistakes))
        results["formats"][name] = {**{k: report.get(k) for k in KEYS}, "answers_differing_from_safetensors": differ}
    print(f"{'format':12s} {'top-1':>7s} {'top-5':>7s} {'bin':>7s} {'macro F1':>8s}  differing answers")
    for name, row in results["formats"].items():
        print(f"{name:12s} {row['top1']:7.2%} {row['top5']:7.2%} {row['bin_accuracy']:7.2%} {row['macro_f1']:8.3f}"
              f"  {row['answers_differing_from_safetensors']} of {results['photos']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
