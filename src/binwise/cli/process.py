"""What a command that runs models sets for its whole process. The library never changes
process-wide state; the command that owns the process does, once, before it loads a model."""

from __future__ import annotations

import importlib.util


def own_the_process(threads: int | None = None) -> None:
    """glibc keeps freed memory for reuse (``predict.keep_freed_memory``), and torch, when it is
    installed, runs on ``threads`` intra-op threads (None: its default). Exported models get
    ``threads`` per session through ``Classifier.load``."""
    from ..inference.classifier import keep_freed_memory

    keep_freed_memory()  # before the runtimes start threads that allocate
    if threads and importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(threads)  # process-wide: torch has no per-model thread count
