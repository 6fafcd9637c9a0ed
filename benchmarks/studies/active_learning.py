"""Active-learning simulation: does the review queue (``binwise.data.labelling``) reach a given
accuracy with fewer labels than picking photos at random? (issue 29, item 4)

    python benchmarks/studies/active_learning.py                  # trashnet's train split, every strategy, 5 seeds
    python benchmarks/studies/active_learning.py --seeds 10 --data ../shared/data/garbage26   # ~9 min on 2 cores
    python benchmarks/studies/active_learning.py --quick --out /tmp/al   # a cheap smoke run

On the train split of a dataset (default trashnet: ``../shared/data/trashnet/train/<class>/``):

- a fixed validation split, 20% of each class (stratified, seed 0, near-duplicate groups kept on
  one side as every binwise split does), is set aside once and only measures accuracy;
- of the rest, 20% of each class (seeded per simulation seed) is the starting labelled set and
  the remainder the pool, whose folder labels play the reviewers;
- each round a strategy picks ``--picks`` photos of the pool, they join the labelled set and the
  model is retrained; ``--rounds`` rounds, ``--seeds`` seeds.

Strategies (``STRATEGIES``, a table of pickers; ``--strategies`` picks some, all by default):

- ``random``;
- ``queue``: ``labelling_queue(probabilities, signatures, count)`` with the default ``DIVERSITY``
  (labelling a shown photo labels its ``look_alikes`` too, so they join the labelled set and count
  as labels used); ``--diversities 0,0.25,1`` adds ``queue d=X``, the ``DIVERSITY`` tuning record;
- ``margin``: the most uncertain photos by margin (``labelling.uncertainty``; the queue at
  diversity 0 without signatures); ``entropy``: by the entropy of the answer;
- ``balanced``: margin spread over the predicted classes, round robin from the most rarely
  predicted class, each class giving its most uncertain photo left;
- in each feature space a service could have, (a) ``answers`` (square roots of the class
  probabilities: Hellinger geometry, what the queue's Bhattacharyya similarity measures),
  (b) ``thumbnails`` (the 16×16 signatures) and, as an upper bound only, (c) ``features`` (the
  backbone's pooled features, which exported models do not output):
  ``typical X``: the photo nearest each centre of a k-means with one cluster per pick (typical and
  diverse); ``hybrid X``: cold-start aware, ``typical X`` the first ``HYBRID_ROUNDS`` rounds, margin
  after; ``cluster-margin X``: the ``CANDIDATES`` × picks most uncertain photos clustered by k-means
  in X into one cluster per pick, each cluster's most uncertain photo.

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
Per strategy: the same seed's accuracy minus random's (same starting set), per round and as each
seed's mean over rounds 1–last, with the mean and standard error over seeds. The goal from the
issue: a strategy reaches the accuracy of random picking's last round with at most 60% of the
labels; the smallest number of labels beyond the starting set at which the strategy's mean
accuracy (over seeds) reaches random's last-round mean, as a share of random's picks (the
resolution is one round of picks).

Writes ``benchmarks/results/active_learning/<date>.{json,md,png}`` (with ``--out DIR``: into DIR;
``--name``: another stem); ``--publish`` draws the figure as ``docs/images/active_learning.png``
instead.
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
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: common.py

from common import REPO, RESULTS  # noqa: E402

from binwise.data.dataset import Sample, load_dataset, stratified_split  # noqa: E402
from binwise.data.labelling import DIVERSITY, labelling_queue, uncertainty  # noqa: E402
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


SPACES = {"answers": "(a) the answers: square roots of the pool's class probabilities (Hellinger geometry, "
                     "what labelling_queue's Bhattacharyya similarity measures)",
          "thumbnails": "(b) the 16×16 thumbnail signatures (near_duplicates.signature), unit length",
          "features": "(c) the backbone's pooled features, unit length (an upper bound: exported models do not "
                      "output them)"}
HYBRID_ROUNDS = 2  # the hybrid's first rounds pick typical photos, the later ones by margin
CANDIDATES = 3  # cluster-margin: the picks are spread over k-means clusters of this many times as many uncertain photos


@dataclass
class Turn:
    """What a strategy sees in one round: the pool (rows), the current head, the photos' spaces."""
    head: Head
    pool: np.ndarray
    sigs: np.ndarray
    features: np.ndarray
    rng: np.random.Generator
    round: int
    count: int
    _probs: np.ndarray | None = None

    @property
    def probs(self) -> np.ndarray:
        if self._probs is None:
            self._probs = self.head.probabilities(self.pool)
        return self._probs

    def space(self, name: str) -> np.ndarray:
        """The pool's rows as points of a feature space (``SPACES``)."""
        if name == "answers":
            return np.sqrt(np.clip(self.probs, 0, None))
        return unit(self.sigs[self.pool] if name == "thumbnails" else self.features[self.pool])

    def rows(self, positions) -> tuple[list[int], list[int]]:
        return [int(self.pool[i]) for i in positions], []


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, rng: np.random.Generator, steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """k-means (k-means++ start, ``steps`` Lloyd steps): (centres (k, D), each row's cluster)."""
    n = len(x)
    k = min(k, n)
    square = (x * x).sum(1)
    centres = [x[rng.integers(n)]]
    d2 = np.maximum(square - 2 * x @ centres[0] + centres[0] @ centres[0], 0)
    for _ in range(1, k):
        c = x[rng.choice(n, p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(n)]
        centres.append(c)
        d2 = np.minimum(d2, np.maximum(square - 2 * x @ c + c @ c, 0))
    c = np.array(centres)
    for _ in range(steps):
        assign = np.argmin(square[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 1)
        for j in range(k):
            if (assign == j).any():
                c[j] = x[assign == j].mean(0)
    return c, np.argmin(square[:, None] - 2 * x @ c.T + (c * c).sum(1)[None], 1)


def fill(chosen: list[int], order: np.ndarray, count: int) -> list[int]:
    """``chosen``, topped up to ``count`` from ``order`` (positions, best first)."""
    taken = set(chosen)
    return (chosen + [int(i) for i in order if int(i) not in taken])[:count]


def by_score(turn: Turn, score: np.ndarray) -> tuple[list[int], list[int]]:
    return turn.rows(np.argsort(-score, kind="stable")[:turn.count])


def typical(turn: Turn, space: str) -> tuple[list[int], list[int]]:
    """The photo nearest each centre of a k-means with one cluster per pick: typical and diverse."""
    x = turn.space(space)
    centres, _ = kmeans(x, turn.count, turn.rng)
    d = (x * x).sum(1)[:, None] - 2 * x @ centres.T
    chosen: list[int] = []
    for j in range(len(centres)):
        chosen += [next(int(i) for i in np.argsort(d[:, j]) if int(i) not in chosen)]
    return turn.rows(chosen)


def cluster_margin(turn: Turn, space: str) -> tuple[list[int], list[int]]:
    """The ``CANDIDATES`` × picks most uncertain photos (margin), clustered into one k-means
    cluster per pick in ``space``; each cluster's most uncertain photo."""
    score = uncertainty(turn.probs)
    order = np.argsort(-score, kind="stable")
    candidates = order[:CANDIDATES * turn.count]
    _, assign = kmeans(turn.space(space)[candidates], turn.count, turn.rng)
    chosen = [int(candidates[assign == j][np.argmax(score[candidates[assign == j]])])
              for j in range(assign.max() + 1) if (assign == j).any()]
    return turn.rows(fill(sorted(chosen, key=lambda i: -score[i]), order, turn.count))


def balanced(turn: Turn) -> tuple[list[int], list[int]]:
    """Margin uncertainty spread over the predicted classes: round robin, the most rarely predicted
    class first, each class giving its most uncertain photo left."""
    predicted = turn.probs.argmax(1)
    score = uncertainty(turn.probs)
    counts = np.bincount(predicted, minlength=turn.probs.shape[1])
    queues = [list(np.flatnonzero(predicted == c)[np.argsort(-score[predicted == c], kind="stable")])
              for c in np.argsort(counts, kind="stable") if counts[c]]
    chosen: list[int] = []
    while len(chosen) < min(turn.count, len(turn.pool)):
        for q in queues:
            if q and len(chosen) < turn.count:
                chosen.append(int(q.pop(0)))
    return turn.rows(chosen)


def entropy(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-12, 1)
    return -(p * np.log(p)).sum(1)


def queue(turn: Turn, diversity: float = DIVERSITY) -> tuple[list[int], list[int]]:
    """``labelling_queue`` as ``binwise review`` orders photos: labelling a shown photo labels its look-alikes."""
    entries = labelling_queue(turn.probs, turn.sigs[turn.pool], count=turn.count, diversity=diversity)
    return [int(turn.pool[e.index]) for e in entries], [int(turn.pool[i]) for e in entries for i in e.look_alikes]


def hybrid(turn: Turn, space: str) -> tuple[list[int], list[int]]:
    """Cold start aware: typical photos (``typical``) the first ``HYBRID_ROUNDS`` rounds, margin after."""
    return typical(turn, space) if turn.round <= HYBRID_ROUNDS else by_score(turn, uncertainty(turn.probs))


# name: (what a service needs: "answers", "thumbnails", "features" or "" for nothing, the picker)
STRATEGIES: dict[str, tuple[str, Callable[[Turn], tuple[list[int], list[int]]]]] = {
    "random": ("", lambda t: (t.rng.choice(t.pool, min(t.count, len(t.pool)), replace=False).tolist(), [])),
    "queue": ("answers+thumbnails", queue),
    "margin": ("answers", lambda t: by_score(t, uncertainty(t.probs))),
    "entropy": ("answers", lambda t: by_score(t, entropy(t.probs))),
    "balanced": ("answers", balanced),
    **{f"{kind} {space}": (space if kind == "typical" or space == "answers" else f"answers+{space}",
                           partial(picker, space=space))
       for kind, picker in (("typical", typical), ("hybrid", hybrid), ("cluster-margin", cluster_margin))
       for space in SPACES},
}


def strategy(name: str) -> Callable[[Turn], tuple[list[int], list[int]]]:
    """A picker of ``STRATEGIES``, or ``queue d=X``: the queue at diversity X (the tuning record)."""
    if name.startswith("queue d="):
        return partial(queue, diversity=float(name.split("=")[1]))
    return STRATEGIES[name][1]


def measure(head: Head, val: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    predicted = head.probabilities(val).argmax(1)
    truth = labels[val]
    right = int((predicted == truth).sum())
    recalls = [float((predicted[truth == c] == c).mean()) for c in range(num_classes) if (truth == c).any()]
    return {"val_acc": right / len(val), "val_acc_ci95": wilson_interval(right, len(val)),
            "smallest_class_recall": min(recalls)}


def simulate(name: str, head: Head, start: np.ndarray, pool: np.ndarray, val: np.ndarray, labels: np.ndarray,
             sigs: np.ndarray, features: np.ndarray, rounds: int, picks: int, seed: int, num_classes: int,
             first: dict) -> list[dict]:
    labelled, left = list(start), pool.copy()
    rng = np.random.default_rng([seed, 29])
    picker = strategy(name)
    history = [{"round": 0, "labels": len(labelled), "picked": 0, "look_alikes": 0, **first}]
    head.fit(np.array(labelled), seed)  # the starting model (the same for every strategy of a seed)
    for r in range(1, rounds + 1):
        if not len(left):
            break
        shown, alike = picker(Turn(head, left, sigs, features, rng, r, min(picks, len(left))))
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


def stats(gaps) -> dict:
    gaps = np.asarray(gaps, np.float64)
    return {"mean": float(gaps.mean()), "standard_error": float(gaps.std(ddof=1) / np.sqrt(len(gaps)))
            if len(gaps) > 1 else None, "min": float(gaps.min()), "max": float(gaps.max()),
            "seeds_ahead": int((gaps > 0).sum()), "seeds_behind": int((gaps < 0).sum())}


def paired(runs: list[list[dict]], baseline: list[list[dict]]) -> dict:
    """A strategy's validation top-1 minus the baseline's on the same seed (same starting set): per
    round, and each seed's mean over rounds 1–last; mean, standard error and range over seeds."""
    rounds = min(len(h) for h in runs + baseline)
    gaps = np.array([[a[r]["val_acc"] - b[r]["val_acc"] for r in range(rounds)] for a, b in zip(runs, baseline)])
    return {"per_round": [{"round": r, **stats(gaps[:, r])} for r in range(rounds)],
            "mean_over_rounds": stats(gaps[:, 1:].mean(1)), "last_round": stats(gaps[:, -1])}


def goal(summary: dict, name: str, picks_total: int) -> dict:
    """The smallest labels beyond the start at which ``name``'s mean accuracy reaches random's
    last-round mean, as a share of random's picks (the resolution is one round)."""
    target = summary["random"][-1]["val_acc"]
    reached = next((row for row in summary[name][1:] if row["val_acc"] >= target), None)
    share = reached["picked_and_look_alikes"] / picks_total if reached else None
    return {"random_last_round_val_acc": target, "random_picks": picks_total,
            "round_reaching_it": reached and reached["round"],
            "labels_beyond_start": reached and reached["picked_and_look_alikes"],
            "share_of_random_picks": share, "goal_share": GOAL, "met": share is not None and share <= GOAL}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def points(s: dict) -> str:
    se = f" ± {100 * s['standard_error']:.2f}" if s["standard_error"] is not None else ""
    return f"{100 * s['mean']:+.2f}{se}"


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


def comparison(summary: dict, against: dict, goals: dict, rounds: int, queue: dict) -> str:
    """One line a strategy: mean top-1 per round, same seed minus random (mean over rounds 1–last
    and last round, ± standard error; seeds ahead/behind), the goal check, same seed minus the
    queue (rounds 1–last)."""
    lines = ["| strategy | needs | " + " | ".join(f"r{r}" for r in range(rounds + 1))
             + " | minus random, rounds 1–last (ahead/behind) | minus random, last round | goal: labels beyond "
             "start to reach random's last round, share of its picks | minus queue, rounds 1–last |",
             "|---" * (rounds + 7) + "|"]
    for name, rows in summary.items():
        g = goals[name]
        reach = (f"{g['labels_beyond_start']:.0f} ({g['share_of_random_picks']:.0%})"
                 if g["share_of_random_picks"] is not None else "not reached")
        over, last = against[name]["mean_over_rounds"], against[name]["last_round"]
        lines.append(f"| {name} | {needs(name) or '–'} | " + " | ".join(pct(row["val_acc"]) for row in rows)
                     + f" | {points(over)} ({over['seeds_ahead']}/{over['seeds_behind']}) | {points(last)} | {reach} | "
                     + (points(queue[name]["mean_over_rounds"]) if name in queue else "–") + " |")
    return "\n".join(lines) + "\n"


def needs(name: str) -> str:
    return "answers+thumbnails" if name.startswith("queue") else STRATEGIES[name][0]


def figure(summary: dict, target: float, ceiling: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, rows in summary.items():
        x = [row["labels"] for row in rows]
        line, = ax.plot(x, [100 * row["val_acc"] for row in rows], marker="o", ms=3, label=name,
                        ls="--" if needs(name) == "features" else "-")
        if len(summary) <= 4:
            ax.fill_between(x, [100 * row["val_acc_min"] for row in rows],
                            [100 * row["val_acc_max"] for row in rows], color=line.get_color(), alpha=0.15, lw=0)
    ax.axhline(100 * target, color="grey", ls=":", lw=1, label="random, last round")
    ax.axhline(100 * ceiling["val_acc"], color="black", ls="--", lw=1,
               label=f"the whole pool labelled ({ceiling['labels']} photos)")
    ax.set_xlabel("labelled photos (starting set + picked + look-alikes)")
    ax.set_ylabel("validation top-1 (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6 if len(summary) > 4 else 8, ncol=2 if len(summary) > 6 else 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=None, help="dataset folder (default: ../shared/data/trashnet)")
    parser.add_argument("--pretrained", default=None, help="backbone weights (default: $BINWISE_PRETRAINED)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--picks", type=int, default=100, help="photos picked per round")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds first-seed .. first-seed+seeds-1 (a confirmation run on fresh seeds)")
    parser.add_argument("--per-class", type=int, default=0, help="use at most this many photos per class (0: all)")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="comma-separated names of STRATEGIES (default: all); 'queue d=X' is the queue at "
                             "diversity X")
    parser.add_argument("--diversities", default="",
                        help="comma-separated diversities to add as 'queue d=X' (the DIVERSITY tuning record, "
                             "e.g. 0,0.25,1; the default's is 'queue')")
    parser.add_argument("--quick", action="store_true",
                        help="2 rounds of 30 picks, 1 seed, 40 photos per class: a smoke run")
    parser.add_argument("--publish", action="store_true",
                        help="draw the figure as docs/images/active_learning.png (else beside the results)")
    parser.add_argument("--name", default=None, help="results file stem (default: the date)")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the .json, .md and figure here instead of benchmarks/results/active_learning")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.picks, args.seeds, args.per_class = 2, 30, 1, args.per_class or 40
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    names += [f"queue d={float(d):g}" for d in args.diversities.split(",") if d.strip()
              and float(d) != DIVERSITY]
    if "random" not in names:
        names.insert(0, "random")
    for name in names:
        strategy(name)  # an unknown name fails here, before any work
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
    features = found.features[:, 0].numpy()

    rest, held = stratified_split(samples, SHARE, 0, group)
    val = np.array(sorted(row_of[s.path] for s in held))
    scratch = Path(tempfile.mkdtemp(prefix="binwise-al-"))
    try:
        head = Head(found.features, found.labels, pretrained, dataset.taxonomy, scratch)
        num_classes = dataset.taxonomy.num_classes
        runs: dict[str, list] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            pool_samples, start_samples = stratified_split(rest, SHARE, seed, group)
            start = np.array(sorted(row_of[s.path] for s in start_samples))
            pool = np.array(sorted(row_of[s.path] for s in pool_samples))
            head.fit(start, seed)
            first = measure(head, val, labels, num_classes)
            for name in names:
                runs.setdefault(name, []).append(simulate(name, head, start, pool, val, labels, sigs, features,
                                                          args.rounds, args.picks, seed, num_classes, first))
                last = runs[name][-1][-1]
                print(f"seed {seed} {name:26s} labels {last['labels']:4d} val {pct(last['val_acc'])} "
                      f"({time.perf_counter() - started:.0f} s)", flush=True)
        everything = np.array(sorted(row_of[s.path] for s in rest))  # the ceiling: the whole pool labelled
        ceiling = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            head.fit(everything, seed)
            ceiling.append(measure(head, val, labels, num_classes))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    summary = {name: summarise(r) for name, r in runs.items()}
    picks_total = args.rounds * args.picks
    goals = {name: goal(summary, name, picks_total) for name in summary}
    against = {name: paired(r, runs["random"]) for name, r in runs.items()}
    tuning = {name: rows for name, rows in summary.items() if name.startswith("queue")}
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
        "rounds": args.rounds, "picks_per_round": args.picks, "seeds": args.seeds, "first_seed": args.first_seed, "quick": args.quick,
        "model": "binwise's HEAD preset (--mode head) fitted per round with training.head.head_phase + fit_head "
                 "on cached eval-view backbone features (training.feature_cache.extract_features), as train_head's "
                 "final 'head (all train)' phase; pool probabilities = softmax of the head's logits (temperature 1)",
        "strategies": {name: {"needs": needs(name), "doc": (strategy(name).__doc__ or "").strip()
                              if not isinstance(strategy(name), partial) else
                              (strategy(name).func.__doc__ or "").strip()} for name in names},
        "spaces": SPACES, "hybrid_typical_rounds": HYBRID_ROUNDS, "cluster_margin_candidates": CANDIDATES,
        "feature_seconds": feature_seconds, "wall_seconds": wall,
        "summary": summary,
        "goal": goals,
        "all_labelled": {"labels": len(everything), "val_acc": float(np.mean([c["val_acc"] for c in ceiling])),
                         "per_seed": ceiling},
        "minus_random_same_seed": against,
        "minus_queue_same_seed": {name: paired(r, runs["queue"]) for name, r in runs.items()} if "queue" in runs else {},
        "runs": runs,
    }
    if len(tuning) > 1:
        results["diversity_tuning"] = {"default": DIVERSITY, "minus_default_same_seed": {
            name: paired(runs[name], runs["queue"])["mean_over_rounds"] for name in tuning}}
    out = args.out or OUT
    out.mkdir(parents=True, exist_ok=True)
    stem = args.name or time.strftime("%Y-%m-%d") + ("-quick" if args.quick else "")
    (out / f"{stem}.json").write_text(json.dumps(results, indent=2))
    text = (f"# Active-learning simulation ({Path(data).name}, {len(samples)} photos, {len(val)} validation, "
            f"{results['starting_labelled']} labelled at the start, {args.seeds} seeds, {args.rounds} rounds of "
            f"{args.picks})\n\n"
            f"Validation top-1, mean of seeds, per round; same seed minus random in points (± standard error "
            f"over seeds; seeds ahead/behind); the goal: random's last round ({pct(summary['random'][-1]['val_acc'])}) "
            f"reached with at most {GOAL:.0%} of its {picks_total} picks.\n\n"
            + comparison(summary, against, goals, args.rounds, results["minus_queue_same_seed"])
            + f"\nThe whole pool labelled ({len(everything)} photos): "
            + f"{pct(results['all_labelled']['val_acc'])} (mean of seeds).\n"
            + "\nNeeds: what a service must store per photo: answers (class probabilities) and thumbnails "
              "(signatures) it has; features (the backbone's) it has not (an upper bound).\n"
            + "\n## Every round\n\n" + table(summary)
            + f"\nWall time {wall:.0f} s (features {feature_seconds:.0f} s).\n")
    (out / f"{stem}.md").write_text(text)
    published = args.publish and not args.quick
    figure(summary, summary["random"][-1]["val_acc"], results["all_labelled"],
           FIGURE if published else out / f"{stem}.png",
           f"{Path(data).name}: {args.seeds} seeds, {args.picks} picks a round")
    print(text)


if __name__ == "__main__":
    main()
