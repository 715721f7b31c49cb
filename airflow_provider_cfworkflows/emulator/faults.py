"""Faults a test can inject for the next N matching API requests.

A fault matches a request when its ``path`` regular expression is *searched* in the raw
(percent-encoded) request path and its ``method`` (if any) equals the request's. Each matching
request uses up one of the fault's ``count``; the first pending fault that matches wins. Faults apply
only to authenticated requests of the emulated API, never to ``/__emulator/``.

Kinds (what the client sees; whether the request still takes effect):

``rate_limit``
    HTTP 429, ``Retry-After: <retry_after>`` (seconds or an HTTP date; default ``"1"``), error
    envelope. The request does not take effect.
``server_error``
    HTTP ``status`` (default 500), error envelope with ``10001 workflows.api.error.internal_server``
    (and ``error_chain``, if given). The request does not take effect.
``html``
    HTTP ``status`` (default 500; 200 allowed, as captive portals and some proxies send) with an HTML
    error page instead of JSON, as a proxy or Cloudflare's edge answers. The request does not take effect.
``drop_connection``
    The real answer's headers (with its full ``Content-Length``), then only ``after_bytes`` bytes of
    the body (default: half), then the connection is closed. The request takes effect.
``success_false``
    HTTP 200 with ``success: false``, ``errors: [10001 internal_server]`` and the real ``result`` (as
    seen in production). The request takes effect.
``malformed_json``
    HTTP 200, ``application/json``, a truncated (invalid) body. The request takes effect.
``delay``
    Wait ``seconds`` (default 1), then answer normally. The request takes effect.
``drip``
    The real answer's headers, then its body one byte every ``interval`` seconds (default 1). The
    request takes effect.
``header_drip``
    The real answer's status line and headers one byte every ``interval`` seconds, then its body at once,
    then the connection closes (a client that gives up first ends it). The request takes effect.
``lost_answer``
    The request takes effect (an instance is created, an event delivered, a status changed), then the
    connection is closed before any byte of the answer is sent.
``endless_json``
    HTTP 200, ``application/json``, chunked: the start of a valid envelope whose ``result`` never ends
    (until the client goes away). The request takes effect.
``truncated_chunked``
    The real answer's status and headers without ``Content-Length`` (chunked), only ``after_bytes`` bytes
    of the body (default: half), then the body *ends cleanly*: nothing in HTTP shows it was cut. The
    request takes effect.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from .scenario import is_number

KINDS = (
    "rate_limit",
    "server_error",
    "html",
    "drop_connection",
    "success_false",
    "malformed_json",
    "delay",
    "drip",
    "header_drip",
    "lost_answer",
    "endless_json",
    "truncated_chunked",
)
# Faults answered instead of the API: the request never reaches it.
NO_EFFECT_KINDS = frozenset({"rate_limit", "server_error", "html"})
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
MAX_DELAY_SECONDS = 600.0
MAX_ERROR_CHAIN = 10


@dataclass
class Fault:
    """
    One injected fault.

    :param kind: one of :data:`KINDS`.
    :param path: regular expression searched in the raw request path (default: every path).
    :param method: only requests with this HTTP method, or None for any.
    :param count: how many matching requests get the fault.
    :param retry_after: ``Retry-After`` value for ``rate_limit``.
    :param status: HTTP status for ``server_error`` (400-599) and ``html`` (also 200).
    :param after_bytes: body bytes sent before ``drop_connection`` closes or ``truncated_chunked`` ends
        (None: half the body).
    :param seconds: how long ``delay`` waits.
    :param interval: seconds between two bytes of a ``drip`` or ``header_drip``.
    :param error_chain: ``[{code, message}, ...]`` added to a ``server_error``'s error.
    """

    kind: str
    path: str = ""
    method: str | None = None
    count: int = 1
    retry_after: str = "1"
    status: int = 500
    after_bytes: int | None = None
    seconds: float = 1.0
    interval: float = 1.0
    error_chain: list[dict[str, Any]] | None = None
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {list(KINDS)}, got {self.kind!r}")
        if not isinstance(self.path, str):
            raise ValueError(f"fault path must be a regular expression string, got {self.path!r}")
        try:
            self.pattern = re.compile(self.path)
        except re.error as error:
            raise ValueError(f"fault path {self.path!r} is not a valid regular expression: {error}") from None
        if self.method is not None:
            if not isinstance(self.method, str) or self.method.upper() not in METHODS:
                raise ValueError(f"fault method must be one of {list(METHODS)} or null, got {self.method!r}")
            self.method = self.method.upper()
        if not is_number(self.count, int) or self.count < 1:
            raise ValueError(f"fault count must be a whole number >= 1, got {self.count!r}")
        if is_number(self.retry_after):
            self.retry_after = str(self.retry_after)
        if not isinstance(self.retry_after, str) or not self.retry_after:
            raise ValueError(f"fault retry_after must be seconds or an HTTP date, got {self.retry_after!r}")
        html_ok = self.kind == "html" and self.status == 200
        if not is_number(self.status, int) or not (400 <= self.status <= 599 or html_ok):
            raise ValueError(
                f"fault status must be an HTTP error status (400-599; html also 200), got {self.status!r}"
            )
        if self.after_bytes is not None and (not is_number(self.after_bytes, int) or self.after_bytes < 0):
            raise ValueError(f"fault after_bytes must be a whole number >= 0, got {self.after_bytes!r}")
        if not is_number(self.seconds) or not 0 <= self.seconds <= MAX_DELAY_SECONDS:
            raise ValueError(f"fault seconds must be from 0 to {MAX_DELAY_SECONDS:g}, got {self.seconds!r}")
        if not is_number(self.interval) or not 0 < self.interval <= MAX_DELAY_SECONDS:
            raise ValueError(
                f"fault interval must be more than 0 and at most {MAX_DELAY_SECONDS:g}, got {self.interval!r}"
            )
        if self.error_chain is not None and not (
            isinstance(self.error_chain, list)
            and len(self.error_chain) <= MAX_ERROR_CHAIN
            and all(
                isinstance(link, Mapping)
                and set(link) == {"code", "message"}
                and is_number(link["code"], int)
                and isinstance(link["message"], str)
                for link in self.error_chain
            )
        ):
            raise ValueError(
                f"fault error_chain must be a list of at most {MAX_ERROR_CHAIN} {{code: int, message: str}}"
            )

    @classmethod
    def from_dict(cls, data: Any) -> Fault:
        """Build a fault from the control API's JSON body; ValueError names the bad field."""
        if not isinstance(data, Mapping):
            raise ValueError("a fault must be a JSON object with at least 'kind'")
        allowed = {f.name for f in fields(cls) if f.init}
        if unknown := set(data) - allowed:
            raise ValueError(f"unknown fault field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if "kind" not in data:
            raise ValueError(f"a fault needs 'kind', one of {list(KINDS)}")
        if data.get("path") is None:
            data = {**data, "path": ""}
        return cls(**data)

    def matches(self, method: str, raw_path: str) -> bool:
        """Whether a request gets this fault."""
        return (self.method is None or self.method == method) and self.pattern.search(raw_path) is not None

    def as_dict(self) -> dict[str, Any]:
        """The fault as JSON (what ``GET /__emulator/faults`` lists)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


class FaultBook:
    """Pending faults; each matching request takes one use of the first matching fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        """Queue ``fault`` after the ones already pending."""
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, raw_path: str) -> Fault | None:
        """The fault for this request, if any (using up one of its count)."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(method, raw_path):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        """Faults not used up yet, in order, with their remaining counts."""
        with self._lock:
            return [fault.as_dict() for fault in self._faults]

    def clear(self) -> None:
        """Drop every pending fault."""
        with self._lock:
            self._faults.clear()
