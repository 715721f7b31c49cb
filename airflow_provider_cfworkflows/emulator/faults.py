"""Faults a test can inject for the next N matching requests."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

KINDS = ("rate_limit", "server_error", "drop_connection", "success_false", "malformed_json", "delay")


@dataclass
class Fault:
    """
    :param kind: one of ``KINDS``.
    :param path: regular expression searched in the raw request path.
    :param method: only this HTTP method, or any.
    :param count: how many matching requests get the fault.
    :param retry_after: ``Retry-After`` for ``rate_limit`` (seconds or an HTTP date).
    :param status: HTTP status for ``server_error``.
    :param after_bytes: bytes of the body sent before ``drop_connection`` closes the connection.
    :param seconds: wait before answering, for ``delay``.
    """

    kind: str
    path: str = ".*"
    method: str | None = None
    count: int = 1
    retry_after: str = "1"
    status: int = 500
    after_bytes: int | None = None
    seconds: float = 1.0
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.count < 1:
            raise ValueError("count must be >= 1")
        self.pattern = re.compile(self.path)

    def as_dict(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if key != "pattern"}


class FaultBook:
    """Pending faults; each matching request takes one use of the first matching fault."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def take(self, method: str, raw_path: str) -> Fault | None:
        with self._lock:
            for fault in self._faults:
                if (fault.method is None or fault.method.upper() == method) and fault.pattern.search(
                    raw_path
                ):
                    fault.count -= 1
                    if fault.count == 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [fault.as_dict() for fault in self._faults]

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()
