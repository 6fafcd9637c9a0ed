"""``binwise train`` with defaults on the proxy datasets and garbage26, from cold caches.

For each dataset: ``binwise train DIR`` (auto mode, defaults) with an empty feature cache, then
``binwise eval`` of the model on the same folder (for a flat folder: the photos it never trained or
validated on), and ``--mode head`` for comparison. Also the per-epoch cost of fine-tuning the last 5
blocks on cached activations (``--cached-views 4``) against decoding photos every step
(``--cached-views 0``), on the materials proxy. Writes benchmarks/results/train_own_data.{json,md}.

    python benchmarks/proxies.py && python benchmarks/train_own_data.py [--only NAME ...]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proxies import default_out

from binwise.paths import resolve_data

RESULTS = Path(__file__).parent / "results"


def run(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "binwise", *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def train(data: Path, scratch: Path, name: str, *flags: str) -> dict:
    run_dir, cache = scratch / name, scratch / f"cache-{name}"  # a cache of its own: cold
    wall = run(["train", str(data), "--run-dir", str(run_dir), "--cache-dir", str(cache), "--quiet", *flags])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    row = {"command": " ".join(["binwise train", data.name, *flags]), "wall_seconds": round(wall, 1)}
    row.update({k: metrics.get(k) for k in ("test_top1", "test_top1_ci95", "test_photos", "test_bin_accuracy",
                                           "smallest_class_recall", "chosen", "reason", "val_acc", "probe_val_acc",
                                           "finetune_val_acc", "finetune_plan", "photos")})
    out = scratch / f"eval-{name}"
    run(["eval", str(run_dir / "model.safetensors"), str(data), "--out", str(out)])
    row["eval_top1"] = json.loads((out / "report.json").read_text())["top1"]
    row["log"] = list(csv.DictReader(open(run_dir / "log.csv")))
    return row


def epoch_seconds(row: dict, phase: str) -> float:
    return min(float(r["seconds"]) for r in row["log"] if r["phase"] == phase)


def table(results: dict) -> str:
    """The markdown table docs/benchmarks.md quotes."""
    def pct(x):
        return f"{100 * x:.1f}%" if x is not None else "–"

    lines = ["| dataset | photos train/val/test | command | chose | wall s (cold) | test top-1 [95% CI] | "
             "`binwise eval` | smallest class recall | probe val → fine-tune val |", "|---" * 9 + "|"]
    for name, runs in results["datasets"].items():
        for row in runs.values():
            p = row["photos"]
            ci = row["test_top1_ci95"]
            lines.append(f"| {name} | {p['train']}/{p['val']}/{p['test']} | `{row['command']}` | {row['chosen']} | "
                         f"{row['wall_seconds']:.0f} | {pct(row['test_top1'])} [{pct(ci[0])}–{pct(ci[1])}] | "
                         f"{pct(row['eval_top1'])} | {pct(row['smallest_class_recall'])} | "
                         f"{pct(row.get('probe_val_acc') or row.get('val_acc'))} → {pct(row.get('finetune_val_acc'))} |")
    speed = results.get("activation_cache")
    if speed:
        lines += ["", f"Fine-tuning the last 5 blocks on materials, seconds per epoch: decoding photos every step "
                  f"{speed['photo_epoch_seconds']:.1f}, cached activations {speed['cached_epoch_seconds']:.1f} "
                  f"(**{speed['speedup']:.1f}× less**)."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="datasets to run (default: all)")
    args = parser.parse_args()
    datasets = {name: default_out() / name for name in ("materials", "imbalanced", "fewshot", "bins4")}
    datasets["garbage26"] = resolve_data()
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
               "started": time.strftime("%Y-%m-%d %H:%M"), "datasets": {}}
    scratch = Path(tempfile.mkdtemp(prefix="binwise-bench-"))
    try:
        for name, data in datasets.items():
            if args.only and name not in args.only:
                continue
            results["datasets"][name] = {"default": train(data, scratch, f"{name}-auto"),
                                         "head": train(data, scratch, f"{name}-head", "--mode", "head")}
            print(name, {k: v for k, v in results["datasets"][name]["default"].items() if k != "log"}, flush=True)
        if not args.only or "speed" in args.only:
            common = ["--mode", "finetune", "--epochs", "2", "--val-fraction", "0.1"]
            cached = train(datasets["materials"], scratch, "speed-cached", *common, "--cached-views", "4")
            photos = train(datasets["materials"], scratch, "speed-photos", *common, "--cached-views", "0")
            results["activation_cache"] = {
                "cached_epoch_seconds": epoch_seconds(cached, "finetune (train - val)"),
                "photo_epoch_seconds": epoch_seconds(photos, "finetune (train - val)"),
                "cached": {k: v for k, v in cached.items() if k != "log"},
                "photos": {k: v for k, v in photos.items() if k != "log"}}
            speed = results["activation_cache"]
            speed["speedup"] = speed["photo_epoch_seconds"] / speed["cached_epoch_seconds"]
            print("activation cache", {k: v for k, v in speed.items() if k.endswith(("seconds", "speedup"))})
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    name = "train_own_data" + ("_" + "_".join(args.only) if args.only else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    (RESULTS / f"{name}.md").write_text(f"# binwise train on own data ({results['machine']['cpus']} CPUs, "
                                         f"{results['started']})\n\n" + table(results))


if __name__ == "__main__":
    main()
