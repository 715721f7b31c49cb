"""One request for identical sync looks made at the same time in one process.

Deferrable sensors look once on the worker before they defer (a finished step needs no trigger). When
many of them start together in one process (``airflow dags test``, a worker running tasks in
threads) on few instances, each would send its own ``GET`` of the same instance details, and under
Cloudflare's budget (1,200 requests per 5 minutes) the rate limiter would queue them for a minute: the
steps that finish meanwhile would be noticed late. Here the looks at one instance that overlap share
one request: the first caller sends it, the callers that come while it is on its way (waiting for the
budget, or for the answer) get its answer, or its error. An answer is never kept after its request
ends, so no caller gets an answer older than its own call.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from airflow_provider_cfworkflows.deadlines import seconds_left

_T = TypeVar("_T")


class _Flight(Generic[_T]):
    def __init__(self) -> None:
        self.done = threading.Event()
        self.joined = 0
        self.result: _T | None = None
        self.error: BaseException | None = None


class SingleFlight(Generic[_T]):
    """Calls with the same key that overlap in time run once; every caller gets the outcome."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight[_T]] = {}

    def joined(self, key: Hashable) -> int:
        """How many callers wait for the call of ``key`` on its way (0 when there is none)."""
        with self._lock:
            flight = self._flights.get(key)
            return 0 if flight is None else flight.joined

    def run(self, key: Hashable, call: Callable[[], _T]) -> _T:
        """
        ``call()``, or the outcome of the same key's call already on its way. A caller does not wait
        for another's call past its own deadline (:mod:`~airflow_provider_cfworkflows.deadlines`): it
        then makes its own.
        """
        with self._lock:
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
            else:
                flight.joined += 1
        if not leader:
            if flight.done.wait(seconds_left()):
                if flight.error is not None:
                    raise _own_copy(flight.error)
                return flight.result  # type: ignore[return-value]  # set with done, unless error
            return call()
        try:
            flight.result = call()
            return flight.result
        except BaseException as error:
            flight.error = error
            raise
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()


def _own_copy(error: BaseException) -> BaseException:
    """A copy of ``error`` for another thread to raise (its traceback is its own), or ``error`` itself."""
    try:
        return copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        return error
