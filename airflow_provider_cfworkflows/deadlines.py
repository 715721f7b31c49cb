"""The deadline a wait imposes on the API calls made for it.

A sensor's or trigger's look must end by the wait's own timeout, whatever the server does: the hook's
retries, its waits for the rate limiter and each request's socket timeout are all cut to the time left.
The deadline travels in a context variable, so every call made inside :func:`calls_end_by` (in this
thread, or in this asyncio task and the tasks it starts) sees it without new hook arguments.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_deadline: ContextVar[float | None] = ContextVar("cloudflare_workflows_call_deadline", default=None)


def current_deadline() -> float | None:
    """The wall-clock time (``time.time()`` seconds) by which calls must end, or None for no bound."""
    return _deadline.get()


def seconds_left(now: float | None = None) -> float | None:
    """Seconds until the current deadline (never negative), or None when there is none."""
    deadline = _deadline.get()
    if deadline is None:
        return None
    return max(0.0, deadline - (time.time() if now is None else now))


@contextmanager
def calls_end_by(deadline: float | None) -> Iterator[None]:
    """
    Bound every API call made inside the block by ``deadline`` (``time.time()`` seconds).

    Nested blocks keep the earlier of the two deadlines; None adds no bound.

    :param deadline: the wall-clock time by which calls must end, or None.
    """
    outer = _deadline.get()
    effective = deadline if outer is None else outer if deadline is None else min(outer, deadline)
    token = _deadline.set(effective)
    try:
        yield
    finally:
        _deadline.reset(token)
