"""Progress of long operations, reported to whoever asked for it.

The library never prints: a long operation takes a ``Progress`` and calls ``begin`` / ``advance`` /
``end`` on it; messages go through ``logging``. The CLI passes a progress bar (``cli.progress``);
everything else gets ``SILENT``.
"""

from __future__ import annotations


class Progress:
    """Receives the progress of one task at a time; this base class ignores it."""

    def begin(self, task: str, total: int, done: int = 0, unit: str = "step") -> None:
        """A task of ``total`` units starts, ``done`` of them already done (a resumed run)."""

    def resize(self, total: int) -> None:
        """The current task's ``total`` changed (a re-planned training phase)."""

    def advance(self, count: int = 1, **stats) -> None:
        """``count`` more units are done; ``stats`` (loss, accuracy, rate, eta...) describe them."""

    def end(self) -> None:
        """The current task is over."""

    def epoch(self, task: str, row: dict) -> None:
        """An epoch of a training task ended: ``row`` is its line of ``log.csv`` (losses, accuracies, rate)."""

    def result(self, metrics: dict, report: dict) -> None:
        """The run is over: its ``metrics.json`` values and the test report (per-class recall, confusion)."""


class Several(Progress):
    """Hands every call on to each of ``progresses`` (a progress bar and a TensorBoard log, say)."""

    def __init__(self, *progresses: Progress):
        self.progresses = progresses

    def begin(self, task: str, total: int, done: int = 0, unit: str = "step") -> None:
        for p in self.progresses:
            p.begin(task, total, done, unit)

    def resize(self, total: int) -> None:
        for p in self.progresses:
            p.resize(total)

    def advance(self, count: int = 1, **stats) -> None:
        for p in self.progresses:
            p.advance(count, **stats)

    def end(self) -> None:
        for p in self.progresses:
            p.end()

    def epoch(self, task: str, row: dict) -> None:
        for p in self.progresses:
            p.epoch(task, row)

    def result(self, metrics: dict, report: dict) -> None:
        for p in self.progresses:
            p.result(metrics, report)


SILENT = Progress()
