"""Bounded memory for the service: a budget for decoding photos, and freed memory given back.

``binwise.inference.classifier.keep_freed_memory`` makes glibc keep every freed block (torch eager and Pillow
would otherwise fault their buffers back in on every call), so the process keeps its peak heap: a
burst of large uploads would leave it at its peak for good. Three things bound that:

- ``UploadBudget``: the bytes of uploads held in memory at once. A request reserves twice its
  declared size (the body as read, and the photo cut out of it) before it reads a byte of it,
  and waits while others hold the rest: meanwhile its bytes stay in the client's socket.
- ``DecodeBudget``: the bytes all decodes in progress may take together. Each decode reserves its
  estimate (``binwise.images.decode_bytes``) before it starts and waits while others hold the rest;
  one that can never fit is refused.
- ``IdleTrimmer``: once the service has had no request for ``idle_s`` seconds, ``malloc_trim(0)``
  hands glibc's free pages back to the kernel. Under steady load it never runs, so the speed that
  keeping freed memory buys stays.
"""

from __future__ import annotations

import asyncio
import ctypes
import platform
import threading
import time
from contextlib import asynccontextmanager, contextmanager
from typing import AsyncIterator, Callable, Iterator

from .errors import BinwiseError

MIB = 1024 * 1024


class MemoryBudget:
    """``total_bytes`` that the requests in progress may hold together; a request waits at most
    ``wait_s`` seconds for room. Subclasses reserve from a thread or from the event loop."""

    def __init__(self, total_bytes: int, wait_s: float, kind: str, busy_with: str):
        if total_bytes <= 0 or wait_s < 0:
            raise ValueError("a memory budget must be positive and its wait not negative")
        self.total = total_bytes
        self.wait_s = wait_s
        self.used = 0
        self.kind, self.busy_with = kind, busy_with
        # called with the seconds each wait for room took, however it ended: set by whoever watches
        # (the service's metrics), so this module needs no metrics library
        self.on_wait: Callable[[float], None] | None = None

    def fits(self, nbytes: int) -> bool:
        return self.used + nbytes <= self.total

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Times the block, a wait for room, for ``on_wait``."""
        started = time.monotonic()
        try:
            yield
        finally:
            if self.on_wait is not None:
                self.on_wait(time.monotonic() - started)

    def busy(self, name: str) -> BinwiseError:
        return BinwiseError(f"busy {self.busy_with} ({self.used / MIB:,.0f} of {self.total / MIB:,.0f} MiB in use "
                            f"for {self.wait_s:g} s)", name, kind=self.kind)


class UploadBudget(MemoryBudget):
    """Bytes of uploads held in memory at once; used from the event loop only. One client (an
    address) may hold at most ``per_client_bytes`` of it, so a few slow connections from one place
    cannot hold the room every other client's photo needs."""

    def __init__(self, total_bytes: int, wait_s: float = 30.0, per_client_bytes: int | None = None):
        super().__init__(total_bytes, wait_s, "upload_busy", "receiving other uploads")
        self.per_client = per_client_bytes or total_bytes
        self.by_client: dict[str, int] = {}
        self._room = asyncio.Condition()

    @asynccontextmanager
    async def reserve(self, nbytes: int, name: str, client: str = "") -> AsyncIterator[None]:
        """Hold ``nbytes`` (at most the whole budget) while the block runs; BinwiseError
        ``upload_busy`` when no room frees up within ``wait_s``, ``client_upload_busy`` at once when
        ``client`` (when named) already holds its share."""
        nbytes = min(nbytes, self.total)
        held = self.by_client.get(client, 0)
        if client and held and held + nbytes > self.per_client:
            raise BinwiseError(f"this client is already sending uploads of {held / MIB:,.0f} MiB; one client may "
                               f"send at most {self.per_client / MIB:,.0f} MiB at once", name, kind="client_upload_busy")
        self.by_client[client] = held + nbytes  # counted at once, so waiting uploads count too
        try:
            async with self._room:
                with self.waiting():
                    try:
                        async with asyncio.timeout(self.wait_s):
                            await self._room.wait_for(lambda: self.fits(nbytes))
                    except TimeoutError:
                        raise self.busy(name) from None
                self.used += nbytes
            try:
                yield
            finally:
                async with self._room:
                    self.used -= nbytes
                    self._room.notify_all()
        finally:
            self.by_client[client] -= nbytes
            if not self.by_client[client]:
                del self.by_client[client]


class DecodeBudget(MemoryBudget):
    """Bytes that decoding may take at once, across all decode threads."""

    def __init__(self, total_bytes: int, wait_s: float = 10.0):
        super().__init__(total_bytes, wait_s, "decode_busy", "decoding other photos")
        self._room = threading.Condition()

    @contextmanager
    def reserve(self, nbytes: int, name: str) -> Iterator[None]:
        """Hold ``nbytes`` of the budget while the block runs. Raises BinwiseError ``image_too_large``
        for more than the whole budget, and ``decode_busy`` when no room frees up within ``wait_s``."""
        if nbytes > self.total:
            raise BinwiseError(f"image too large to decode here (about {nbytes / MIB:,.0f} MiB of memory; "
                               f"this service decodes at most {self.total / MIB:,.0f} MiB at once)", name,
                               kind="image_too_large")
        with self._room:
            with self.waiting():
                if not self._room.wait_for(lambda: self.fits(nbytes), self.wait_s):
                    raise self.busy(name)
            self.used += nbytes
        try:
            yield
        finally:
            with self._room:
                self.used -= nbytes
                self._room.notify_all()


def release_freed_memory() -> bool:
    """Give glibc's free heap pages back to the kernel (``malloc_trim(0)``, every arena); False
    where the C library is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    ctypes.CDLL(None).malloc_trim(0)
    return True


class IdleTrimmer:
    """Calls ``release_freed_memory`` once after each busy period: when no request has been in
    progress for ``idle_s`` seconds. Each request runs inside ``request()``, on the event loop;
    ``run()`` is the asyncio task that trims."""

    def __init__(self, idle_s: float = 1.0):
        if idle_s <= 0:
            raise ValueError("the idle time before trimming must be positive")
        self.idle_s = idle_s
        self.active = 0
        self.last_request = time.monotonic()
        self.busy_since_trim = False
        self.trims = 0

    @contextmanager
    def request(self) -> Iterator[None]:
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self.last_request = time.monotonic()
            self.busy_since_trim = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.idle_s / 2)
            if self.busy_since_trim and not self.active and time.monotonic() - self.last_request >= self.idle_s:
                self.busy_since_trim = False
                # in a thread: trimming a heap of gigabytes takes a while, and takes glibc's arena locks
                await asyncio.to_thread(release_freed_memory)
                self.trims += 1
