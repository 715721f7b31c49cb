"""How the emulated API's answers go on the wire: the envelope, and bodies sent whole or broken on purpose.

Every answer is a :class:`WireResponse`: a body given as chunks (a JSON envelope is one chunk, a stream
output many 1 MiB blocks) plus a :class:`Wire` that says how to send it: with or without
``Content-Length`` (chunked), gzip-encoded or not, one byte at a time (``drip``), cut short after some
bytes with the connection dropped or the body ended cleanly, or with its status line and headers one
byte at a time (``header_drip``: written to the connection's transport directly, as uvicorn writes them
in one piece). Faults (``faults``) and options (``scenario.ApiOptions``) only choose a ``Wire``; nothing
else in the emulator writes to the socket.
"""

from __future__ import annotations

import json
import secrets
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import anyio
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from .errors import ApiError

JSON_TYPE = "application/json"
OCTET_STREAM_TYPE = "application/octet-stream"
HTML_TYPE = "text/html; charset=UTF-8"
# gzip bodies up to this size are compressed in memory and sent with their encoded Content-Length;
# bigger ones are compressed on the fly and sent chunked (no Content-Length).
GZIP_BUFFER_LIMIT = 16 * 1024 * 1024
# Cloudflare's ray ids look like "a449ce26eaced429-KIX": 16 hex digits and the data centre.
CF_RAY_SUFFIX = "-SJC"
# An HTML error page like the ones proxies and Cloudflare's edge send instead of the API's JSON.
HTML_ERROR_PAGE = (
    "<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {reason}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
)
ENDLESS_CHUNK = 64 * 1024
ENDLESS_LIMIT = 64 * 1024**3  # an "endless" body still ends after this many bytes
# The scope key of the server's transport for the connection (set by ``app.EmulatorApp``).
TRANSPORT_SCOPE_KEY = "cfworkflows_emulator.transport"


class EmulatedDisconnect(ConnectionAbortedError):
    """Raised to close a connection on purpose (a cut body, a lost answer)."""


def is_emulated_disconnect(error: BaseException | None) -> bool:
    """Whether ``error`` is, or was caused by, an :class:`EmulatedDisconnect`."""
    while error is not None:
        if isinstance(error, EmulatedDisconnect):
            return True
        if isinstance(error, BaseExceptionGroup):
            return any(is_emulated_disconnect(inner) for inner in error.exceptions)
        error = error.__cause__ or error.__context__
    return False


def new_cf_ray() -> str:
    """A random ``cf-ray`` id, e.g. ``8f3c0a1b2c3d4e5f-SJC``."""
    return secrets.token_hex(8) + CF_RAY_SUFFIX


def dump_json(content: Any) -> bytes:
    """
    Compact UTF-8 JSON, as Cloudflare sends it. A lone UTF-16 surrogate (a JavaScript string cut inside
    an emoji) goes out as its escape ``\\ud800``, as JavaScript's ``JSON.stringify`` writes it.
    """
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


def envelope(
    result: Any = None, *, errors_: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """Cloudflare's response envelope."""
    body = {"success": not errors_, "errors": errors_ or [], "messages": [], "result": result}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def error_envelope(error: ApiError) -> dict[str, Any]:
    """The envelope of a failed call."""
    return envelope(None, errors_=[error.as_error()])


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether an ``Accept-Encoding`` header allows gzip (``gzip`` or ``*`` with a non-zero q)."""
    for item in (accept_encoding or "").split(","):
        coding, _, parameters = item.strip().partition(";")
        if coding.strip().lower() in ("gzip", "*"):
            weight = parameters.strip().lower()
            return not (weight.startswith("q=") and weight[2:].strip() in ("0", "0.0", "0.00", "0.000"))
    return False


@dataclass(frozen=True)
class Wire:
    """
    How a body is sent.

    :param content_length: send ``Content-Length`` (the full body's, even when cut); else chunked.
    :param gzip: gzip-encode the body (``Content-Encoding: gzip``); cuts count encoded bytes.
    :param cut_after: send only this many body bytes (clipped to the body's length - 1) ...
    :param clean_end: ... then end the body as if complete (chunked) instead of dropping the connection.
    :param drip_interval: send the body one byte at a time, this many seconds apart.
    :param header_drip_interval: send the status line and headers one byte at a time, this many seconds
        apart, then the body at once, then close the connection.
    """

    content_length: bool = True
    gzip: bool = False
    cut_after: int | None = None
    clean_end: bool = False
    drip_interval: float | None = None
    header_drip_interval: float | None = None


PLAIN = Wire()


class WireResponse(Response):
    """
    A body of ``size`` bytes (None: unknown) given as ``chunks``, sent as ``wire`` says.

    The chunks are produced lazily, so a 1 GiB stream output is sent with constant memory.
    """

    def __init__(
        self,
        chunks: Iterable[bytes],
        size: int | None,
        *,
        status: int = 200,
        media_type: str = JSON_TYPE,
        headers: Mapping[str, str] | None = None,
        wire: Wire = PLAIN,
    ) -> None:
        super().__init__(None, status_code=status, media_type=media_type, headers=dict(headers or {}))
        del self.headers["content-length"]  # Starlette's, for an empty body; set below if sent
        if wire.gzip:
            chunks, size = _gzip(chunks, size)
            self.headers["content-encoding"] = "gzip"
            self.headers["vary"] = "Accept-Encoding"
        self.chunks, self.size, self.wire = chunks, size, wire
        self.cut_after = wire.cut_after
        if self.cut_after is not None and size is not None:
            self.cut_after = min(self.cut_after, max(size - 1, 0))
        if wire.content_length and size is not None and not wire.clean_end:
            self.headers["content-length"] = str(size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.wire.header_drip_interval is not None:
            await self._drip_head(scope.get(TRANSPORT_SCOPE_KEY), self.wire.header_drip_interval)
        if self.wire.drip_interval is None and self.size is not None:
            await self._send(send)
            return
        # A slow or endless body: stop as soon as the client goes away.
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch)
            await self._send(send)
            group.cancel_scope.cancel()

    async def _drip_head(self, transport: Any, interval: float) -> None:
        """
        Write the whole answer to ``transport`` itself, its status line and headers one byte every
        ``interval`` seconds, then close the connection; stop when the client goes away first.
        """
        if transport is None:
            raise RuntimeError("header_drip needs the connection's transport (run the emulator's app)")
        body = b"".join(self.chunks)
        reason = _reason(self.status_code)
        framing = (b"content-length", b"transfer-encoding", b"connection")
        head = f"HTTP/1.1 {self.status_code} {reason}\r\n".encode("latin-1") + b"".join(
            name + b": " + value + b"\r\n" for name, value in self.raw_headers if name.lower() not in framing
        )
        head += f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode("latin-1")
        for index in range(len(head)):
            if transport.is_closing():
                break
            transport.write(head[index : index + 1])
            await anyio.sleep(interval)
        else:
            transport.write(body)
        transport.close()  # after the buffered bytes are sent
        raise EmulatedDisconnect("header_drip fault: the answer was written to the connection directly")

    async def _send(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent, limit = 0, self.cut_after
        for chunk in self.chunks:
            if limit is not None and sent + len(chunk) >= limit:
                chunk = chunk[: limit - sent]
            await self._send_chunk(send, chunk)
            sent += len(chunk)
            if limit is not None and sent >= limit:
                break
        if limit is not None and not self.wire.clean_end:
            raise EmulatedDisconnect("connection closed on purpose after part of the body")
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_chunk(self, send: Send, chunk: bytes) -> None:
        interval = self.wire.drip_interval
        if interval is None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            return
        for index in range(len(chunk)):
            await send({"type": "http.response.body", "body": chunk[index : index + 1], "more_body": True})
            await anyio.sleep(interval)


def _gzip(chunks: Iterable[bytes], size: int | None) -> tuple[Iterable[bytes], int | None]:
    if size is not None and size <= GZIP_BUFFER_LIMIT:
        compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # wbits 31: a gzip header and trailer
        encoded = b"".join(compressor.compress(chunk) for chunk in chunks) + compressor.flush()
        return [encoded], len(encoded)
    return _gzip_stream(chunks), None


def _gzip_stream(chunks: Iterable[bytes]) -> Iterator[bytes]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, 31)
    for chunk in chunks:
        if encoded := compressor.compress(chunk):
            yield encoded
    yield compressor.flush()


def json_response(
    content: Any, status: int = 200, headers: Mapping[str, str] | None = None, wire: Wire = PLAIN
) -> WireResponse:
    payload = dump_json(content)
    return WireResponse([payload], len(payload), status=status, headers=headers, wire=wire)


def html_error_page(status: int) -> WireResponse:
    """An HTML error page with ``status`` (5xx, or 200 as some proxies and captive portals send)."""
    page = HTML_ERROR_PAGE.format(status=status, reason=_reason(status)).encode()
    return WireResponse([page], len(page), status=status, media_type=HTML_TYPE)


def _reason(status: int) -> str:
    """The reason phrase of an HTTP status ("Error" for a status without one)."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def endless_json() -> Iterator[bytes]:
    """The start of a valid envelope whose ``result`` string never ends (until :data:`ENDLESS_LIMIT`)."""
    yield b'{"success":true,"errors":[],"messages":[],"result":{"padding":"'
    filler = b"x" * ENDLESS_CHUNK
    for _ in range(ENDLESS_LIMIT // ENDLESS_CHUNK):
        yield filler
