"""The CLI's progress: a tqdm bar per task, on standard error."""

from __future__ import annotations

from ..progress import Progress


class ProgressBar(Progress):
    def __init__(self):
        self.bar = None

    def begin(self, task: str, total: int, done: int = 0, unit: str = "step") -> None:
        from tqdm import tqdm

        self.end()
        self.bar = tqdm(total=total, initial=done, desc=task, unit=unit, dynamic_ncols=True, leave=False)

    def resize(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def advance(self, count: int = 1, **stats) -> None:
        if self.bar is not None:
            self.bar.update(count)
            if stats:
                self.bar.set_postfix({k: f"{v:.4g}" if isinstance(v, float) else v for k, v in stats.items()},
                                     refresh=False)

    def end(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
