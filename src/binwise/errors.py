"""The one exception type users see: a message naming the file and the problem, no traceback."""

from __future__ import annotations

import os


class BinwiseError(Exception):
    """An error caused by the user's input (a file, a flag, a dataset), with a readable message.

    ``kind`` names the problem for programs (the service's HTTP status comes from it), so they
    never parse the message, which may contain any file name.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, kind: str = "invalid_input"):
        self.path = os.fspath(path) if path is not None else None
        self.kind = kind
        super().__init__(f"{self.path}: {message}" if self.path else message)


def first_line(error: Exception) -> str:
    """A library exception's message cut to its first line (its type's name if it has none), for
    the one line a BinwiseError gives."""
    return (str(error).splitlines() or [type(error).__name__])[0]
