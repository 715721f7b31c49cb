"""Test doubles shared by several test modules."""

from __future__ import annotations

import asyncio
import threading


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
