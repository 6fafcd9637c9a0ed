"""Figures (PNG, matplotlib's non-interactive Agg backend): training curves, confusion matrices,
misclassified photos, learning-rate schedules."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from .images import open_image  # noqa: E402
from .errors import BinwiseError  # noqa: E402
from .taxonomy import Taxonomy  # noqa: E402


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def training_curves(phases: list[str], histories: list[list[dict]], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch, one line style per phase."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, history in zip(phases, histories):
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["train_loss"] for r in history], label=f"{name} train")
        axes[1].plot(epochs, [r["train_acc"] for r in history], label=f"{name} train")
        if history and "val_loss" in history[0]:
            axes[0].plot(epochs, [r["val_loss"] for r in history], "--", label=f"{name} validation")
            axes[1].plot(epochs, [r["val_acc"] for r in history], "--", label=f"{name} validation")
        axes[2].plot(epochs, [r["lr"] for r in history], label=name)
    for ax, title in zip(axes, ("loss", "accuracy", "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def _matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> None:
    m = np.asarray(matrix)
    n = len(labels)
    size = max(4.0, 0.38 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    rows = m.sum(1, keepdims=True)
    image = ax.imshow(np.divide(m, rows, out=np.zeros(m.shape), where=rows > 0), cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > 0.5 * max(rows[i, 0], 1) else "black")
    ax.set_xticks(range(n), labels, rotation=90, fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    _save(fig, path)


def confusion(report: dict, taxonomy: Taxonomy, path: Path) -> None:
    """Class-level confusion matrix (counts in cells, colour by row fraction)."""
    _matrix(report["confusion"], list(taxonomy.classes_en),
            f"top-1 {report['top1']:.1%} on {report['count']} photos", path)


def bin_confusion(report: dict, taxonomy: Taxonomy, path: Path) -> None:
    _matrix(report["bin_confusion"], [b.en for b in taxonomy.bins],
            f"bin accuracy {report['bin_accuracy']:.1%} on {report['count']} photos", path)


def misclassified_grid(mistakes: list[dict], path: Path, limit: int = 36) -> None:
    """Thumbnails of misclassified photos, each titled 'true -> predicted (confidence)'."""
    shown = mistakes[:limit]
    cols = max(1, min(6, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.9 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, shown):
        try:
            img = open_image(m["path"])
            img.thumbnail((224, 224))
            ax.imshow(img)
        except BinwiseError:
            pass
        ax.set_title(f"{m['true']}\n-> {m['predicted']} ({m['confidence']:.0%})", fontsize=8)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no misclassified photos", ha="center", va="center")
    elif len(mistakes) > limit:
        fig.suptitle(f"first {limit} of {len(mistakes)} misclassified photos")
    _save(fig, path)


def learning_rates(curves: dict[str, list[float]], path: Path, steps_per_epoch: int | None = None) -> None:
    """One line per schedule: learning rate against step."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, label=name)
    ax.set_xlabel("step" + (f" ({steps_per_epoch} per epoch)" if steps_per_epoch else ""))
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
