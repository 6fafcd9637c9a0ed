"""Wall time and test accuracy of ``binwise train`` on garbage26, as the README reports them.

Runs, each as a fresh ``binwise`` process timed from the outside (imports included):

1. ``binwise train`` with defaults and an empty feature cache (cold), then again (warm);
2. the same default command on a second dataset with other classes: garbage26 regrouped into its
   4 bins (a symlinked ImageFolder tree in a temp folder), no code change;
3. with ``--tutorial``: the tutorial's recipe (``--preset tutorial``: frozen backbone recomputed
   every step, batch 16, 10 epochs, cosine lr_max 0.05), side by side with the default;
4. with ``--finetune``: ``binwise train --mode finetune`` (the finetune preset: head warm start on
   cached features, then fine-tuning); ``--finetune-only`` runs just this one.

    python benchmarks/speed/train_garbage26.py [--tutorial] [--finetune | --finetune-only] [--out benchmarks/results/train_garbage26/train_garbage26]

Writes ``<out>.json`` and ``<out>.md``; each run records the load average before and after it, since
the machine may be shared. Hyper-parameters come from benchmarks/tuning/tune_head.py and
benchmarks/tuning/tune_finetune.py (validation splits of train); this script only measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from binwise.paths import resolve_data
from binwise.taxonomy.classes import GARBAGE26


def run_train(args: list[str], run_dir: Path, env: dict) -> dict:
    command = [sys.executable, "-m", "binwise.cli", "train", *args, "--run-dir", str(run_dir), "--quiet"]
    load_before = os.getloadavg()
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.pop("report")
    return {"command": "binwise train " + " ".join(args), "process_wall_seconds": wall,
            "load_average_before": load_before, "load_average_after": os.getloadavg(), **metrics}


def bins_tree(data: Path, root: Path) -> Path:
    """garbage26 regrouped by bin: <root>/{train,test}/<bin>/<class>_<file> symlinks."""
    for split in ("train", "test"):
        for index, name in enumerate(GARBAGE26.classes_en):
            target = root / split / GARBAGE26.bin_of(index).en
            target.mkdir(parents=True, exist_ok=True)
            for photo in (data / split / name).iterdir():
                (target / f"{name}_{photo.name}").symlink_to(photo.resolve())
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="garbage26 folder (default: found via binwise.paths)")
    parser.add_argument("--tutorial", action="store_true", help="also run the tutorial's recipe (minutes)")
    parser.add_argument("--finetune", action="store_true", help="also run --mode finetune (long on CPU)")
    parser.add_argument("--finetune-only", action="store_true", help="run only --mode finetune")
    parser.add_argument("--out", default="benchmarks/results/train_garbage26/train_garbage26")
    args = parser.parse_args()

    data = resolve_data(args.data)
    results: dict = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                                 "python": platform.python_version()},
                     "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {**os.environ, "BINWISE_CACHE": str(tmp / "cache")}
        if not args.finetune_only:
            results["default_cold"] = run_train([str(data)], tmp / "cold", env)
            print(json.dumps(results["default_cold"]), flush=True)
            results["default_warm"] = run_train([str(data)], tmp / "warm", env)
            print(json.dumps(results["default_warm"]), flush=True)
            shutil.rmtree(tmp / "cache")
            results["bins4_cold"] = run_train([str(bins_tree(data, tmp / "bins4"))], tmp / "bins4-run", env)
            print(json.dumps(results["bins4_cold"]), flush=True)
        if args.tutorial and not args.finetune_only:
            results["tutorial"] = run_train([str(data), "--preset", "tutorial"], tmp / "tutorial", env)
            print(json.dumps(results["tutorial"]), flush=True)
            results["speedup_vs_tutorial"] = (results["tutorial"]["process_wall_seconds"]
                                              / results["default_cold"]["process_wall_seconds"])
        if args.finetune or args.finetune_only:  # with its own empty feature cache
            env = {**env, "BINWISE_CACHE": str(tmp / "finetune-cache")}
            results["finetune"] = run_train([str(data), "--mode", "finetune"], tmp / "finetune", env)
            print(json.dumps(results["finetune"]), flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=2))
    lines = [f"# binwise train on garbage26 ({results['machine']['cpus']} CPUs, {results['started']})", "",
             "| run | command | wall s (process) | test top-1 | test bin acc | test photos | load avg before/after |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for key in ("default_cold", "default_warm", "bins4_cold", "tutorial", "finetune"):
        if key in results:
            r = results[key]
            bins = f"{r['test_bin_accuracy']:.2%}" if r.get("test_bin_accuracy") is not None else "-"
            lines.append(f"| {key} | `{r['command']}` | {r['process_wall_seconds']:.1f} | {r['test_top1']:.2%} "
                         f"| {bins} | {r['test_photos']} "
                         f"| {r['load_average_before'][0]:.1f} / {r['load_average_after'][0]:.1f} |")
    if "speedup_vs_tutorial" in results:
        lines += ["", f"binwise default (cold cache) is {results['speedup_vs_tutorial']:.1f}x faster than the "
                  "tutorial's recipe."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
