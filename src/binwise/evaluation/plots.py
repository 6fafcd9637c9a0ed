"""Figures (PNG, matplotlib's non-interactive Agg backend): training curves, confusion matrices,
misclassified photos, Grad-CAM, learning-rate schedules. Class and bin names are English and,
where the taxonomy has them and a Chinese font is installed, Chinese (``fonts``)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402

from ..errors import BinwiseError  # noqa: E402
from .fonts import bilingual, use_cjk_fallback  # noqa: E402
from ..images import open_image  # noqa: E402
from ..taxonomy.classes import Taxonomy  # noqa: E402

# The training stages' names (training/: "head (train - val)", "head warm start (all train)", ...)
# in the words a legend needs.
STAGE_WORDS = {"head": "last layer only", "head warm start": "last layer only (warm start)",
               "finetune": "fine-tuning the last blocks"}


def _subplots(*args, **kwargs):
    use_cjk_fallback()  # before any text is made: a text takes its font family when created
    return plt.subplots(*args, **kwargs)


def _save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def phase_in_words(name: str) -> str:
    """'head (train - val)' -> 'last layer only'; 'head (all train)' -> 'last layer only, final
    fit on training + validation photos'. Other names are kept as they are."""
    match = re.fullmatch(r"(.+) \((train - val|all train)\)", name)
    if not match:
        return name
    stage = STAGE_WORDS.get(match[1], match[1])
    return f"{stage}, final fit on training + validation photos" if match[2] == "all train" else stage


def training_curves(phases: list[str], histories: list[list[dict]], path: Path) -> None:
    """Loss, accuracy and learning rate per epoch: one colour per phase, solid on the photos it
    trains on, dashed on the validation photos (phases that have them); one legend below."""
    from matplotlib.lines import Line2D

    fig, axes = _subplots(1, 3, figsize=(15, 4))
    validated = [bool(history) and "val_loss" in history[0] for history in histories]
    legend = [Line2D([], [], color="black", label="training photos")]
    if any(validated):
        legend.append(Line2D([], [], color="black", linestyle="--", label="validation photos"))
    # one distinct colour per phase, however many (matplotlib's C0-C9 cycle would repeat after ten)
    colours = ([f"C{i}" for i in range(len(phases))] if len(phases) <= 10
               else [matplotlib.colormaps["turbo"](x) for x in np.linspace(0, 1, len(phases))])
    for i, (name, history) in enumerate(zip(phases, histories)):
        colour = colours[i]
        epochs = [r["epoch"] for r in history]
        axes[0].plot(epochs, [r["train_loss"] for r in history], color=colour)
        axes[1].plot(epochs, [r["train_acc"] for r in history], color=colour)
        if validated[i]:
            axes[0].plot(epochs, [r["val_loss"] for r in history], "--", color=colour)
            axes[1].plot(epochs, [r["val_acc"] for r in history], "--", color=colour)
        axes[2].plot(epochs, [r["lr"] for r in history], color=colour)
        legend.append(Line2D([], [], color=colour, linewidth=4, label=phase_in_words(name)))
    for ax, title in zip(axes, ("loss", "accuracy", "learning rate (end of epoch)")):
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    # below the panels (the saved figure's tight box grows to hold it)
    fig.legend(handles=legend, loc="upper center", bbox_to_anchor=(0.5, 0), ncol=min(4, len(legend)),
               frameon=False)
    _save(fig, path)


def _matrix(matrix: list[list[int]], labels: list[str], title: str, path: Path, unit: str = "class") -> None:
    _save(matrix_figure(matrix, labels, title, unit), path)


def matrix_figure(matrix: list[list[int]], labels: list[str], title: str, unit: str = "class"):
    """A confusion matrix: counts in the cells, coloured by the fraction of the true row."""
    m = np.asarray(matrix)
    n = len(labels)
    size = max(4.0, 0.38 * n + 2)
    fig, ax = _subplots(figsize=(size + 1, size))
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
    fig.colorbar(image, ax=ax, fraction=0.046, label=f"fraction of the true {unit}")
    return fig


def class_labels(taxonomy: Taxonomy) -> list[str]:
    zh = taxonomy.classes_zh or [""] * taxonomy.num_classes
    return [bilingual(en, cn) for en, cn in zip(taxonomy.classes_en, zh)]


def confusion(report: dict, taxonomy: Taxonomy, path: Path) -> None:
    """Class-level confusion matrix (counts in cells, colour by row fraction)."""
    _matrix(report["confusion"], class_labels(taxonomy),
            f"top-1 {report['top1']:.1%} on {report['count']} photos", path)


def bin_confusion(report: dict, taxonomy: Taxonomy, path: Path) -> None:
    _matrix(report["bin_confusion"], [bilingual(b.en, b.zh) for b in taxonomy.bins],
            f"bin accuracy {report['bin_accuracy']:.1%} on {report['count']} photos", path, unit="bin")


def short_name(path: str, width: int = 26) -> str:
    """The file name, its middle elided to fit ``width`` characters (the end keeps the suffix)."""
    name = Path(path).name
    if len(name) <= width:
        return name
    tail = (width - 1) // 2
    return f"{name[:width - 1 - tail]}…{name[-tail:]}"


def misclassified_grid(mistakes: list[dict], path: Path, limit: int = 36,
                       taxonomy: Taxonomy | None = None) -> plt.Figure:
    """Thumbnails of misclassified photos, each titled with its file name and 'true -> predicted
    (confidence)'; class names in Chinese too when ``taxonomy`` (the model's) has them. Returns
    the (closed) figure, whose texts tell what it shows."""
    names = dict(zip(taxonomy.classes_en, class_labels(taxonomy))) if taxonomy else {}
    shown = mistakes[:limit]
    cols = max(1, min(6, len(shown)))
    rows = max(1, math.ceil(len(shown) / cols))
    fig, axes = _subplots(rows, cols, figsize=(2.8 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, m in zip(axes.flat, shown):
        try:
            img = open_image(m["path"])
            img.thumbnail((224, 224))
            ax.imshow(img)
        except BinwiseError:
            pass
        true, predicted = names.get(m["true"], m["true"]), names.get(m["predicted"], m["predicted"])
        ax.set_title(f"{short_name(m['path'])}\n{true}\n-> {predicted} ({m['confidence']:.0%})", fontsize=9)
    if not shown:
        axes[0, 0].text(0.5, 0.5, "no misclassified photos", ha="center", va="center")
    elif len(mistakes) > limit:
        fig.suptitle(f"first {limit} of {len(mistakes)} misclassified photos")
    _save(fig, path)
    return fig


def grad_cam_figure(overlay, class_label: str, probability: float, path: Path) -> None:
    """A Grad-CAM overlay (``explain.overlay``) titled with the class it explains and that class's
    probability, beside a colour bar of the heatmap's jet scale."""
    fig, ax = _subplots(figsize=(4.6, 3.9))
    ax.imshow(overlay)
    ax.axis("off")
    ax.set_title(f"{class_label}\nprobability {probability:.1%}", fontsize=11)
    scale = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(0, 1), "jet")
    bar = fig.colorbar(scale, ax=ax, fraction=0.046, pad=0.04, ticks=[0, 1])
    bar.ax.set_yticklabels(["none", "most"])
    bar.set_label("Grad-CAM: how much this region\nraised the class score", fontsize=9)
    _save(fig, Path(path))


def reliability_diagram(status_report: dict, path: Path) -> None:
    """Accuracy against mean confidence per confidence bin, before and after the temperature
    (``evaluate.status_report``); the diagonal is perfect calibration."""
    fig, ax = _subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", label="perfectly calibrated")
    for key, label in (("before", "temperature 1"), ("after", f"temperature {status_report['temperature']:.2f}")):
        rows = [r for r in status_report[f"reliability_{key}"] if r["count"]]
        ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "o-",
                label=f"{label}: ECE {status_report[f'ece_{key}']:.3f}")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"reliability ({status_report['ece_bins']} bins)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    _save(fig, path)


def risk_coverage(status_report: dict, path: Path) -> None:
    """Accuracy of the answered photos against the share answered, answering the most confident
    first; the point marks the model's thresholds (unknown photos unanswered too)."""
    fig, ax = _subplots(figsize=(6, 4))
    curve = status_report["risk_coverage"]
    ax.plot(curve["coverage"], curve["accuracy"], label="answering the most confident first")
    at = status_report["at_thresholds"]
    if at["answered_accuracy"] is not None:
        ax.plot([at["coverage"]], [at["answered_accuracy"]], "o", color="C3",
                label=f"at the thresholds: {at['coverage']:.1%} answered, {at['answered_accuracy']:.1%} right")
    ax.set_xlabel("coverage (share of photos answered)")
    ax.set_ylabel("accuracy of the answered photos")
    ax.set_xlim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")
    _save(fig, path)


def learning_rates(curves: dict[str, list[float]], path: Path, steps_per_epoch: int | None = None) -> None:
    """One line per schedule: learning rate against step."""
    fig, ax = _subplots(figsize=(8, 4))
    for name, values in curves.items():
        ax.plot(range(len(values)), values, label=name)
    ax.set_xlabel("step" + (f" ({steps_per_epoch} per epoch)" if steps_per_epoch else ""))
    ax.set_ylabel("learning rate")
    ax.grid(alpha=0.3)
    ax.legend()
    _save(fig, path)
