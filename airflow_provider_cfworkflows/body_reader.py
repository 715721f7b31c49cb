"""Read a streamed HTTP response body into buffers the caller owns, bounding the time without progress.

A plain body (no ``Content-Encoding``) is read with ``readinto`` straight from the response's socket
file: each byte is copied once (kernel -> caller's buffer) and nothing is allocated per chunk, which
is what lets the step-output operator keep up with ``curl -o`` (see ``docs/benchmarks.md``). urllib3's
own ``read``/``readinto`` cannot do that: they allocate a new ``bytes`` object per read and copy it.
"""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

import requests
import urllib3

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConnectionError

if TYPE_CHECKING:
    from airflow_provider_cfworkflows.protocol import ApiRequest

_IDENTITY_ENCODINGS = frozenset({"", "identity"})
_TRANSPORT_ERRORS = (
    OSError,
    http.client.HTTPException,
    urllib3.exceptions.HTTPError,
    requests.RequestException,
)
_TIMEOUT_ERRORS = (TimeoutError, urllib3.exceptions.TimeoutError, requests.Timeout)


class _ReadInto(Protocol):
    def __call__(self, buffer: memoryview, /) -> int: ...


class ResponseBodyReader(Iterator[bytes]):
    """
    The body of an open streamed ``requests`` response.

    :meth:`readinto` fills a caller's buffer completely unless the body ends first, so a caller that
    cycles through a few buffers copies every byte once and allocates nothing per chunk. Iterating
    yields independent ``bytes`` chunks of ``chunk_size`` instead, for callers that keep them.

    Either way the reader raises :class:`CloudflareWorkflowsConnectionError` when the connection drops,
    when no byte arrives for ``stall_timeout`` seconds, or when the body ends with a byte count other
    than ``content_length``. Without a ``Content-Length`` a body cut short by a clean close of the
    connection cannot be told from a complete one.

    :param response: a response opened with ``stream=True``, its body not read yet.
    :param request: the request, for error messages (method and path; never a credential).
    :param content_length: the announced body size (on the wire, before any content decoding).
    :param chunk_size: bytes per chunk when iterating.
    :param stall_timeout: seconds without a single byte before giving up; None keeps the read timeout
        the response was opened with.
    """

    def __init__(
        self,
        *,
        response: requests.Response,
        request: ApiRequest,
        content_length: int | None,
        chunk_size: int,
        stall_timeout: float | None = None,
    ) -> None:
        self._raw = response.raw
        self._request = request
        self._content_length = content_length
        self._chunk_size = chunk_size
        self._stall_timeout = stall_timeout
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        socket_file = getattr(self._raw, "_fp", None)
        if encoding in _IDENTITY_ENCODINGS and isinstance(socket_file, http.client.HTTPResponse):
            self._read_into: _ReadInto = socket_file.readinto
            self._plain = True
        else:  # an encoded body (or a transport other than urllib3 over http.client): let urllib3 decode it
            self._read_into = self._decoded_read_into
            self._plain = False
        self._received = 0  # bytes returned to the caller
        self._finished = False
        self._configured = False

    @property
    def received(self) -> int:
        """Bytes handed to the caller so far."""
        return self._received

    def readinto(self, buffer: memoryview) -> int:
        """
        Fill ``buffer`` with the next bytes of the body; fewer only at its end, 0 once it has ended.

        :raises CloudflareWorkflowsConnectionError: the connection dropped or stalled, or the body
            ended with fewer bytes than announced.
        """
        if self._finished:
            return 0
        self._apply_stall_timeout()
        filled = 0
        try:
            while filled < len(buffer):
                count = self._read_into(buffer[filled:])
                if not count:
                    self._finish(self._received + filled)
                    break
                filled += count
        except _TIMEOUT_ERRORS as error:
            raise self._error(
                f"No byte of the body arrived for {self._describe_stall_timeout()} after "
                f"{self._received + filled} bytes ({type(error).__name__})"
            ) from None
        except _TRANSPORT_ERRORS as error:
            raise self._error(
                f"The body was cut off after {self._received + filled} bytes: "
                f"{type(error).__name__}: {str(error)[:300]}"
            ) from None
        self._received += filled
        return filled

    def __next__(self) -> bytes:
        chunk = bytearray(self._chunk_size)
        with memoryview(chunk) as view:
            count = self.readinto(view)
        if not count:
            raise StopIteration
        del chunk[count:]
        return bytes(chunk)

    def _decoded_read_into(self, buffer: memoryview) -> int:
        data = self._raw.read(len(buffer), decode_content=True)
        buffer[: len(data)] = data
        return len(data)

    def _finish(self, received: int) -> None:
        self._finished = True
        # Compare like with like: with a Content-Encoding the header counts the encoded bytes.
        on_the_wire = received if self._plain else self._raw.tell()
        if self._content_length is not None and on_the_wire != self._content_length:
            raise self._error(f"Step output stream ended after {on_the_wire} of {self._content_length} bytes")

    def _apply_stall_timeout(self) -> None:
        """Set the socket timeout once: every wait for bytes then ends after ``stall_timeout`` s."""
        if self._configured:
            return
        self._configured = True
        if self._stall_timeout is None:
            return
        connection = self._raw.connection if isinstance(self._raw, urllib3.HTTPResponse) else None
        sock = getattr(connection, "sock", None)
        if sock is not None:  # else the read timeout the response was opened with still bounds each wait
            sock.settimeout(self._stall_timeout)

    def _describe_stall_timeout(self) -> str:
        return f"{self._stall_timeout:g} s" if self._stall_timeout is not None else "the read timeout"

    def _error(self, message: str) -> CloudflareWorkflowsConnectionError:
        return CloudflareWorkflowsConnectionError(
            message, method=self._request.method, path=self._request.path
        )
