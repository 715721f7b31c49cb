"""Test doubles shared by several test modules."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any


class FakeClock:
    """A rate-limiter clock that only moves when someone sleeps on it (thread-safe); records the sleeps."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start
        self.slept: list[float] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return self.time

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.slept.append(seconds)
            self.time += seconds

    async def asleep(self, seconds: float) -> None:
        self.sleep(seconds)
        await asyncio.sleep(0)


class FakeTaskStateStore:
    """
    Airflow's task state store (``context["task_state_store"]``, a ``TaskStateStoreAccessor``) in a dict:
    ``get`` / ``set`` / ``delete`` of JSON values, checked as the real one checks them (no None, JSON only).
    Share one between the contexts of a task's tries, as Airflow does.
    """

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return json.loads(json.dumps(self.values[key])) if key in self.values else default

    def set(self, key: str, value: Any, *, retention: Any = None) -> None:
        if value is None:
            raise ValueError("Cannot set value as None")
        self.values[key] = json.loads(json.dumps(value))

    def delete(self, key: str) -> None:
        self.values.pop(key, None)
