"""A deadline for the status line and headers of a sync (``requests``) response.

urllib3 gives each socket read the same timeout, so a server that sends its status line and headers a
byte at a time, each byte within that timeout, holds a call as long as it likes. The connections of
:class:`DeadlineAdapter` read them against the deadline that :func:`headers_by` sets instead: each read
waits at most the time left and none starts after it (a ``TimeoutError``, which urllib3 reports as a
read timeout). The body is read as before: the transport bounds a JSON body by its attempt's clock, and
a byte stream by the time without progress.
"""

from __future__ import annotations

import http.client
import io
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

import requests.adapters
import urllib3.connection
import urllib3.connectionpool
import urllib3.poolmanager

_HEADERS_DEADLINE: ContextVar[float | None] = ContextVar("cfworkflows_headers_deadline", default=None)


@contextmanager
def headers_by(deadline: float) -> Iterator[None]:
    """Requests sent in this block must get their status line and headers by ``deadline`` (epoch s)."""
    token = _HEADERS_DEADLINE.set(deadline)
    try:
        yield
    finally:
        _HEADERS_DEADLINE.reset(token)


class _DeadlineReader(io.RawIOBase):
    """A socket's reads, each bounded by the time left until :attr:`deadline` while one is set."""

    def __init__(self, sock: Any) -> None:
        super().__init__()
        self.sock = sock
        self._raw = sock.makefile("rb", buffering=0)
        self.deadline: float | None = None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        if self.deadline is not None:
            left = self.deadline - time.time()
            if left <= 0:
                raise TimeoutError("the status line and headers did not arrive before the deadline")
            self.sock.settimeout(left)
        return self._raw.readinto(buffer)

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        if not self.closed:
            self._raw.close()
        super().close()


class _DeadlineHTTPResponse(http.client.HTTPResponse):
    """``http.client``'s response, reading its status line and headers by the current deadline."""

    def __init__(self, sock: Any, debuglevel: int = 0, method: str | None = None, url: str | None = None):
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # the plain socket file made above: this one reads the same socket
        self._reader = _DeadlineReader(sock)
        self.fp = io.BufferedReader(self._reader)

    def begin(self) -> None:
        deadline = _HEADERS_DEADLINE.get()
        if deadline is None:
            super().begin()
            return
        timeout = self._reader.sock.gettimeout()
        self._reader.deadline = deadline
        try:
            super().begin()
        finally:
            self._reader.deadline = None
            with suppress(OSError):  # the body's reads get the timeout urllib3 gave the request again
                self._reader.sock.settimeout(timeout)


class _HTTPConnection(urllib3.connection.HTTPConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    response_class = _DeadlineHTTPResponse


class _HTTPConnectionPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSConnectionPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPConnectionPool, "https": _HTTPSConnectionPool}


def _use_deadline_pools(manager: urllib3.poolmanager.PoolManager) -> None:
    # Only a plain pool manager or HTTP proxy manager: a SOCKS proxy manager has pools of its own.
    if manager.pool_classes_by_scheme == urllib3.poolmanager.pool_classes_by_scheme:
        manager.pool_classes_by_scheme = _POOL_CLASSES


class DeadlineAdapter(requests.adapters.HTTPAdapter):
    """A ``requests`` adapter whose connections read status lines and headers by :func:`headers_by`."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        _use_deadline_pools(self.poolmanager)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.poolmanager.PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        _use_deadline_pools(manager)
        return manager
