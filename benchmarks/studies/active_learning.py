"""Active-learning simulation: does the review queue (``binwise.data.labelling``) reach a given
accuracy with fewer labels than picking photos at random? (issue 29, item 4)

    python benchmarks/studies/active_learning.py                  # trashnet's train split, ~40 s on 2 cores (features cached)
    python benchmarks/studies/active_learning.py --quick --out /tmp/al   # a cheap smoke run

On the train split of a dataset (default trashnet: ``../shared/data/trashnet/train/<class>/``):

- a fixed validation split, 20% of each class (stratified, seed 0, near-duplicate groups kept on
  one side as every binwise split does), is set aside once and only measures accuracy;
- of the rest, 20% of each class (seeded per simulation seed) is the starting labelled set and
  the remainder the pool, whose folder labels play the reviewers;
- each round a strategy picks ``--picks`` photos of the pool, they join the labelled set and the
  model is retrained; ``--rounds`` rounds, ``--seeds`` seeds.

Strategies: ``queue`` (``labelling_queue(probabilities, signatures, count)`` with the default
``DIVERSITY``; labelling a shown photo labels its ``look_alikes`` too, so they join the labelled set
and count as labels used), ``margin`` (``diversity=0`` and no signatures: pure margin uncertainty)
and ``random``. The tuning record runs ``queue`` at diversity 0, 0.25, 0.5 and 1.0 (with
signatures) on every seed, which is what ``labelling.DIVERSITY`` is chosen on.

The model is binwise's head recipe (``--mode head``, the ``HEAD`` preset), run the cheap way but
with the library's own code: each photo's pooled backbone feature (eval view; ``HEAD`` caches no
augmented views) is computed once through ``training.feature_cache.extract_features`` (the
feature cache ``binwise train`` uses), and each round the head is fitted with
``training.head.head_phase`` + ``fit_head`` on the labelled photos' features, as ``train_head``'s
final phase ("head (all train)", retrain-on-all) does: same preset, seed, init, epochs, schedule,
batch order and loss. The monitored phase ``train_head`` runs first only reports a validation
accuracy and does not change the final head, so it is skipped. The pool's probabilities are the
softmax of the head's logits (temperature 1: ``labelling_queue`` ranks by margin, and a run's
calibration would fit on held-out photos the simulation does not have).

Per round, strategy and seed: labels used (start + picked + look-alikes), validation accuracy with
its 95% Wilson interval (``evaluation.evaluate.wilson_interval``) and the smallest per-class recall.
The goal from the issue: the queue reaches the accuracy of random picking's last round with at most
60% of the labels; the smallest number of labels beyond the starting set at which the queue's
mean accuracy (over seeds) reaches random's last-round mean, as a share of random's picks (the
resolution is one round of picks).

Writes ``benchmarks/results/active_learning/<date>.{json,md}`` and ``docs/images/active_learning.png``
(with ``--out DIR``: into DIR; with ``--name``, ``--out`` or ``--quick`` the figure goes beside the
results as ``<name>.png``, leaving the published one alone).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py

from common import REPO, RESULTS  # noqa: E402

from binwise.data.dataset import Sample, load_dataset, stratified_split  # noqa: E402
from binwise.data.labelling import DIVERSITY, labelling_queue  # noqa: E402
from binwise.data.near_duplicates import groups_of, signatures  # noqa: E402
from binwise.evaluation.evaluate import wilson_interval  # noqa: E402
from binwise.paths import resolve_pretrained, shared_dirs  # noqa: E402
from binwise.training.config import HEAD  # noqa: E402
from binwise.training.context import RunContext  # noqa: E402
from binwise.training.feature_cache import extract_features  # noqa: E402
from binwise.training.head import fit_head, head_phase  # noqa: E402
from binwise.training.run import build_model, load_pretrained  # noqa: E402

OUT = RESULTS / "active_learning"
FIGURE = REPO / "docs" / "images" / "active_learning.png"
SHARE = 0.2  # validation share, and the starting set's share of the rest
DIVERSITIES = (0.0, 0.25, 0.5, 1.0)
GOAL = 0.6  # the queue reaches random's last-round accuracy with at most this share of its picks


def default_data() -> Path | None:
    for shared in shared_dirs():
        if (shared / "data" / "trashnet").is_dir():
            return shared / "data" / "trashnet"
    return None


class Head:
    """binwise's head recipe on precomputed features: fit on some rows, answer for others."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, pretrained: Path, taxonomy, scratch: Path):
        self.features, self.labels = features, labels  # (N, 1, C) eval view, (N,)
        base = load_pretrained(pretrained)
        self.model = build_model(base, taxonomy, HEAD.dropout)
        self.pre, self.scratch, self.fits = base.preprocessing, scratch, 0

    def fit(self, rows: np.ndarray, seed: int) -> None:
        config = replace(HEAD, seed=seed)
        self.fits += 1
        folder = self.scratch / f"fit{self.fits}"  # fresh: fit resumes from a folder's checkpoints
        ctx = RunContext(config, self.pre, folder, None, torch.device("cpu"))
        index = torch.from_numpy(rows)
        phase = head_phase("head (all train)", self.model, self.features[index], self.labels[index], None, config,
                           ctx.checkpoints("final"), ctx.device)
        fit_head(self.model, phase, ctx, config)
        shutil.rmtree(folder, ignore_errors=True)

    def probabilities(self, rows: np.ndarray) -> np.ndarray:
        self.model.head.eval()
        with torch.inference_mode():
            logits = self.model.head(self.features[torch.from_numpy(rows), 0])
        return torch.softmax(logits.double(), 1).numpy()


def measure(head: Head, val: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    predicted = head.probabilities(val).argmax(1)
    truth = labels[val]
    right = int((predicted == truth).sum())
    recalls = [float((predicted[truth == c] == c).mean()) for c in range(num_classes) if (truth == c).any()]
    return {"val_acc": right / len(val), "val_acc_ci95": wilson_interval(right, len(val)),
            "smallest_class_recall": min(recalls)}


def pick(strategy: str, head: Head, pool: np.ndarray, sigs: np.ndarray, count: int, rng: np.random.Generator,
         diversity: float) -> tuple[list[int], list[int]]:
    """Rows the reviewers label this round: the photos shown, and (the queue) their look-alikes."""
    if strategy == "random":
        return rng.choice(pool, min(count, len(pool)), replace=False).tolist(), []
    probs = head.probabilities(pool)
    if strategy == "margin":
        queue = labelling_queue(probs, None, count=count, diversity=0.0)
    else:
        queue = labelling_queue(probs, sigs[pool], count=count, diversity=diversity)
    return [int(pool[e.index]) for e in queue], [int(pool[i]) for e in queue for i in e.look_alikes]


def simulate(strategy: str, diversity: float, head: Head, start: np.ndarray, pool: np.ndarray, val: np.ndarray,
             labels: np.ndarray, sigs: np.ndarray, rounds: int, picks: int, seed: int, num_classes: int,
             first: dict) -> list[dict]:
    labelled, left = list(start), pool.copy()
    rng = np.random.default_rng([seed, 29])
    history = [{"round": 0, "labels": len(labelled), "picked": 0, "look_alikes": 0, **first}]
    head.fit(np.array(labelled), seed)  # the starting model (the same for every strategy of a seed)
    for r in range(1, rounds + 1):
        if not len(left):
            break
        shown, alike = pick(strategy, head, left, sigs, picks, rng, diversity)
        labelled += shown + alike
        left = np.setdiff1d(left, shown + alike)
        head.fit(np.array(labelled), seed)
        history.append({"round": r, "labels": len(labelled), "picked": history[-1]["picked"] + len(shown),
                        "look_alikes": history[-1]["look_alikes"] + len(alike),
                        **measure(head, val, labels, num_classes)})
    return history


def summarise(runs: list[list[dict]]) -> list[dict]:
    """Per round: mean over seeds of labels and accuracy, the seeds' spread, the pooled Wilson interval."""
    out = []
    for r in range(min(len(h) for h in runs)):
        rows = [h[r] for h in runs]
        acc = [row["val_acc"] for row in rows]
        out.append({"round": r, "labels": float(np.mean([row["labels"] for row in rows])),
                    "picked_and_look_alikes": float(np.mean([row["labels"] - runs[i][0]["labels"]
                                                            for i, row in enumerate(rows)])),
                    "val_acc": float(np.mean(acc)), "val_acc_min": min(acc), "val_acc_max": max(acc),
                    "val_acc_ci95_of_mean_seed": [float(np.mean([row["val_acc_ci95"][k] for row in rows]))
                                                  for k in (0, 1)],
                    "smallest_class_recall": float(np.mean([row["smallest_class_recall"] for row in rows]))})
    return out


def paired(runs: list[list[dict]], baseline: list[list[dict]]) -> list[dict]:
    """Per round: a strategy's validation top-1 minus the baseline's on the same seed (same
    starting set), mean and range over seeds."""
    out = []
    for r in range(min(len(h) for h in runs + baseline)):
        gaps = [a[r]["val_acc"] - b[r]["val_acc"] for a, b in zip(runs, baseline)]
        out.append({"round": r, "mean": float(np.mean(gaps)), "min": min(gaps), "max": max(gaps),
                    "seeds_ahead": sum(g > 0 for g in gaps), "seeds_behind": sum(g < 0 for g in gaps)})
    return out


def goal(summary: dict, picks_total: int) -> dict:
    target = summary["random"][-1]["val_acc"]
    reached = next((row for row in summary["queue"] if row["val_acc"] >= target), None)
    share = reached["picked_and_look_alikes"] / picks_total if reached else None
    return {"random_last_round_val_acc": target, "random_picks": picks_total,
            "queue_round_reaching_it": reached and reached["round"],
            "queue_labels_beyond_start": reached and reached["picked_and_look_alikes"],
            "share_of_random_picks": share, "goal_share": GOAL, "met": share is not None and share <= GOAL}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def table(summary: dict) -> str:
    lines = ["| strategy | round | labels used (mean) | validation top-1, mean of seeds [seeds' range] "
             "| 95% Wilson CI (mean over seeds) | smallest class recall |", "|---|---|---|---|---|---|"]
    for name, rows in summary.items():
        for row in rows:
            lo, hi = row["val_acc_ci95_of_mean_seed"]
            lines.append(f"| {name} | {row['round']} | {row['labels']:.0f} | {pct(row['val_acc'])} "
                         f"[{pct(row['val_acc_min'])}–{pct(row['val_acc_max'])}] | {pct(lo)}–{pct(hi)} "
                         f"| {pct(row['smallest_class_recall'])} |")
    return "\n".join(lines) + "\n"


def figure(summary: dict, target: float, ceiling: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rows in summary.items():
        x = [row["labels"] for row in rows]
        line, = ax.plot(x, [100 * row["val_acc"] for row in rows], marker="o", ms=3, label=name)
        ax.fill_between(x, [100 * row["val_acc_min"] for row in rows], [100 * row["val_acc_max"] for row in rows],
                        color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(100 * target, color="grey", ls=":", lw=1, label="random, last round")
    ax.axhline(100 * ceiling["val_acc"], color="black", ls="--", lw=1,
               label=f"the whole pool labelled ({ceiling['labels']} photos)")
    ax.set_xlabel("labelled photos (starting set + picked + look-alikes)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/data/trashnet)")
    parser.add_argument("--pretrained", default=None, help="backbone weights (default: $BINWISE_PRETRAINED)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--picks", type=int, default=100, help="photos picked per round")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--per-class", type=int, default=0, help="use at most this many photos per class (0: all)")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 30 picks, 1 seed, 40 photos per class, diversity 0.5 only: a smoke run")
    parser.add_argument("--name", default=None, help="results file stem (default: the date)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the .json, .md and figure here instead of benchmarks/results/active_learning")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.picks, args.seeds, args.per_class = 2, 30, 1, args.per_class or 40
    diversities = (DIVERSITY,) if args.quick else DIVERSITIES
    data = args.data or default_data()
    if data is None:
        sys.exit("no trashnet folder found in ../shared/data: pass --data")
    started = time.perf_counter()

    dataset = load_dataset(data)
    samples: list[Sample] = []
    for c in range(dataset.taxonomy.num_classes):
        of_class = [s for s in dataset.train if s.label == c]
        samples += of_class[:args.per_class] if args.per_class else of_class
    pretrained = resolve_pretrained(args.pretrained)
    base = load_pretrained(pretrained)
    found = extract_features(base.model, base.preprocessing, samples, views=0, seed=HEAD.seed,
                             batch_size=HEAD.feature_batch_size, workers=HEAD.workers, engine=HEAD.engine)
    samples = found.samples  # the readable ones
    feature_seconds = time.perf_counter() - started
    sigs = signatures([s.path for s in samples])
    group = dict(zip((s.path for s in samples), groups_of(sigs)))
    row_of = {s.path: i for i, s in enumerate(samples)}
    labels = found.labels.numpy()

    rest, held = stratified_split(samples, SHARE, 0, group)
    val = np.array(sorted(row_of[s.path] for s in held))
    results: dict = {"strategies": {}, "diversity": {}}
    scratch = Path(tempfile.mkdtemp(prefix="binwise-al-"))
    try:
        head = Head(found.features, found.labels, pretrained, dataset.taxonomy, scratch)
        num_classes = dataset.taxonomy.num_classes
        runs: dict[str, list] = {}
        for seed in range(args.seeds):
            pool_samples, start_samples = stratified_split(rest, SHARE, seed, group)
            start = np.array(sorted(row_of[s.path] for s in start_samples))
            pool = np.array(sorted(row_of[s.path] for s in pool_samples))
            head.fit(start, seed)
            first = measure(head, val, labels, num_classes)
            plan = [("random", 0.0), ("margin", 0.0)] + [(f"queue d={d:g}", d) for d in diversities]
            for name, diversity in plan:
                strategy = name.split()[0]
                runs.setdefault(name, []).append(simulate(strategy, diversity, head, start, pool, val, labels, sigs,
                                                          args.rounds, args.picks, seed, num_classes, first))
                last = runs[name][-1][-1]
                print(f"seed {seed} {name:14s} labels {last['labels']:4d} val {pct(last['val_acc'])} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        everything = np.array(sorted(row_of[s.path] for s in rest))  # the ceiling: the whole pool labelled
        ceiling = []
        for seed in range(args.seeds):
            head.fit(everything, seed)
            ceiling.append(measure(head, val, labels, num_classes))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    default = f"queue d={DIVERSITY:g}"
    summary = {"queue": summarise(runs[default]), "margin": summarise(runs["margin"]),
               "random": summarise(runs["random"])}
    tuning = {name: summarise(r) for name, r in runs.items() if name.startswith("queue")}
    by_diversity = {name: rows[-1]["val_acc"] for name, rows in tuning.items()}
    area = {name: float(np.mean([row["val_acc"] for row in rows[1:]])) for name, rows in tuning.items()}
    default_means = [np.mean([row["val_acc"] for row in h[1:]]) for h in runs[default]]
    against_default = {}
    for name in tuning:  # each seed's mean over rounds 1-last, minus the default diversity's on that seed
        gaps = np.array([np.mean([row["val_acc"] for row in h[1:]]) for h in runs[name]]) - default_means
        against_default[name] = {"mean": float(gaps.mean()),
                                 "standard_error": float(gaps.std(ddof=1) / np.sqrt(len(gaps))) if len(gaps) > 1 else None,
                                 "seeds_ahead": int((gaps > 0).sum()), "seeds_behind": int((gaps < 0).sum())}
    picks_total = args.rounds * args.picks
    reached = goal(summary, picks_total)
    wall = time.perf_counter() - started
    counts = np.bincount(labels, minlength=dataset.taxonomy.num_classes).tolist()
    results = {
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()}-core development VM, no GPU ({platform.processor() or platform.machine()}), "
                   "shared with another engineer's jobs",
        "git_commit": os.popen(f"git -C {REPO} rev-parse --short HEAD").read().strip(),
        "dataset": str(data), "photos": len(samples), "class_counts": dict(zip(dataset.taxonomy.classes_en, counts)),
        "validation_photos": len(val), "starting_labelled": int(round(np.mean([r[0]["labels"] for r in runs["random"]]))),
        "rounds": args.rounds, "picks_per_round": args.picks, "seeds": args.seeds, "quick": args.quick,
        "model": "binwise's HEAD preset (--mode head) fitted per round with training.head.head_phase + fit_head "
                 "on cached eval-view backbone features (training.feature_cache.extract_features), as train_head's "
                 "final 'head (all train)' phase; pool probabilities = softmax of the head's logits (temperature 1)",
        "feature_seconds": feature_seconds, "wall_seconds": wall,
        "summary": summary,
        "goal": reached,
        "all_labelled": {"labels": len(everything), "val_acc": float(np.mean([c["val_acc"] for c in ceiling])),
                         "per_seed": ceiling},
        "minus_random_same_seed": {"queue": paired(runs[default], runs["random"]),
                                   "margin": paired(runs["margin"], runs["random"])},
        "diversity_tuning": {"default": DIVERSITY, "last_round_val_acc": by_diversity,
                             "mean_val_acc_over_rounds_1_to_last": area,
                             "minus_default_same_seed_mean_over_rounds": against_default, "per_round": tuning},
        "runs": runs,
    }
    out = args.out or OUT
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or time.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    tuning_lines = ["| diversity | " + " | ".join(f"round {r}" for r in range(1, args.rounds + 1))
                    + " | mean of rounds 1–last | minus the default, same seed (± s.e.; seeds ahead/behind) |",
                    "|---" * (args.rounds + 3) + "|"]
    for name, rows in tuning.items():
        tuning_lines.append(f"| {name.split('=')[1]} | " + " | ".join(pct(row["val_acc"]) for row in rows[1:])
                            + f" | {pct(area[name])} | {100 * against_default[name]['mean']:+.2f}"
                            + (f" ± {100 * against_default[name]['standard_error']:.2f}"
                               if against_default[name]["standard_error"] is not None else "")
                            + f" ({against_default[name]['seeds_ahead']}/{against_default[name]['seeds_behind']}) |")
    share = reached["share_of_random_picks"]
    text = (f"# Active-learning simulation ({Path(data).name}, {len(samples)} photos, {len(val)} validation, "
            f"{args.seeds} seeds, {args.rounds} rounds of {args.picks})\n\n" + table(summary)
            + f"\nGoal (queue reaches random's last-round {pct(reached['random_last_round_val_acc'])} with at most "
            f"{GOAL:.0%} of its {picks_total} picks): "
            + (f"reached at round {reached['queue_round_reaching_it']} with {reached['queue_labels_beyond_start']:.0f} "
               f"labels beyond the start, {share:.0%} of random's: {'met' if reached['met'] else 'not met'}.\n"
               if share is not None else "not reached within the rounds run: not met.\n")
            + f"\nThe whole pool labelled ({len(everything)} photos): "
            + f"{pct(results['all_labelled']['val_acc'])} (mean of seeds).\n"
            + "\nSame seed (same starting set), minus random, validation top-1 points: mean [range over seeds]\n\n"
            + "| strategy, round | " + " | ".join(f"{r}" for r in range(1, args.rounds + 1)) + " |\n"
            + "|---" * (args.rounds + 1) + "|\n"
            + "".join(f"| {name} | " + " | ".join(f"{100 * g['mean']:+.1f} [{100 * g['min']:+.1f}, {100 * g['max']:+.1f}]"
                                                   for g in gaps[1:]) + " |\n"
                      for name, gaps in results["minus_random_same_seed"].items())
            + f"\n## Diversity (queue, validation top-1, mean of {args.seeds} seeds)\n\n" + "\n".join(tuning_lines)
            + f"\n\nWall time {wall:.0f} s (features {feature_seconds:.0f} s).\n")
    (out / f"{stem}.md").write_text(text)
    published = not (args.out or args.name or args.quick)
    figure(summary, reached["random_last_round_val_acc"], results["all_labelled"],
           FIGURE if published else out / f"{stem}.png",
           f"{Path(data).name}: {args.seeds} seeds, {args.picks} picks a round (shaded: range over seeds)")
    print(text)


if __name__ == "__main__":
    main()
