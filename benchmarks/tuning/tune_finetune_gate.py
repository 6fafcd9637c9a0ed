"""Record behind ``finetune_significance`` (auto mode keeps fine-tuning when McNemar's one-sided p
of its validation gain over the probe is below it).

On validation folds of the train splits (``train_own_data``'s ``trashnet-fold{k}`` and
``garbage26-fold{k}``: 80% trains, the other 20% of the fold is held out), each fold runs twice:
``--mode head`` (the probe, what auto keeps when it refuses fine-tuning) and the default with
``--finetune-significance 1`` (fine-tuning kept whenever it fixes more validation photos than it
breaks; the run records p). Each gate is then replayed: the fine-tuned model where p < gate, the
probe elsewhere; the table gives held-out top-1 per fold and on average. ``--time-budget 1200`` so
that another job on the machine cannot cut the plan (on a quiet machine the runs take ~300 s, and the
600 s default does not bind either).

    python benchmarks/tuning/tune_finetune_gate.py --datasets trashnet-fold0 trashnet-fold1 garbage26-fold0

Writes ``benchmarks/results/tune_finetune_gate/<date>.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py and the script folders

from studies.train_own_data import dataset_path, pct, train

RESULTS = Path(__file__).resolve().parents[1] / "results" / "tune_finetune_gate"
GATES = (0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0)
FLAGS = ["--time-budget", "1200"]


def replay(rows: dict, gate: float) -> dict:
    """Held-out top-1 per fold had auto used this gate."""
    chosen = {}
    for name, runs in rows.items():
        tuned = runs["finetune"]
        keep = tuned["chosen"] == "finetune" and tuned["finetune_p_value"] < gate
        chosen[name] = (tuned if keep else runs["head"])["test_top1"]
    return chosen


def table(rows: dict) -> str:
    names = list(rows)
    lines = ["| gate (p below) | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 2) + "|"]
    for gate in GATES:
        accs = replay(rows, gate)
        lines.append(f"| {gate:g} | " + " | ".join(pct(accs[n]) for n in names)
                     + f" | {pct(sum(accs.values()) / len(accs))} |")
    lines.append("| fixed / broken, p | " + " | ".join(
        f"{runs['finetune']['finetune_fixed_broken']}, {runs['finetune']['finetune_p_value']:.2g}"
        if runs["finetune"].get("finetune_p_value") is not None else "–" for runs in rows.values()) + " | |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["trashnet-fold0", "trashnet-fold1", "trashnet-fold2",
                                                          "garbage26-fold0", "garbage26-fold1", "garbage26-fold2"])
    args = parser.parse_args()
    rows: dict = {}
    scratch = Path(tempfile.mkdtemp(prefix="binwise-gate-"))
    try:
        for name in args.datasets:
            data = dataset_path(name, scratch)
            rows[name] = {
                "head": train(data, scratch, f"{name}-head", ["--mode", "head", *FLAGS], 0),
                "finetune": train(data, scratch, f"{name}-finetune", ["--finetune-significance", "1", *FLAGS], 0),
            }
            for row in rows[name].values():
                row.pop("log"), row.pop("photos")
            print(name, {k: (r["test_top1"], r["chosen"], r.get("finetune_p_value")) for k, r in rows[name].items()},
                  flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = time.strftime("%Y-%m-%d")
    (RESULTS / f"{stem}.json").write_text(json.dumps(rows, indent=2))
    (RESULTS / f"{stem}.md").write_text("# Held-out top-1 by fine-tuning gate\n\n" + table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()
