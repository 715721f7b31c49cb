"""ResponseBodyReader against a scripted HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.body_reader import ResponseBodyReader
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConnectionError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from tests.conftest import connection_json

REQUEST = protocol.step_output_request("0123456789abcdef0123456789abcdef", "wf", "i1", "blob-1", "step")
DATA = random.Random(7).randbytes(100_003)  # not a multiple of any buffer size used below


class ScriptedServer:
    """
    Answers each connection on 127.0.0.1 with ``script(connection)``; ``release`` ends scripts that
    hold a connection open (a stalled server).
    """

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.script: Callable[[socket.socket], None] = lambda connection: None
        self.release = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            with connection:
                _read_request_head(connection)
                with contextlib.suppress(OSError):  # the client gave up first
                    self.script(connection)

    def close(self) -> None:
        self.release.set()
        self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept() (Linux)
        self._listener.close()
        self._thread.join(timeout=10)


def _read_request_head(connection: socket.socket) -> None:
    head = b""
    while b"\r\n\r\n" not in head:
        data = connection.recv(65536)
        if not data:
            return
        head += data


def head(*, content_length: int | None, extra: str = "") -> bytes:
    length = f"Content-Length: {content_length}\r\n" if content_length is not None else ""
    return f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n{length}{extra}\r\n".encode()


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    scripted = ScriptedServer()
    yield scripted
    scripted.close()


def open_reader(
    server: ScriptedServer, *, content_length: int | None, chunk_size: int = 4096, **kwargs: float
) -> ResponseBodyReader:
    response = requests.get(server.url, stream=True, timeout=10)
    return ResponseBodyReader(
        response=response, request=REQUEST, content_length=content_length, chunk_size=chunk_size, **kwargs
    )


def read_all(reader: ResponseBodyReader, buffer_size: int) -> list[bytes]:
    reads = []
    buffer = bytearray(buffer_size)
    while count := reader.readinto(memoryview(buffer)):
        reads.append(bytes(buffer[:count]))
    return reads


def send_body(data: bytes, *, content_length: int | None, extra: str = "") -> Callable[[socket.socket], None]:
    return lambda connection: connection.sendall(head(content_length=content_length, extra=extra) + data)


def test_readinto_fills_each_buffer_and_delivers_the_exact_bytes(server):
    server.script = send_body(DATA, content_length=len(DATA))
    reader = open_reader(server, content_length=len(DATA))

    reads = read_all(reader, 4096)

    assert hashlib.sha256(b"".join(reads)).digest() == hashlib.sha256(DATA).digest()
    assert {len(read) for read in reads[:-1]} == {4096}  # full buffers: parts of equal size
    assert len(reads[-1]) == len(DATA) % 4096
    assert reader.received == len(DATA)
    assert reader.readinto(memoryview(bytearray(10))) == 0  # and stays at the end


def test_iterating_yields_independent_bytes_chunks(server):
    server.script = send_body(DATA, content_length=len(DATA))

    chunks = list(open_reader(server, content_length=len(DATA), chunk_size=30_000))

    assert all(type(chunk) is bytes for chunk in chunks)
    assert [len(chunk) for chunk in chunks] == [30_000, 30_000, 30_000, 10_003]
    assert b"".join(chunks) == DATA


def test_chunked_body_is_read_whole(server):
    pieces = [DATA[i : i + 7000] for i in range(0, len(DATA), 7000)]
    encoded = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces) + b"0\r\n\r\n"
    server.script = send_body(encoded, content_length=None, extra="Transfer-Encoding: chunked\r\n")

    assert b"".join(read_all(open_reader(server, content_length=None), 4096)) == DATA


def test_gzip_encoded_body_is_decoded_and_its_length_checked_on_the_wire(server):
    encoded = gzip.compress(DATA)
    server.script = send_body(encoded, content_length=len(encoded), extra="Content-Encoding: gzip\r\n")

    assert b"".join(read_all(open_reader(server, content_length=len(encoded)), 4096)) == DATA


def test_body_shorter_than_content_length_raises(server):
    server.script = send_body(DATA[:60_000], content_length=len(DATA))
    reader = open_reader(server, content_length=len(DATA))

    with pytest.raises(
        CloudflareWorkflowsConnectionError, match=f"stream ended after 60000 of {len(DATA)} bytes"
    ) as caught:
        read_all(reader, 4096)
    assert caught.value.path == REQUEST.path


def test_gzip_body_cut_short_raises(server):
    encoded = gzip.compress(DATA)
    server.script = send_body(
        encoded[: len(encoded) // 2], content_length=len(encoded), extra="Content-Encoding: gzip\r\n"
    )

    with pytest.raises(CloudflareWorkflowsConnectionError, match=r"cut off|ended after"):
        read_all(open_reader(server, content_length=len(encoded)), 4096)


def test_connection_reset_mid_body_raises(server):
    def reset(connection: socket.socket) -> None:
        connection.sendall(head(content_length=len(DATA)) + DATA[:50_000])
        # SO_LINGER with a zero timeout: close() sends a TCP RST instead of a FIN.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    server.script = reset

    with pytest.raises(CloudflareWorkflowsConnectionError, match=r"cut off after \d+ bytes|ended after"):
        read_all(open_reader(server, content_length=len(DATA)), 4096)


def test_truncated_chunked_body_raises(server):
    server.script = send_body(
        b"%x\r\n%s\r\n" % (50_000, DATA[:50_000]) + b"%x\r\n" % 50_000 + DATA[50_000:60_000],
        content_length=None,
        extra="Transfer-Encoding: chunked\r\n",
    )

    with pytest.raises(CloudflareWorkflowsConnectionError, match="cut off after"):
        read_all(open_reader(server, content_length=None), 4096)


def test_close_delimited_body_cut_short_cannot_be_detected(server):
    """Without Content-Length (or chunking) the end of the connection is the end of the body."""
    server.script = send_body(DATA[:60_000], content_length=None)

    assert b"".join(read_all(open_reader(server, content_length=None), 4096)) == DATA[:60_000]


def stall_after(data: bytes, server: ScriptedServer) -> Callable[[socket.socket], None]:
    def script(connection: socket.socket) -> None:
        connection.sendall(head(content_length=len(DATA)) + data)
        server.release.wait(30)  # hold the connection open, sending nothing

    return script


def test_no_byte_for_stall_timeout_raises(server):
    server.script = stall_after(DATA[:10_000], server)
    reader = open_reader(server, content_length=len(DATA), stall_timeout=0.3)

    started = time.monotonic()
    with pytest.raises(CloudflareWorkflowsConnectionError, match=r"No byte of the body arrived for 0.3 s"):
        read_all(reader, 4096)
    assert time.monotonic() - started < 10  # the stall timeout ended it, not the 10 s read timeout


def test_a_slow_but_steady_body_outlives_the_stall_timeout(server):
    """The total time is not bounded: each byte that arrives restarts the wait."""

    def drip(connection: socket.socket) -> None:
        connection.sendall(head(content_length=12))
        for _ in range(12):
            server.release.wait(0.1)  # the server's pace (the fault under test), not synchronisation
            connection.sendall(b"x")

    server.script = drip
    reader = open_reader(server, content_length=12, stall_timeout=0.6)

    started = time.monotonic()
    assert b"".join(read_all(reader, 4096)) == b"x" * 12
    assert time.monotonic() - started > 0.6


@pytest.mark.parametrize(("stall_timeout", "shown"), [(0.3, "0.3 s"), (None, "0.4 s")])
def test_hook_stream_bounds_the_time_without_progress(server, monkeypatch, stall_timeout, shown):
    """The hook passes ``stall_timeout``; without it the connection's timeout (0.4 s here) applies."""
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        connection_json(server.url, extra={"timeout": 0.4, "max_retries": 0}),
    )
    server.script = stall_after(DATA[:10_000], server)
    hook = CloudflareWorkflowsHook()

    with hook.stream_step_output("wf", "i1", "blob-1", stall_timeout=stall_timeout) as stream:
        assert stream.content_length == len(DATA)
        with pytest.raises(
            CloudflareWorkflowsConnectionError, match=f"No byte of the body arrived for {shown}"
        ):
            b"".join(stream.chunks)
