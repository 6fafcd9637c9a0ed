"""``open_store(spec)``: the feedback store a ``--feedback-db`` names (``store`` has what both share)."""

from __future__ import annotations

import re
from pathlib import Path

from ...errors import BinwiseError
from .store import SqlStore


def open_store(spec: str, *, create: bool = True, **limits) -> SqlStore:
    """The store ``spec`` names: a ``postgresql://`` (or ``postgres://``) URL, else a SQLite file
    path. ``create=False``: a missing SQLite file is an error (listing and exporting). ``limits``:
    ``max_rows``, ``max_bytes``, ``network_bytes`` (``SqlStore``)."""
    if re.match(r"postgres(ql)?://", spec):
        from .postgres_store import PostgresStore

        return PostgresStore(spec, **limits)
    from .sqlite_store import SqliteStore

    if not create and not Path(spec).is_file():
        raise BinwiseError("no feedback database here (binwise serve --feedback-db creates it)", spec)
    return SqliteStore(Path(spec), **limits)
