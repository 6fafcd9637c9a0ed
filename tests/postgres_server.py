"""A throwaway PostgreSQL server on loopback for the feedback store's tests.

It uses Debian's postgresql binaries (/usr/lib/postgresql/*/bin; scripts/setup-dev.sh installs
them), runs in a temporary folder as the ``postgres`` user when the tests run as root (the server
refuses root) and is stopped and removed afterwards. Without the binaries the tests skip, saying so.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from binwise.paths import free_port

BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


class PostgresServer:
    """A running server: ``url`` for its ``postgres`` database (user ``binwise``, no password);
    ``crash`` and ``start`` to kill it and bring it back."""

    def __init__(self, bin_dir: Path, root: Path, run_as: list[str]):
        self.bin_dir, self.root, self.run_as = bin_dir, root, run_as
        self.data, port = root / "data", free_port()
        # durability against power cuts is PostgreSQL's fsync, not these tests': off for speed.
        # A crash of the server's processes (crash) still loses nothing committed: the WAL is written.
        self.options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.url = f"postgresql://binwise@127.0.0.1:{port}/postgres"

    def pg_ctl(self, *args, check: bool = True) -> None:
        subprocess.run([*self.run_as, self.bin_dir / "pg_ctl", "-D", self.data, *args], check=check,
                       capture_output=True)

    def start(self) -> None:
        self.pg_ctl("-l", self.root / "server.log", "-o", self.options, "-w", "start")

    def crash(self) -> None:
        """Stop at once, as a crash does: no checkpoint, every connection cut, so the next start
        replays the WAL."""
        self.pg_ctl("-m", "immediate", "stop")


@contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Yield a new PostgreSQL server on loopback (``PostgresServer``)."""
    if not BIN_DIRS or not os.access(Path(BIN_DIRS[-1]) / "initdb", os.X_OK):
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (scripts/setup-dev.sh installs "
                    "Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="binwise-postgres-"))
    run_as = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    server = PostgresServer(Path(BIN_DIRS[-1]), root, run_as)
    try:
        subprocess.run([*run_as, server.bin_dir / "initdb", "-D", server.data, "-U", "binwise", "-A", "trust",
                        "-E", "UTF8", "--no-sync"], check=True, capture_output=True)
        server.start()
        try:
            yield server
        finally:
            server.pg_ctl("-m", "immediate", "stop", check=False)  # a test may have stopped it already
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr.decode()}{log}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
