"""The shared feedback store: a PostgreSQL database, photos included (``bytea``, keyed by SHA-256).

Several ``binwise serve`` replicas given the same URL share rows and photos. A photo and its row
are written in one transaction, so a committed row always has its photo; the unique constraint on
(photo, corrected class, model) keeps a feedback posted to two replicas at once to one row, and the
rate limit's count is the database's, so replicas share it.
Needs the ``postgres`` extra (psycopg 3).
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import psycopg

from ...errors import BinwiseError
from .store import FeedbackRow, SqlStore, without_password


class PostgresStore(SqlStore):
    ID_COLUMN = "BIGSERIAL PRIMARY KEY"

    def __init__(self, url: str, **limits):
        super().__init__(**limits)
        self.url = url
        self.name = without_password(url)
        self._db = self._connect()
        with self.transaction() as execute:
            for statement in self.schema():
                execute(statement, {})
            self.add_missing_columns(execute)

    def schema(self) -> list[str]:
        return [*super().schema(), "CREATE TABLE IF NOT EXISTS feedback_photos (sha256 TEXT PRIMARY KEY, "
                "data BYTEA NOT NULL)"]

    def paramstyle(self, sql: str) -> str:
        return re.sub(r":(\w+)", r"%(\1)s", sql)

    def _connect(self) -> psycopg.Connection:
        try:
            return psycopg.connect(self.url, connect_timeout=10)
        except psycopg.Error as e:
            raise BinwiseError(f"cannot connect to the feedback database ({str(e).strip().splitlines()[0]})",
                               self.name, kind="feedback_store_unavailable") from None

    @contextmanager
    def transaction(self, write: bool = True):
        with self._lock:
            if self._db.closed or self._db.broken:  # the server restarted: connect again
                self._db = self._connect()
            try:
                with self._db.transaction():
                    yield self._db.execute
            except psycopg.Error as e:
                raise BinwiseError(f"the feedback database failed ({str(e).strip().splitlines()[0]})", self.name,
                                   kind="feedback_store_unavailable") from None

    def columns(self, execute, table: str) -> set[str]:
        return {row[0] for row in execute("SELECT column_name FROM information_schema.columns WHERE table_name = "
                                          "%(table)s", {"table": table}).fetchall()}

    def store_photo(self, execute, row: FeedbackRow, photo: bytes) -> None:
        execute("INSERT INTO feedback_photos (sha256, data) VALUES (%(sha256)s, %(data)s) ON CONFLICT DO NOTHING",
                {"sha256": row.photo_sha256, "data": photo})

    def lock_client(self, execute, client: str) -> None:
        execute("SELECT pg_advisory_xact_lock(hashtext(%(client)s))", {"client": client})

    def read_photo(self, row: FeedbackRow) -> bytes:
        with self.transaction(write=False) as execute:
            found = execute("SELECT data FROM feedback_photos WHERE sha256 = %(sha256)s",
                            {"sha256": row.photo_sha256}).fetchone()
        if found is None:
            raise BinwiseError(f"photo of feedback row {row.id} is missing", self.name)
        return bytes(found[0])

    def close(self) -> None:
        self._db.close()
