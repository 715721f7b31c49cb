"""Turns: the watchers of one connection in one event loop take their looks in turn.

When Cloudflare's API budget (1,200 requests per 5 minutes per user,
https://developers.cloudflare.com/fundamentals/api/reference/limits/) cannot pay for a look at every
watched instance each interval, the watchers that are due queue here, and the next turn goes to the one
whose last look is the oldest (a watcher that never looked first, in the order they came): no instance
is looked at twice while another waits unseen. The rate limiter still decides *when* each request may
go; this queue decides *who* goes next, and keeps the requests in flight few
(:data:`MAX_LOOKS_IN_FLIGHT`), so that a thousand watchers starting together queue here, in a heap, and
not in the HTTP client's connection pool (whose queue costs time per waiting request on every change).

Turns have a rank before that order (:class:`Rank`): the pages of a Workflow's listing
(:mod:`.listers`) go first, since each answers for up to 100 watchers; then the looks watchers need;
last the looks only the safety net asks for, which take what the budget leaves. A waiting watcher is
moved up by queueing it again with a better rank (its older entry is then skipped). While a listing is
under way (:meth:`LookTurns.listing`) the other looks wait: a look already holding a turn would take the
rate limiter's next slot before each page (it hands slots out in the order they are asked for), and
every page delayed delays the news of up to 100 instances.

A waiting watcher costs an entry in a heap, not a task: the queue calls :meth:`TurnTaker.take_turn`
when its turn comes, and :class:`Alarms` wakes watchers when their next look is due with one loop timer
for all the watchers of a connection. Ten thousand idle watchers are then ten thousand small objects,
which keeps the pauses of Python's garbage collector short (``docs/benchmarks.md``).

The interval the budget allows is logged once when it stretches the watchers' interval (and again when
it changes by half or more, and when it no longer does), not on each look.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import IntEnum
from typing import Protocol, TypeVar

log = logging.getLogger(__name__)

# Looks of one connection in flight at once (each holds one HTTP connection). At Cloudflare's budget of
# 4 requests a second one or two suffice; more only matter for a larger quota or the local emulator.
MAX_LOOKS_IN_FLIGHT = 8
# The budget stretches the interval when a turn comes more than this share of the watcher's interval
# after it was due, and the turns go round (watchers / turns per second) RELOG_FACTOR times slower.
STRETCHED_FRACTION = 0.5
# The stretched interval is logged again when it changes by this factor (up or down), at most once per
# RELOG_SECONDS (while a fan-out starts, the watchers and the interval grow together).
RELOG_FACTOR = 1.5
RELOG_SECONDS = 300.0
# Turns remembered to measure the rate at which they are given.
RATE_SAMPLE = 64
# Entries of a heap that are skipped when they come up (their owner was queued again, or left) are
# dropped once the heap holds twice as many entries as were live at the last drop, plus this many.
COMPACT_SLACK = 64

_Entry = TypeVar("_Entry", bound=tuple[object, ...])


def _drop_skipped(heap: list[_Entry], live: Callable[[_Entry], bool]) -> int:
    """Keep only the ``live`` entries of ``heap`` (in place); returns the size at which to drop again."""
    heap[:] = [entry for entry in heap if live(entry)]
    heapq.heapify(heap)
    return 2 * len(heap) + COMPACT_SLACK


class Rank(IntEnum):
    """Which waiting turns go first (lower first; within a rank, the oldest last look)."""

    LISTING = 0  # a page of a Workflow's listing: it answers for up to 100 watchers at once
    LOOK = 1  # a look a watcher needs: its interval is up, its instance changed, or it never looked
    FIRST_LOOK = 2  # the first look of a step wait whose instance a listing shows unchanged meanwhile
    SAFETY_NET = 3  # a look only the safety net asks for: a listing vouches for the instance meanwhile


class TurnTaker(Protocol):
    """What waits in :class:`LookTurns`: a watcher, or the future of :meth:`LookTurns.turn`."""

    # The order of its live entry in the queue (set by the queue; None: not waiting). Older entries of
    # the same taker, left in the heap when it was queued again, are skipped.
    turn_order: int | None

    def take_turn(self) -> bool:
        """
        Its turn came: True if it takes it (it then calls :meth:`LookTurns.release` once, when its look is
        done), False if it no longer needs it (the turn goes to the next one).
        """


class _Waiter:
    """A turn awaited by a task (:meth:`LookTurns.turn`)."""

    def __init__(self) -> None:
        self.turn_order: int | None = None
        self.future: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def take_turn(self) -> bool:
        if self.future.done():  # cancelled meanwhile
            return False
        self.future.set_result(None)
        return True


class LookTurns:
    """
    A fair queue for the looks of the watchers that share one connection (see the module docstring).

    :param label: names the connection in the log.
    :param concurrency: looks in flight at once.
    """

    def __init__(self, *, label: str, concurrency: int = MAX_LOOKS_IN_FLIGHT) -> None:
        self.label = label
        self._free = concurrency
        # (rank, last look, arrival, the taker): arrival is the taker's turn_order while the entry is live.
        self._waiting: list[tuple[int, float, int, TurnTaker]] = []
        self._compact_at = COMPACT_SLACK  # see _drop_skipped
        self._order = itertools.count()
        self._granted: deque[float] = deque(maxlen=RATE_SAMPLE)
        self._logged_interval: float | None = None  # the stretched interval last logged, None: not stretched
        self._logged_at = -math.inf
        self._stretched_at = -math.inf
        self._listings = 0  # listings under way: other looks wait for their turns until none is

    @property
    def waiting(self) -> int:
        """Entries queued (those of cancelled or re-queued takers may be counted until they come up)."""
        return len(self._waiting)

    def enqueue(self, taker: TurnTaker, *, rank: Rank, last_look_at: float) -> None:
        """
        Queue ``taker`` for a turn (again, with a better rank: moved up, keeping its age).

        :param rank: see :class:`Rank`.
        :param last_look_at: ``time.monotonic()`` of its last look (``-inf``: none yet).
        """
        order = next(self._order)
        taker.turn_order = order
        heapq.heappush(self._waiting, (rank, last_look_at, order, taker))
        if len(self._waiting) > self._compact_at:
            self._compact_at = _drop_skipped(self._waiting, lambda entry: entry[3].turn_order == entry[2])
        self._grant()

    def release(self) -> None:
        """A look is done: its turn goes to the next one."""
        self._free += 1
        self._grant()

    @asynccontextmanager
    async def turn(self, *, last_look_at: float, rank: Rank = Rank.LOOK) -> AsyncIterator[None]:
        """
        Wait for a turn in a task, hold it for the block (one look or page), then pass it on.

        :param last_look_at: ``time.monotonic()`` of the last look (``-inf``: none yet).
        :param rank: see :class:`Rank`.
        """
        waiter = _Waiter()
        self.enqueue(waiter, rank=rank, last_look_at=last_look_at)
        try:
            await waiter.future
        except asyncio.CancelledError:
            waiter.turn_order = None
            if waiter.future.done() and not waiter.future.cancelled():  # handed the turn as it was cancelled
                self.release()
            raise
        try:
            yield
        finally:
            self.release()

    @asynccontextmanager
    async def listing(self) -> AsyncIterator[None]:
        """A listing is under way for the block: turns of other ranks wait until it ends."""
        self._listings += 1
        try:
            yield
        finally:
            self._listings -= 1
            self._grant()

    def _grant(self) -> None:
        """Hand the free turns to the first takers (none but listing pages while a listing is under way)."""
        waiting = self._waiting
        while self._free > 0 and waiting:
            rank, _last_look_at, order, taker = waiting[0]
            if taker.turn_order != order:  # cancelled, or queued again with a better rank
                heapq.heappop(waiting)
                continue
            if self._listings and rank != Rank.LISTING:
                return
            heapq.heappop(waiting)
            taker.turn_order = None
            self._free -= 1
            if not taker.take_turn():
                self._free += 1

    # --- the stretched interval, in the log ------------------------------------------------------------

    def note_turn(
        self, now: float, due_at: float, interval: float, watchers: int, *, vouched: bool = False
    ) -> None:
        """
        A turn was taken at ``now`` (``time.monotonic()``): the log says when the budget stretches the
        interval.

        :param due_at: when its look was due (``time.monotonic()``).
        :param interval: its seconds between looks.
        :param watchers: how many watchers share this queue.
        :param vouched: a listing vouches for the watcher (:mod:`.listers`): the listing, not the budget,
            says when it looks, so a late look does not mean the budget stretches the interval.
        """
        self._granted.append(now)
        if vouched:
            return
        late = now - due_at
        stretched = self._stretched_interval(interval, watchers)
        if late > STRETCHED_FRACTION * interval and stretched >= RELOG_FACTOR * interval:
            self._stretched_at = now
            logged = self._logged_interval
            changed = logged is not None and not logged / RELOG_FACTOR < stretched < logged * RELOG_FACTOR
            if logged is None or (changed and now - self._logged_at >= RELOG_SECONDS):
                self._logged_interval, self._logged_at = stretched, now
                log.warning(
                    "Cloudflare's API budget cannot pay for a look at each of the %d instances watched "
                    "through connection %r every %.0f s: they are looked at in turn, each about every "
                    "%.0f s (the budget is shared by every client of the token).",
                    watchers,
                    self.label,
                    interval,
                    stretched,
                )
        elif self._logged_interval is not None and now - self._stretched_at > interval:
            self._logged_interval = None
            log.info(
                "Cloudflare's API budget again pays for a look at each instance watched through connection "
                "%r every %.0f s.",
                self.label,
                interval,
            )

    def _stretched_interval(self, interval: float, watchers: int) -> float:
        """About how often each watcher gets a turn: watchers / turns per second (at least ``interval``)."""
        granted = self._granted
        if len(granted) < 2 or granted[-1] <= granted[0]:
            return interval
        rate = (len(granted) - 1) / (granted[-1] - granted[0])
        return max(interval, watchers / rate)


class Alarmed(Protocol):
    """What :class:`Alarms` wakes: a watcher."""

    # The order of its live alarm (set by the alarms; None: none set). Older alarms are skipped.
    alarm_order: int | None

    def on_alarm(self) -> None:
        """The time it asked for has come."""


class Alarms:
    """
    Wakes watchers at the times they ask for, with one heap and one loop timer for all of them (a task
    and a timer per watcher would cost a few dozen objects each, see the module docstring).
    """

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Alarmed]] = []
        self._order = itertools.count()
        self._compact_at = COMPACT_SLACK  # see _drop_skipped
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf
        # The callbacks run in a context of their own: not in that of the trigger that set the first alarm.
        self._context = contextvars.Context()

    def set(self, alarmed: Alarmed, at: float) -> None:
        """Wake ``alarmed`` at ``at`` (``time.monotonic()``), instead of when it asked before."""
        order = alarmed.alarm_order = next(self._order)
        heapq.heappush(self._heap, (at, order, alarmed))
        if len(self._heap) > self._compact_at:
            self._compact_at = _drop_skipped(self._heap, lambda entry: entry[2].alarm_order == entry[1])
        if at < self._timer_at:
            self._arm(at)

    def cancel(self, alarmed: Alarmed) -> None:
        """Do not wake ``alarmed`` (its entry is skipped when it comes up)."""
        alarmed.alarm_order = None

    def _arm(self, at: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = asyncio.get_running_loop().call_later(
            max(0.0, at - time.monotonic()), self._ring, context=self._context
        )

    def _ring(self) -> None:
        self._timer, self._timer_at = None, math.inf
        heap = self._heap
        now = time.monotonic()
        while heap:
            at, order, alarmed = heap[0]
            if alarmed.alarm_order != order:
                heapq.heappop(heap)
            elif at <= now:
                heapq.heappop(heap)
                self.cancel(alarmed)
                try:
                    alarmed.on_alarm()  # may set alarms: the heap is read afresh
                except Exception:  # one watcher's bug must not leave the others asleep
                    log.exception("Waking %r failed", alarmed)
            else:
                self._arm(at)
                return
