"""The one exception type users see: a message naming the file and the problem, no traceback."""

from __future__ import annotations

import os


class BinwiseError(Exception):
    """An error caused by the user's input (a file, a flag, a dataset), with a readable message."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        self.path = os.fspath(path) if path is not None else None
        super().__init__(f"{self.path}: {message}" if self.path else message)
