"""The embedded feedback store: a SQLite database, its photos as files in ``photos/`` beside it.

Durability: a photo is written to a temporary file, flushed, renamed to its SHA-256 name and its
folder flushed before its row is inserted; the database runs in WAL mode with ``synchronous=FULL``,
so a row is on disk when its transaction commits. An answered (HTTP 200) feedback therefore
survives the server's kill -9, and a power cut. A crash can leave a photo without a row (harmless:
content-addressed, and stored again by the next post of it) and a temporary ``.*.tmp`` file, which
opening the store removes.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from ...errors import BinwiseError
from ...fileio import atomic_write
from .store import FeedbackRow, SqlStore

# seconds a writer waits for another process's transaction (binwise feedback list while serving)
BUSY_TIMEOUT_S = 30


class SqliteStore(SqlStore):
    ID_COLUMN = "INTEGER PRIMARY KEY"

    def __init__(self, path: Path, **limits):
        super().__init__(**limits)
        self.path = path
        self.photos = path.parent / "photos"
        self.name = str(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit mode: transactions are begun and committed here, explicitly
            self._db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            with self.transaction() as execute:
                for statement in self.schema():
                    execute(statement)
                self.add_missing_columns(execute)
        except (sqlite3.Error, OSError) as e:
            raise BinwiseError(f"cannot open the feedback database ({e})", path) from None
        for leftover in self.photos.glob("*/.*.tmp"):  # from a crash mid-write
            leftover.unlink(missing_ok=True)

    def photo_path(self, row: FeedbackRow) -> Path:
        return self.photos / row.photo_sha256[:2] / f"{row.photo_sha256}.{row.photo_suffix}"

    @contextmanager
    def transaction(self, write: bool = True):
        with self._lock:
            try:
                # a writer takes the write lock now, not at its first write (which could then fail
                # as busy after its reads); readers never wait for writers in WAL mode
                self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield self._db.execute
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise BinwiseError(f"the feedback database failed ({e})", self.path,
                                   kind="feedback_store_unavailable") from None

    def columns(self, execute, table: str) -> set[str]:
        return {row[1] for row in execute(f"PRAGMA table_info({table})").fetchall()}

    def store_photo(self, execute, row: FeedbackRow, photo: bytes) -> None:
        path = self.photo_path(row)
        if not path.is_file():  # named by its content: an existing file is this photo
            atomic_write(path, lambda tmp: Path(tmp).write_bytes(photo), durable=True)

    def read_photo(self, row: FeedbackRow) -> bytes:
        try:
            return self.photo_path(row).read_bytes()
        except OSError as e:
            raise BinwiseError(f"photo of feedback row {row.id} is missing ({e.strerror})", self.photo_path(row)) from None

    def integrity_problems(self) -> list[str]:
        """What ``PRAGMA integrity_check`` finds (empty: the database is sound)."""
        with self._lock:
            found = [r[0] for r in self._db.execute("PRAGMA integrity_check").fetchall()]
        return [] if found == ["ok"] else found

    def close(self) -> None:
        self._db.close()
