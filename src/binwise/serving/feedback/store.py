"""Where feedback is kept: one row per (photo, corrected class, model), and the photo itself.

``stores.open_store(spec)`` opens the store a ``--feedback-db`` names: a ``postgresql://`` URL
(``PostgresStore``: photos in the database, so replicas behind one address share everything), or a
file path (``SqliteStore``, the embedded default: photos as files beside the database).

Both implement ``add`` the same way (``SqlStore``): the photo is stored first (a file written and
flushed to disk, or a row in the same transaction), then the row commits; an acknowledged row
therefore always has its photo. A row is unique per photo, corrected class and model, so posting
the same feedback twice returns the first row, flagged as already recorded.
"""

from __future__ import annotations

import hashlib
import threading
from contextlib import contextmanager
from dataclasses import astuple, dataclass, fields
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

from ...errors import BinwiseError
from ...images import format_by_signature
from . import DEFAULT_MAX_BYTES, DEFAULT_MAX_ROWS, DEFAULT_NETWORK_BYTES

# file suffix of each format images.format_by_signature names
SUFFIXES = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "BMP": "bmp", "WebP": "webp", "TIFF": "tif"}


@dataclass(frozen=True)
class FeedbackRow:
    id: int | None  # None until stored
    time: str  # UTC, ISO 8601
    model: str  # the served model's id
    photo_sha256: str
    photo_suffix: str  # jpg, png, ...
    predicted: str  # the model's top class (English name)
    predicted_status: str  # ok | unsure | unknown
    corrected: str  # a class's English name, or feedback.NOT_GARBAGE
    note: str
    client: str  # the sender's address
    region: str = ""  # whose bins the sender was shown (GET /v1/regions); "" in rows from before regions

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


COLUMNS = [f.name for f in fields(FeedbackRow)]


def now_utc() -> str:
    """The time a row is stored: UTC, ISO 8601, milliseconds."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def photo_suffix(photo: bytes) -> str:
    return SUFFIXES.get(format_by_signature(photo[:16]), "img")


def new_row(photo: bytes, *, model: str, predicted: str, predicted_status: str, corrected: str, note: str,
            client: str, region: str = "") -> FeedbackRow:
    return FeedbackRow(None, now_utc(), model, hashlib.sha256(photo).hexdigest(), photo_suffix(photo),
                       predicted, predicted_status, corrected, note, client, region)


class SqlStore:
    """The SQL both stores run; each supplies its connection, its id column and its photo storage.

    Queries are written with ``:name`` parameters (sqlite3's style); ``paramstyle`` rewrites them."""

    ID_COLUMN = ""

    def __init__(self, max_rows: int = DEFAULT_MAX_ROWS, max_bytes: int = DEFAULT_MAX_BYTES,
                 network_bytes: int = DEFAULT_NETWORK_BYTES):
        self.max_rows, self.max_bytes, self.network_bytes = max_rows, max_bytes, network_bytes
        self._lock = threading.Lock()  # one connection, used by one thread at a time

    def schema(self) -> list[str]:
        return [f"""CREATE TABLE IF NOT EXISTS feedback (
            id {self.ID_COLUMN}, time TEXT NOT NULL, model TEXT NOT NULL, photo_sha256 TEXT NOT NULL,
            photo_suffix TEXT NOT NULL, predicted TEXT NOT NULL, predicted_status TEXT NOT NULL,
            corrected TEXT NOT NULL, note TEXT NOT NULL, client TEXT NOT NULL, region TEXT NOT NULL DEFAULT '',
            UNIQUE (photo_sha256, corrected, model))""",
                # the rate limit's recent posts (``admit``), kept for one window
                "CREATE TABLE IF NOT EXISTS feedback_requests (client TEXT NOT NULL, at DOUBLE PRECISION NOT NULL)",
                "CREATE INDEX IF NOT EXISTS feedback_requests_by_client ON feedback_requests (client, at)",
                # the photo bytes each network has stored (the byte budgets of ``add``)
                "CREATE TABLE IF NOT EXISTS feedback_bytes (network TEXT NOT NULL, sha256 TEXT NOT NULL, "
                "bytes BIGINT NOT NULL, PRIMARY KEY (network, sha256))",
                # photos waiting for reviewers (``review``): feedback, and photos the service kept
                f"""CREATE TABLE IF NOT EXISTS review_items (
            id {self.ID_COLUMN}, time TEXT NOT NULL, model TEXT NOT NULL, photo_sha256 TEXT NOT NULL,
            photo_suffix TEXT NOT NULL, source TEXT NOT NULL, predicted TEXT NOT NULL, predicted_status TEXT NOT NULL,
            probabilities TEXT NOT NULL, signature TEXT NOT NULL, client TEXT NOT NULL, network TEXT NOT NULL,
            region TEXT NOT NULL, UNIQUE (photo_sha256, model))""",
                "CREATE INDEX IF NOT EXISTS review_items_by_network ON review_items (network, source)",
                "CREATE TABLE IF NOT EXISTS reviews (item BIGINT NOT NULL, reviewer TEXT NOT NULL, label TEXT NOT NULL, "
                "time TEXT NOT NULL, PRIMARY KEY (item, reviewer))"]

    # columns added since the first release, for stores created before them: (table, column, definition)
    ADDED_COLUMNS = [("feedback", "region", "TEXT NOT NULL DEFAULT ''")]

    def add_missing_columns(self, execute) -> None:
        for table, column, definition in self.ADDED_COLUMNS:
            if column not in self.columns(execute, table):
                execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}", {})

    def paramstyle(self, sql: str) -> str:
        return sql

    # --- what each store supplies
    @contextmanager
    def transaction(self, write: bool = True):
        """A cursor-like ``execute(sql, params)`` inside one committed transaction (``write``: one
        that will write, so it takes the write lock at once where the database has one)."""
        raise NotImplementedError

    def store_photo(self, execute, row: FeedbackRow, photo: bytes) -> None:
        raise NotImplementedError

    def read_photo(self, row: FeedbackRow) -> bytes:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def columns(self, execute, table: str) -> set[str]:
        raise NotImplementedError

    def lock_client(self, execute, client: str) -> None:
        """Make another connection's ``admit`` of ``client`` wait for this transaction (where the
        transaction does not already exclude every other writer, as SQLite's does)."""

    # --- shared
    def admit(self, client: str, per_minute: int, window_s: float, now: float) -> float | None:
        """None, and the post counted, when ``client`` has posted fewer than ``per_minute`` in the
        ``window_s`` seconds before ``now`` (Unix time); else the seconds until it may post again.
        Counted in the store, so replicas that share one share the limit."""
        with self.transaction() as execute:
            self.lock_client(execute, client)
            execute(self.paramstyle("DELETE FROM feedback_requests WHERE at <= :cutoff"), {"cutoff": now - window_s})
            recent = execute(self.paramstyle("SELECT at FROM feedback_requests WHERE client = :client ORDER BY at "
                                             "LIMIT :limit"), {"client": client, "limit": per_minute}).fetchall()
            if len(recent) >= per_minute:
                return recent[0][0] + window_s - now
            execute(self.paramstyle("INSERT INTO feedback_requests (client, at) VALUES (:client, :at)"),
                    {"client": client, "at": now})
        return None

    def add(self, row: FeedbackRow, photo: bytes, network: str = "") -> tuple[FeedbackRow, bool]:
        """Store ``row`` and its photo; (the stored row, whether it was already recorded). A new photo
        is refused when the store's photos would pass ``max_bytes`` (``feedback_store_full``) or those
        of ``network`` would pass ``network_bytes`` (``feedback_network_full``)."""
        names = COLUMNS[1:]
        insert = self.paramstyle(f"INSERT INTO feedback ({', '.join(names)}) VALUES "
                                 f"({', '.join(':' + n for n in names)}) "
                                 "ON CONFLICT (photo_sha256, corrected, model) DO NOTHING RETURNING id")
        values = row.to_dict()
        with self.transaction() as execute:
            existing = self._find(execute, row)
            if existing:
                return existing, True
            if self._count(execute) >= self.max_rows:
                raise BinwiseError(f"the feedback store holds its limit of {self.max_rows:,} rows",
                                   kind="feedback_store_full")
            self._check_bytes(execute, row.photo_sha256, len(photo), network)
            self.store_photo(execute, row, photo)
            inserted = execute(insert, values).fetchone()
            if inserted is None:  # another replica recorded it between our look and our insert
                return self._find(execute, row), True
        return FeedbackRow(inserted[0], *astuple(row)[1:]), False

    def _check_bytes(self, execute, sha256: str, size: int, network: str) -> None:
        """Count the photo against the byte budgets, or refuse it (a photo a network already sent
        costs it nothing again)."""
        def stored(where: str = "", **params) -> int:
            return execute(self.paramstyle(f"SELECT COALESCE(SUM(bytes), 0) FROM feedback_bytes {where}"),
                           params).fetchone()[0]

        if stored("WHERE network = :network AND sha256 = :sha256", network=network, sha256=sha256):
            return
        mib = 1024 * 1024
        if network and stored("WHERE network = :network", network=network) + size > self.network_bytes:
            raise BinwiseError(f"this network has sent {self.network_bytes / mib:,.0f} MiB of feedback photos, "
                               "its share", kind="feedback_network_full")
        if stored() + size > self.max_bytes:
            raise BinwiseError(f"the feedback store holds its limit of {self.max_bytes / mib:,.0f} MiB of photos",
                               kind="feedback_store_full")
        # another replica may count the same photo at the same moment: one row either way
        execute(self.paramstyle("INSERT INTO feedback_bytes (network, sha256, bytes) VALUES (:network, :sha256, "
                                ":bytes) ON CONFLICT DO NOTHING"), {"network": network, "sha256": sha256, "bytes": size})

    def _find(self, execute, row: FeedbackRow) -> FeedbackRow | None:
        found = execute(self.paramstyle(f"SELECT {', '.join(COLUMNS)} FROM feedback WHERE photo_sha256 = :photo_sha256 "
                                        "AND corrected = :corrected AND model = :model"), row.to_dict()).fetchone()
        return FeedbackRow(*found) if found else None

    def _count(self, execute) -> int:
        return execute("SELECT COUNT(*) FROM feedback", {}).fetchone()[0]

    def rows(self, limit: int | None = None) -> list[FeedbackRow]:
        """The rows, oldest first (the newest ``limit`` with a limit)."""
        with self.transaction(write=False) as execute:
            found = execute(self.paramstyle(f"SELECT {', '.join(COLUMNS)} FROM feedback ORDER BY id DESC"
                                            + (" LIMIT :limit" if limit is not None else "")),
                            {"limit": limit}).fetchall()
        return [FeedbackRow(*r) for r in reversed(found)]

    def count(self) -> int:
        with self.transaction(write=False) as execute:
            return self._count(execute)


def without_password(url: str) -> str:
    """A database URL fit for logs and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))
