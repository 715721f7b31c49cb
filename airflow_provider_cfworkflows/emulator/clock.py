"""The emulator's clock: emulated time = start + real elapsed x ``time_scale`` + manual advances."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime


class Clock:
    """
    Emulated epoch seconds. It never goes backwards.

    :param time_scale: emulated seconds per real second (0 freezes time: only :meth:`advance` moves it).
    :param start: the emulated time now (default: the real wall-clock time).
    """

    def __init__(self, time_scale: float = 1.0, *, start: float | None = None) -> None:
        _check_scale(time_scale)
        self._lock = threading.Lock()
        self._base = time.time() if start is None else start
        self._real_base = time.monotonic()
        self._scale = time_scale

    def now(self) -> float:
        """The current emulated time (epoch seconds)."""
        with self._lock:
            return self._base + (time.monotonic() - self._real_base) * self._scale

    def advance(self, seconds: float) -> float:
        """Jump ahead by ``seconds`` (>= 0); returns the new emulated time."""
        if not seconds >= 0:
            raise ValueError(f"advance_seconds must be >= 0 (the clock never goes back), got {seconds!r}")
        with self._lock:
            self._base += seconds
        return self.now()

    @property
    def time_scale(self) -> float:
        """Emulated seconds per real second."""
        return self._scale

    def set_time_scale(self, time_scale: float) -> None:
        """Change the speed from now on (emulated time so far is kept)."""
        _check_scale(time_scale)
        with self._lock:
            real_now = time.monotonic()
            self._base += (real_now - self._real_base) * self._scale
            self._real_base = real_now
            self._scale = time_scale


def _check_scale(time_scale: float) -> None:
    if not 0 <= time_scale < float("inf"):
        raise ValueError(f"time_scale must be a finite number >= 0, got {time_scale!r}")


def iso(moment: float | None) -> str | None:
    """Cloudflare's timestamp format: ISO 8601 in UTC with milliseconds and ``Z``."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
