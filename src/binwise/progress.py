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


SILENT = Progress()
