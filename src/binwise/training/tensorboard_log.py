"""TensorBoard event files of a training run, written through the progress callbacks.

``TensorBoardLog(run_dir / "tensorboard")`` receives what a progress bar does, plus each epoch's
line of ``log.csv`` and the run's result: curves per phase (``<phase>/train_loss``, ``val_acc``,
``lr``...), then the test top-1, each class's recall, the confusion matrix as a figure and the mode
auto chose with its reason. It needs the ``tensorboard`` package (``binwise train`` uses it when it
is installed); ``tensorboard --logdir runs/`` then shows and compares runs.
"""

from __future__ import annotations

from pathlib import Path

from ..progress import Progress


class TensorBoardLog(Progress):
    def __init__(self, folder: Path):
        self.folder = folder
        self._writer = None

    @property
    def writer(self):
        """Made on the first record, so a run refused before it starts leaves no folder behind."""
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        return self._writer

    def epoch(self, task: str, row: dict) -> None:
        step = int(row.get("epoch", 0))
        for key, value in row.items():
            if key != "epoch" and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{task}/{key}", value, step)
        self.writer.flush()

    def result(self, metrics: dict, report: dict) -> None:
        from ..evaluation.plots import matrix_figure

        for key in ("test_top1", "test_bin_accuracy", "smallest_class_recall"):
            if isinstance(metrics.get(key), (int, float)):
                self.writer.add_scalar(f"test/{key}", metrics[key], 0)
        for row in report.get("per_class", []):
            self.writer.add_scalar(f"test_recall/{row['class']}", row["recall"], 0)
        self.writer.add_text("mode", f"{metrics.get('mode')} chose {metrics.get('chosen')}: "
                             f"{metrics.get('reason') or 'no choice to make'}", 0)
        self.writer.add_figure("test/confusion", matrix_figure(
            report["confusion"], report["classes"], f"top-1 {report['top1']:.1%} on {report['count']} photos"), 0)
        self.writer.close()
