"""``binwise train`` as a new user runs it, on real photos: the default beside ``--mode head``.

Datasets (each from a cold feature cache, one run at a time):

- ``garbage26``: its train split, scored on its test split (reported, never used to choose);
- ``trashnet-fold{k}``: fold k of five of ``../shared/data/trashnet``'s train split (its test split
  is kept back): train/ 80% of each class, test/ the other 20%, so every setting is judged on photos
  of the train split alone;
- ``garbage26-fold{k}``: the same folds of garbage26's train split;
- ``trashnet-fold{k}-sub{P}`` (or garbage26's): that fold with P% of each class's train photos, to
  see how a setting depends on the dataset's size;
- the flat proxy folders of ``proxies.py`` (``materials``, ``imbalanced``, ``fewshot``, ``bins4``).

Each row: test top-1 with its 95% interval, the smallest class recall, the share of photos answered
``ok`` and their accuracy (selective accuracy), the share whose bin is answered (ok, or unsure
between classes of one bin), wall time, the chosen mode and the validation accuracies behind the
choice; the JSON also has the calibration behind "answered ok" (temperature, min_confidence, the
held-out photos that set them and the share of them answered). ``--load N`` runs N busy processes
beside every run, to check that the time budget holds when another job shares the cores. Writes ``benchmarks/results/train_own_data/<date>[-NAME].json``
and ``.md``.

    python benchmarks/studies/train_own_data.py --datasets garbage26 trashnet-fold0 trashnet-fold1
    python benchmarks/studies/train_own_data.py --datasets trashnet-fold0 --modes default --load 1 --name shared
    python benchmarks/studies/train_own_data.py --compare benchmarks/results/train_own_data/2026-12-08-*.json
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

from common import FOLDS, RESULTS as ALL_RESULTS, validation_tree

from binwise.paths import resolve_data

RESULTS = ALL_RESULTS / "train_own_data"
MODES = {"default": [], "head": ["--mode", "head"]}


def dataset_path(name: str, scratch: Path) -> Path:
    """Where the named dataset is (fold trees are made under ``scratch``)."""
    if name == "garbage26":
        return resolve_data()
    for source in ("trashnet", "garbage26"):
        if name.startswith(f"{source}-fold"):
            fold, _, percent = name.removeprefix(f"{source}-fold").partition("-sub")
            if not (fold.isdigit() and int(fold) < FOLDS and (not percent or percent.isdigit() and 1 <= int(percent) <= 100)):
                raise SystemExit(f"{name}: {source}-foldK with K from 0 to {FOLDS - 1}, or {source}-foldK-subP "
                                 "(P% of its train photos, P from 1 to 100)")
            root = resolve_data().parent / source if source == "trashnet" else resolve_data()
            return validation_tree(scratch / name, fold=int(fold), source=root, train_percent=int(percent or 100))
    from studies.proxies import default_out

    path = default_out() / name
    if not path.is_dir():
        raise SystemExit(f"{name}: no such dataset (run benchmarks/studies/proxies.py for the proxy folders)")
    return path


def busy() -> None:
    while True:
        pass


def train(data: Path, scratch: Path, name: str, flags: list[str], load: int) -> dict:
    run_dir, cache = scratch / name, scratch / f"cache-{name}"  # a cache of its own: cold
    hogs = [multiprocessing.Process(target=busy, daemon=True) for _ in range(load)]
    for hog in hogs:
        hog.start()
    started = time.perf_counter()
    try:
        subprocess.run([sys.executable, "-m", "binwise", "train", str(data), "--run-dir", str(run_dir),
                        "--cache-dir", str(cache), "--quiet", *flags], check=True, stdout=subprocess.DEVNULL)
    finally:
        for hog in hogs:
            hog.terminate()
    wall = time.perf_counter() - started
    metrics = json.loads((run_dir / "metrics.json").read_text())
    status = metrics["report"].get("status", {}).get("at_thresholds") or {}
    budget = metrics.get("finetune_plan") or {}
    calibration = metrics.get("calibration") or {}  # what set the thresholds behind "answered ok"
    return {"command": " ".join(["binwise train", data.name, *flags]), "wall_seconds": round(wall, 1),
            "other_busy_processes": load,
            **{k: metrics.get(k) for k in ("test_top1", "test_top1_ci95", "test_photos", "test_bin_accuracy",
                                            "smallest_class_recall", "chosen", "reason", "val_acc", "probe_val_acc",
                                            "finetune_val_acc", "finetune_p_value", "finetune_fixed_broken",
                                            "photos")},
            "coverage": status.get("coverage"), "answered_accuracy": status.get("answered_accuracy"),
            "bin_coverage": status.get("bin_coverage"), "bin_answered_accuracy": status.get("bin_answered_accuracy"),
            "calibration": {**{k: calibration.get(k) for k in ("temperature", "min_confidence", "held_out_photos")},
                            "held_out_coverage": (calibration.get("held_out") or {}).get("coverage")},
            "finetune_plan": budget,
            "log": list(csv.DictReader(open(run_dir / "log.csv")))}


def pct(x) -> str:
    return f"{100 * x:.1f}%" if x is not None else "–"


def table(results: dict) -> str:
    """The markdown table the docs quote."""
    lines = ["| dataset | command | chose | test top-1 [95% CI] | smallest recall | answered ok (their accuracy) | "
             "bin answered (accuracy) | wall s | probe val → fine-tune val | epochs run |", "|---" * 10 + "|"]
    for name, runs in results["datasets"].items():
        for row in runs.values():
            ci = row["test_top1_ci95"]
            load = f" (+{row['other_busy_processes']} busy)" if row["other_busy_processes"] else ""
            lines.append(
                f"| {name} | `{row['command']}`{load} | {row['chosen']} | {pct(row['test_top1'])} "
                f"[{pct(ci[0])}–{pct(ci[1])}] | {pct(row['smallest_class_recall'])} | {pct(row['coverage'])} "
                f"({pct(row['answered_accuracy'])}) | {pct(row['bin_coverage'])} ({pct(row['bin_answered_accuracy'])}) | "
                f"{row['wall_seconds']:.0f} | {pct(row.get('probe_val_acc') or row.get('val_acc'))} → "
                f"{pct(row.get('finetune_val_acc'))} | {row['finetune_plan'].get('epochs_run', '–')} |")
    return "\n".join(lines) + "\n"


def compare(paths: list[Path], mode: str = "default") -> str:
    """One markdown row per results file: ``mode``'s held-out top-1, smallest class recall and share
    answered ``ok`` (and their accuracy) on every dataset any file has (files may split one candidate's datasets; the
    row takes them in order), and the mean top-1 over the datasets it has."""
    candidates: dict[str, dict] = {}
    for path in paths:
        try:
            results = json.loads(Path(path).read_text())
            flags = next(iter(results["datasets"].values()))[mode]["command"].split(" ", 3)[3:]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, StopIteration) as e:
            raise SystemExit(f"{path}: not a results file of this script with a {mode!r} run "
                             f"({type(e).__name__}: {e})") from None
        runs = candidates.setdefault(flags[0] if flags else "(none)", {})
        runs.update({name: row[mode] for name, row in results["datasets"].items() if mode in row})
    datasets = list(dict.fromkeys(name for runs in candidates.values() for name in runs))
    lines = ["| flags | " + " | ".join(datasets) + " | mean top-1 |", "|---" * (len(datasets) + 2) + "|"]
    for flags, runs in candidates.items():
        cells = [f"{pct(runs[d]['test_top1'])} / {pct(runs[d]['smallest_class_recall'])} / {pct(runs[d]['coverage'])} "
                 f"({pct(runs[d]['answered_accuracy'])})" if d in runs else "–" for d in datasets]
        mean = sum(r["test_top1"] for r in runs.values()) / len(runs)
        lines.append(f"| `{flags}` | " + " | ".join(cells) + f" | {pct(mean)} ({len(runs)}) |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["garbage26", "trashnet-fold0"],
                        help="garbage26, trashnet-fold0..4, garbage26-fold0..4 (-subP: P%% of their train photos), or a proxy folder's name")
    parser.add_argument("--modes", nargs="+", choices=sorted(MODES), default=sorted(MODES))
    parser.add_argument("--load", type=int, default=0, metavar="N", help="busy processes beside every run")
    parser.add_argument("--flags", default="", help="more flags for every binwise train, e.g. '--time-budget 300'")
    parser.add_argument("--name", default="", help="a suffix for the results files")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="JSON",
                        help="print one row per results file (top-1 / smallest recall / answered ok (right) per dataset) "
                             "instead of training")
    args = parser.parse_args()
    if args.compare:
        print(compare(args.compare))
        return
    results = {"machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
               "started": time.strftime("%Y-%m-%d %H:%M"), "datasets": {}}
    scratch = Path(tempfile.mkdtemp(prefix="binwise-own-data-"))
    try:
        for name in args.datasets:
            data = dataset_path(name, scratch)
            results["datasets"][name] = {}
            for mode in args.modes:
                row = train(data, scratch, f"{name}-{mode}", MODES[mode] + args.flags.split(), args.load)
                results["datasets"][name][mode] = row
                print(name, mode, {k: v for k, v in row.items() if k not in ("log", "photos")}, flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y-%m-%d") + (f"-{args.name}" if args.name else "")
    (RESULTS / f"{stem}.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    (RESULTS / f"{stem}.md").write_text(f"# binwise train on real photos ({results['machine']['cpus']} CPUs, "
                                         f"{results['started']})\n\n" + table(results))
    print(table(results))


if __name__ == "__main__":
    main()
