"""Which unlabelled photos to label first: the review queue's order (``binwise review``) and the
active-learning simulation's (``benchmarks/studies/active_learning.py``), one function for both.

A photo is worth labelling when the model hesitates on it: its uncertainty is one minus the margin
between its two most probable classes. Labelling the twenty most uncertain photos is wasteful when
they are twenty shots of one object, or twenty of the same confusion (cardboard read as paper), so:

- near-duplicates (``near_duplicates``: thumbnail signatures at cosine ≥ ``NEAR``) are collapsed: a
  group is shown once, by its most uncertain photo, and labelling it labels the group;
- the queue is filled greedily, each pick's score lowered by ``diversity`` times its similarity to
  the closest photo already picked, where two photos are as similar as their answers (the
  Bhattacharyya coefficient of their class probabilities: 1 for the same hesitation between the
  same classes, 0 for disjoint ones). Answers, not backbone features, so the queue works the same
  on every model format a service runs.

``DIVERSITY`` was checked by the simulation (``benchmarks/studies/active_learning.py``, results in
``benchmarks/results/active_learning/2026-12-07*``): on trashnet's validation split, diversity 0,
0.25, 0.5 and 1 gave mean accuracies over five rounds within 0.7 points of one another, in an order
that changed with the seeds (3 seeds: 0.25 ahead of 0.5 by 0.28 ± 0.33 points, 1 behind by
0.38 ± 0.48; 10 seeds: 0 ahead by 0.43 ± 0.22, 1 level), so the data does not clearly choose and
0.5 is kept. Against random picks (10 to 25 seeds, docs/benchmarks.md, "Which photos to label
first"), the queue gains +3.7 ± 0.3 points a round on garbage26's train split, reaching random's
last round with 43% of its labels, and +0.6 ± 0.3 on trashnet's, where it needs 84%. Thirteen other
strategies (entropy, class-balanced, k-means typicality, hybrids, cluster-margin, in the answers',
thumbnails' and backbone's feature spaces) did no clearly better than this one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .near_duplicates import groups_of

DIVERSITY = 0.5


@dataclass(frozen=True)
class QueueEntry:
    index: int  # the photo shown (a row of the inputs)
    uncertainty: float  # 1 - (p1 - p2), in [0, 1]
    look_alikes: tuple[int, ...]  # rows of its near-duplicates, labelled with it


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """1 - (top probability - second), per row: 0 for a sure answer, 1 for a tie."""
    p = np.asarray(probabilities, np.float64)
    if p.shape[1] < 2:
        return np.zeros(len(p))
    top2 = -np.partition(-p, 1, axis=1)[:, :2]
    return 1.0 - (top2[:, 0] - top2[:, 1])


def labelling_queue(probabilities: np.ndarray, signatures: np.ndarray | None = None, count: int | None = None,
                    diversity: float = DIVERSITY, groups: list[int] | None = None) -> list[QueueEntry]:
    """The first ``count`` photos to label (all groups when None), most useful first.

    ``probabilities``: (N, C) the model's answers; ``signatures``: (N, D) their
    ``near_duplicates.signature``, or None to collapse nothing; ``groups``: instead of signatures,
    their near-duplicate group ids (``near_duplicates.groups_of``) when the caller has them already."""
    p = np.clip(np.asarray(probabilities, np.float64), 0.0, None)
    n = len(p)
    if groups is None:
        groups = groups_of(signatures) if signatures is not None and n else list(range(n))
    score = uncertainty(p) if n else np.zeros(0)
    members: dict[int, list[int]] = {}
    for row, group in enumerate(groups):
        members.setdefault(group, []).append(row)
    # each group shown by its most uncertain photo
    shown = np.array(sorted(max(rows, key=lambda r: score[r]) for rows in members.values()), dtype=np.int64)
    roots = np.sqrt(p[shown] / np.maximum(p[shown].sum(1, keepdims=True), 1e-12))
    closest = np.zeros(len(shown))  # similarity to the nearest photo already picked
    open_ = np.ones(len(shown), bool)
    queue = []
    for _ in range(len(shown) if count is None else min(count, len(shown))):
        gain = np.where(open_, score[shown] - diversity * closest, -np.inf)
        pick = int(np.argmax(gain))
        open_[pick] = False
        closest = np.maximum(closest, roots @ roots[pick])
        row = int(shown[pick])
        queue.append(QueueEntry(row, float(score[row]), tuple(r for r in members[groups[row]] if r != row)))
    return queue
