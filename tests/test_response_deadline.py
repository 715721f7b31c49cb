"""The status line and headers of a sync response arrive by a deadline, against a real dripping server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import requests

from airflow_provider_cfworkflows.response_deadline import DeadlineAdapter, headers_by

BODY = b'{"success":true,"errors":[],"messages":[],"result":{"status":"running"}}'
HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(BODY)}\r\nconnection: close\r\n\r\n".encode()
)
# Each byte comes well within a socket read's timeout; the whole head takes far longer than the deadline.
BYTE_INTERVAL = 0.2
READ_TIMEOUT = 5.0
DEADLINE = 1.0
# Scheduling noise allowed on a loaded machine (the whole head would take len(HEAD) * 0.2 > 20 s).
SLACK = 5.0


class DrippingServer:
    """One connection at a time on 127.0.0.1: its head a byte every ``interval`` s (or at once), its body."""

    def __init__(self, interval: float | None) -> None:
        self.interval = interval
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            with connection:
                try:
                    connection.recv(65536)
                    self._answer(connection)
                except OSError:
                    pass  # the client gave up

    def _answer(self, connection: socket.socket) -> None:
        if self.interval is None:
            connection.sendall(HEAD + BODY)
            return
        for index in range(len(HEAD)):
            if self.stopped.wait(self.interval):
                return
            connection.sendall(HEAD[index : index + 1])
        connection.sendall(BODY)

    def stop(self) -> None:
        self.stopped.set()
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() in progress (Linux)
        self.listener.close()
        self.thread.join(timeout=30)


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.mount("http://", DeadlineAdapter())
        yield session


@pytest.fixture
def dripping() -> Iterator[DrippingServer]:
    server = DrippingServer(BYTE_INTERVAL)
    yield server
    server.stop()


def test_dripping_headers_end_at_the_deadline(session, dripping):
    started = time.monotonic()
    with pytest.raises(requests.ReadTimeout), headers_by(time.time() + DEADLINE):
        session.get(dripping.url, timeout=READ_TIMEOUT)

    assert time.monotonic() - started < DEADLINE + SLACK


def test_a_passed_deadline_fails_before_waiting(session, dripping):
    with pytest.raises(requests.ReadTimeout), headers_by(time.time() - 1):
        session.get(dripping.url, timeout=READ_TIMEOUT)


def test_headers_in_time_and_the_body_are_read_as_usual(session):
    server = DrippingServer(None)
    try:
        with headers_by(time.time() + 60):
            response = session.get(server.url, timeout=READ_TIMEOUT, stream=True)
        # The deadline applies to the status line and headers only: the body is read after it passed.
        with headers_by(time.time() - 1):
            body = response.raw.read()
        assert (response.status_code, body) == (200, BODY)
        without_deadline = session.get(server.url, timeout=READ_TIMEOUT)
        assert without_deadline.json()["result"] == {"status": "running"}
    finally:
        server.stop()
