"""The emulator's clock: real time, sped up by ``time_scale``, plus manual jumps."""

from __future__ import annotations

import threading
import time


class Clock:
    """
    Emulated epoch seconds.

    :param time_scale: emulated seconds per real second (0 freezes time: only :meth:`advance` moves it).
    """

    def __init__(self, time_scale: float = 1.0) -> None:
        self._lock = threading.Lock()
        self._base = time.time()
        self._real_base = time.monotonic()
        self._scale = time_scale

    def now(self) -> float:
        """The current emulated time."""
        with self._lock:
            return self._base + (time.monotonic() - self._real_base) * self._scale

    def advance(self, seconds: float) -> float:
        """Jump ahead by ``seconds``; returns the new emulated time."""
        with self._lock:
            self._base += seconds
        return self.now()

    @property
    def time_scale(self) -> float:
        return self._scale

    def set_time_scale(self, time_scale: float) -> None:
        """Change the speed from now on (time so far is kept)."""
        with self._lock:
            real_now = time.monotonic()
            self._base += (real_now - self._real_base) * self._scale
            self._real_base = real_now
            self._scale = time_scale
