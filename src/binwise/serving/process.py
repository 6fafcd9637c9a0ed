"""``binwise serve`` in a child process on a free loopback port, for tests, benchmarks and apps
that need a real server: started, waited for until ``/healthz`` answers, and always stopped."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import BinwiseError
from ..paths import free_port


def is_healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def serving(model, log_path: Path, *serve_args: str, timeout: float = 180,
            python: str = sys.executable) -> Iterator[tuple[str, subprocess.Popen]]:
    """Yield (base URL, process) of ``binwise serve MODEL *serve_args`` run by ``python``; its
    output goes to ``log_path``."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([python, "-m", "binwise.cli", "serve", str(model), "--host",
                                    "127.0.0.1", "--port", str(port), *serve_args],
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while not is_healthy(url):
            if process.poll() is not None:
                raise BinwiseError(f"binwise serve exited with {process.returncode}:\n{log_path.read_text()}", model)
            if time.monotonic() > deadline:
                raise BinwiseError(f"binwise serve did not answer within {timeout:.0f} s:\n{log_path.read_text()}",
                                   model)
            time.sleep(0.2)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
