"""Cloudflare's API rate limit: a request quota per credential and window, with a lockout.

Cloudflare allows 1,200 requests per 5 minutes per user, counted across the API and the dashboard;
going over answers HTTP 429 and blocks every call of that user for the rest of the period
(https://developers.cloudflare.com/fundamentals/api/reference/limits/). Every REST response carries
``Ratelimit: "default";r=<remaining>;t=<seconds until reset>`` and
``Ratelimit-Policy: "default";q=<quota>;w=<window seconds>``; a 429 also ``Retry-After: <seconds>``
(https://developers.cloudflare.com/changelog/2025-09-03-rate-limiting-improvement/).

The emulator models it with a fixed window per credential label (see ``auth``), opened by the
credential's first request: each request uses one of ``quota``; once none is left, every request of
that credential gets 429 (error 971) until the window ends, and the next request opens a new window.
Inferred: whether Cloudflare's window is fixed or sliding, and when it starts, are not documented.
Windows run on real (monotonic) time, not the emulated clock, so clients can wait for them; tests and
benchmarks shorten ``window`` (and ``quota`` with it) to time-scale a run.

Requests without usable credentials are not counted (Cloudflare limits those per IP address).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .scenario import RateLimitSpec

POLICY_NAME = "default"


@dataclass(frozen=True)
class Verdict:
    """The limiter's answer for one request: allowed or not, and what the headers say."""

    allowed: bool
    remaining: int
    reset_in: int  # whole seconds until the window ends (rounded up)
    spec: RateLimitSpec

    def headers(self) -> dict[str, str]:
        """``Ratelimit`` and ``Ratelimit-Policy`` (unless turned off), plus ``Retry-After`` on a 429."""
        headers: dict[str, str] = {}
        if self.spec.headers:
            headers["Ratelimit"] = f'"{POLICY_NAME}";r={self.remaining};t={self.reset_in}'
            headers["Ratelimit-Policy"] = f'"{POLICY_NAME}";q={self.spec.quota};w={self.spec.window}'
        if not self.allowed:
            headers["Retry-After"] = str(max(1, self.reset_in))
        return headers


@dataclass
class _Usage:
    window_start: float | None = None
    used: int = 0
    requests: int = 0  # every request counted, over all windows
    limited: int = 0  # of which answered 429 by the limiter


@dataclass
class RateLimiter:
    """
    Counts requests per credential label and decides which ones are over the quota.

    :param spec: the quota and window; None disables limiting (requests are still counted).
    :param monotonic: the time source (seconds), replaceable in tests.
    """

    spec: RateLimitSpec | None = None
    monotonic: Callable[[], float] = time.monotonic
    _usage: dict[str, _Usage] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def configure(self, spec: RateLimitSpec | None) -> None:
        """Change the quota (or disable it with None); every window and counter starts afresh."""
        with self._lock:
            self.spec = spec
            self._usage.clear()

    def reset(self) -> None:
        """Forget every window and counter."""
        with self._lock:
            self._usage.clear()

    def admit(self, label: str) -> Verdict | None:
        """Count one request of ``label``; None when limiting is off."""
        with self._lock:
            usage = self._usage.setdefault(label, _Usage())
            usage.requests += 1
            if self.spec is None:
                return None
            now = self._open_window(usage)
            allowed = usage.used < self.spec.quota
            if allowed:
                usage.used += 1
            else:
                usage.limited += 1
            return self._verdict(usage, now, allowed)

    def consume(self, label: str, count: int) -> dict[str, Any]:
        """Use ``count`` requests of ``label``'s quota, as other clients (the dashboard) would."""
        with self._lock:
            usage = self._usage.setdefault(label, _Usage())
            if self.spec is not None:
                self._open_window(usage)
                usage.used = min(self.spec.quota, usage.used + count)
            return self._describe(label, usage)

    def status(self) -> dict[str, Any]:
        """The configuration and, per label, the counters and the current window."""
        with self._lock:
            return {
                "enabled": self.spec is not None,
                "quota": None if self.spec is None else self.spec.quota,
                "window": None if self.spec is None else self.spec.window,
                "headers": None if self.spec is None else self.spec.headers,
                "credentials": {label: self._describe(label, usage) for label, usage in self._usage.items()},
            }

    def _open_window(self, usage: _Usage) -> float:
        assert self.spec is not None
        now = self.monotonic()
        if usage.window_start is None or now >= usage.window_start + self.spec.window:
            usage.window_start, usage.used = now, 0
        return now

    def _verdict(self, usage: _Usage, now: float, allowed: bool) -> Verdict:
        assert self.spec is not None
        assert usage.window_start is not None
        reset_in = math.ceil(max(0.0, self.spec.window - (now - usage.window_start)))
        return Verdict(allowed, self.spec.quota - usage.used, reset_in, self.spec)

    def _describe(self, label: str, usage: _Usage) -> dict[str, Any]:
        described: dict[str, Any] = {"requests": usage.requests, "limited": usage.limited}
        if self.spec is not None and usage.window_start is not None:
            now = self.monotonic()
            if now < usage.window_start + self.spec.window:
                verdict = self._verdict(usage, now, True)
                described.update(remaining=verdict.remaining, reset_in=verdict.reset_in)
            else:
                described.update(remaining=self.spec.quota, reset_in=0)
        return described
