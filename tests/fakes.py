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


class FakeAssetStateStore:
    """
    The one method pair of Airflow's ``AssetStateStoreAccessors`` an asset watcher uses (``aget`` /
    ``aset``), kept in a dict that outlives the trigger objects (as the metadata DB does); values go
    through JSON as they do there.
    """

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.writes = 0

    async def aget(self, key: str, default: Any = None) -> Any:
        return json.loads(self.values[key]) if key in self.values else default

    async def aset(self, key: str, value: Any) -> None:
        self.values[key] = json.dumps(value)
        self.writes += 1
