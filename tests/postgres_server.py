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

from binwise.serve_process import free_port

BIN_DIRS = sorted(glob.glob("/usr/lib/postgresql/*/bin"))


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the URL of a new PostgreSQL server's ``postgres`` database (user ``binwise``, no password)."""
    if not BIN_DIRS or not os.access(Path(BIN_DIRS[-1]) / "initdb", os.X_OK):
        pytest.skip("no PostgreSQL server binaries in /usr/lib/postgresql/*/bin (scripts/setup-dev.sh installs "
                    "Debian's postgresql)")
    bin_dir = Path(BIN_DIRS[-1])
    root = Path(tempfile.mkdtemp(prefix="binwise-postgres-"))
    run_as = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    try:
        subprocess.run([*run_as, bin_dir / "initdb", "-D", data, "-U", "binwise", "-A", "trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True)
        # durability is PostgreSQL's own business, not these tests': fsync off for speed
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        subprocess.run([*run_as, bin_dir / "pg_ctl", "-D", data, "-l", root / "server.log", "-o", options, "-w",
                        "start"], check=True, capture_output=True)
        try:
            yield f"postgresql://binwise@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run([*run_as, bin_dir / "pg_ctl", "-D", data, "-m", "immediate", "stop"], capture_output=True)
    except subprocess.CalledProcessError as e:
        log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr.decode()}{log}") from None
    finally:
        shutil.rmtree(root, ignore_errors=True)
