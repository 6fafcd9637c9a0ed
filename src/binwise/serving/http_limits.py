"""A header timeout for uvicorn's HTTP/1.1 server, which has none of its own.

uvicorn closes idle keep-alive connections, but a client that opens a connection and sends its
request headers a byte at a time (slowloris) is waited for as long as it likes, and a few hundred
such clients hold every connection slot. ``with_header_timeout(seconds)`` gives uvicorn's h11
protocol a timer from the moment a request's first bytes are awaited until its headers are
complete; when it fires, the connection is closed.
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


def with_header_timeout(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class, closing connections whose request headers take over ``seconds``."""

    class H11WithHeaderTimeout(H11Protocol):
        _header_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            waiting_for_headers = self.conn.their_state is h11.IDLE and not self.transport.is_closing()
            if waiting_for_headers and self._header_timer is None:  # the next request on a kept-alive connection
                self._header_timer = self.loop.call_later(seconds, self._headers_too_slow)
            elif not waiting_for_headers:
                self._stop_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_timer()
            super().connection_lost(exc)

        def _stop_timer(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _headers_too_slow(self) -> None:
            self._header_timer = None
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return H11WithHeaderTimeout
