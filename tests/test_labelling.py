"""The labelling queue (``data.labelling``) on generated answers and signatures: near-duplicates are
shown once, the most uncertain photo comes first, diversity puts a different confusion before a
second photo of the same one, and ``count`` bounds the queue."""

import numpy as np
import pytest

from binwise.data.labelling import DIVERSITY, labelling_queue, uncertainty
from binwise.data.near_duplicates import NEAR, groups_of


def unit_signatures(n: int, seed: int = 0) -> np.ndarray:
    """``n`` random unit vectors of the signature's size: far from one another (cosine near 0)."""
    v = np.random.default_rng(seed).normal(size=(n, 768))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def near_copy(signature: np.ndarray, seed: int = 1) -> np.ndarray:
    """A near-duplicate's signature: the same layout with a little noise."""
    v = signature + np.random.default_rng(seed).normal(0, 0.005, signature.shape)
    return (v / np.linalg.norm(v)).astype(np.float32)


def test_uncertainty_is_one_minus_the_margin():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    assert uncertainty(p) == pytest.approx([1.0, 0.0, 0.7])


def test_the_most_uncertain_photo_comes_first():
    p = np.array([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.7, 0.2, 0.1], [0.34, 0.33, 0.33]])
    queue = labelling_queue(p, diversity=0.0)
    assert [e.index for e in queue] == [3, 1, 2, 0]
    assert [e.uncertainty for e in queue] == pytest.approx([0.99, 0.95, 0.5, 0.15])
    assert labelling_queue(p)[0].index == 3  # with the default diversity too: nothing is picked before it
    assert all(e.look_alikes == () for e in queue)  # no signatures: nothing collapses


def test_near_duplicates_collapse_into_one_entry_shown_by_the_most_uncertain():
    sigs = unit_signatures(3)
    sigs = np.stack([sigs[0], near_copy(sigs[0]), sigs[1], near_copy(sigs[0], seed=2), sigs[2]])
    assert sigs[0] @ sigs[1] >= NEAR and sigs[0] @ sigs[3] >= NEAR and abs(sigs[0] @ sigs[2]) < NEAR
    p = np.array([[0.7, 0.2, 0.1],  # the burst, least uncertain shot
                  [0.45, 0.4, 0.15],  # the burst, most uncertain shot
                  [0.6, 0.3, 0.1],
                  [0.8, 0.1, 0.1],  # the burst
                  [0.9, 0.05, 0.05]])
    queue = labelling_queue(p, sigs, diversity=0.0)
    assert [e.index for e in queue] == [1, 2, 4]
    assert queue[0].look_alikes == (0, 3)
    assert queue[1].look_alikes == () and queue[2].look_alikes == ()
    shown = [e.index for e in queue] + [r for e in queue for r in e.look_alikes]
    assert sorted(shown) == list(range(5))  # labelling the queue labels every photo once
    # groups the caller found already give the same queue
    assert labelling_queue(p, diversity=0.0, groups=groups_of(sigs)) == queue


def test_diversity_puts_a_different_confusion_before_a_second_photo_of_the_same_one():
    p = np.array([[0.50, 0.48, 0.02],  # cardboard or paper: the most uncertain
                  [0.50, 0.46, 0.04],  # cardboard or paper again, nearly as uncertain
                  [0.02, 0.55, 0.43],  # paper or glass: a different hesitation, less uncertain
                  [0.95, 0.03, 0.02]])
    assert [e.index for e in labelling_queue(p, diversity=0.0)] == [0, 1, 2, 3]
    assert [e.index for e in labelling_queue(p, diversity=DIVERSITY)][:3] == [0, 2, 1]
    # the entries still report the photo's own uncertainty, not the lowered score
    assert labelling_queue(p, diversity=DIVERSITY)[1].uncertainty == pytest.approx(1 - (0.55 - 0.43))


def test_count_limits_the_length():
    p = np.random.default_rng(0).dirichlet(np.ones(4), size=10)
    assert len(labelling_queue(p, count=3)) == 3
    assert len(labelling_queue(p, count=0)) == 0
    assert len(labelling_queue(p, count=50)) == 10
    assert len(labelling_queue(p)) == 10
    assert [e.index for e in labelling_queue(p, count=3)] == [e.index for e in labelling_queue(p)][:3]
    sigs = unit_signatures(10)
    sigs[5] = near_copy(sigs[4])  # nine groups
    assert len(labelling_queue(p, sigs, count=50)) == 9
    assert labelling_queue(np.zeros((0, 4)), np.zeros((0, 768), np.float32), count=5) == []


def test_the_active_learning_simulation_runs_quick(garbage26_data, pretrained_weights, tmp_path):
    """``benchmarks/studies/active_learning.py --quick`` end to end on a few garbage26 photos."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(root / "benchmarks" / "studies" / "active_learning.py"), "--quick",
                    "--per-class", "10", "--data", str(garbage26_data), "--pretrained", str(pretrained_weights),
                    "--out", str(tmp_path), "--name", "quick"], check=True, env=env, capture_output=True, timeout=600)
    result = json.loads((tmp_path / "quick.json").read_text())
    assert (tmp_path / "quick.md").is_file() and (tmp_path / "quick.png").is_file()
    assert {"queue", "margin", "random", "entropy", "balanced", "hybrid answers", "hybrid thumbnails",
            "hybrid features"} <= set(result["summary"]) == set(result["strategies"])
    assert result["minus_random_same_seed"]["random"]["mean_over_rounds"]["mean"] == 0
    assert set(result["goal"]) == set(result["summary"])
    for rows in result["summary"].values():
        assert [row["round"] for row in rows] == [0, 1, 2]
        assert rows[1]["labels"] >= rows[0]["labels"] + 30  # 30 picks a round, plus the queue's look-alikes
        assert 0 <= rows[-1]["val_acc"] <= 1
    random_runs = result["runs"]["random"]
    assert random_runs[0][-1]["labels"] == random_runs[0][0]["labels"] + 60
