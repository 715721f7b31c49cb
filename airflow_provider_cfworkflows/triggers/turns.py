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
last the looks only the safety net asks for, which take what the budget leaves. A watcher waiting with
a low rank is moved up when it needs its look after all (:meth:`LookTurns.hurry`). While a listing is
under way (:meth:`LookTurns.listing`) the other looks wait: a look already holding a turn would take the
rate limiter's next slot before each page (it hands slots out in the order they are asked for), and
every page delayed delays the news of up to 100 instances.

The interval the budget allows is logged once when it stretches the watchers' interval (and again when
it changes by half or more, and when it no longer does), not on each look.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import IntEnum

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


class Rank(IntEnum):
    """Which waiting turns go first (lower first; within a rank, the oldest last look)."""

    LISTING = 0  # a page of a Workflow's listing: it answers for up to 100 watchers at once
    LOOK = 1  # a look a watcher needs: its interval is up, its instance changed, or it never looked
    FIRST_LOOK = 2  # the first look of a step wait whose instance a listing shows unchanged meanwhile
    SAFETY_NET = 3  # a look only the safety net asks for: a listing vouches for the instance meanwhile


class TurnTicket:
    """A watcher's place in the queue while it waits, so that :meth:`LookTurns.hurry` can move it up."""

    def __init__(self) -> None:
        self.future: asyncio.Future[None] | None = None
        self.last_look_at = -math.inf


class LookTurns:
    """
    A fair queue for the looks of the watchers that share one connection (see the module docstring).

    :param label: names the connection in the log.
    :param concurrency: looks in flight at once.
    """

    def __init__(self, *, label: str, concurrency: int = MAX_LOOKS_IN_FLIGHT) -> None:
        self.label = label
        self._free = concurrency
        # (rank, last look), arrival, the waiter; a waiter moved up has a second entry (the first one is
        # dropped when it comes up, its future being done by then).
        self._waiting: list[tuple[tuple[int, float], int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._granted: deque[float] = deque(maxlen=RATE_SAMPLE)
        self._logged_interval: float | None = None  # the stretched interval last logged, None: not stretched
        self._logged_at = -math.inf
        self._stretched_at = -math.inf
        self._listings = 0  # listings under way: other looks wait for their turns until none is

    @property
    def waiting(self) -> int:
        """Turns queued (cancelled waiters and moved-up ones may still be counted until they come up)."""
        return len(self._waiting)

    @asynccontextmanager
    async def turn(
        self,
        *,
        last_look_at: float,
        due_at: float,
        interval: float,
        watchers: int,
        rank: Rank = Rank.LOOK,
        ticket: TurnTicket | None = None,
        wanted: Callable[[], bool] | None = None,
        vouched: bool = False,
    ) -> AsyncIterator[None]:
        """
        Wait for this watcher's turn, hold it for the block (one look), then pass it on.

        :param last_look_at: ``time.monotonic()`` of the watcher's last look (``-inf``: none yet).
        :param due_at: when its look was due (``time.monotonic()``).
        :param interval: its seconds between looks.
        :param watchers: how many watchers share this queue (for the log).
        :param rank: see :class:`Rank`.
        :param ticket: lets :meth:`hurry` move this wait up.
        :param wanted: whether the look is still wanted when its turn comes; a turn not wanted (a listing
            made it needless meanwhile) is not counted as a look.
        :param vouched: a listing vouches for the watcher (:mod:`.listers`): the listing, not the budget,
            says when it looks, so a late look does not mean the budget stretches the interval.
        """
        await self._acquire((rank, last_look_at), ticket)
        try:
            if wanted is None or wanted():
                self._note_turn(time.monotonic(), due_at, interval, watchers, vouched=vouched)
            yield
        finally:
            self._release()

    def hurry(self, ticket: TurnTicket, rank: Rank = Rank.LOOK) -> None:
        """Move the wait of ``ticket`` (if it is waiting) up to ``rank``."""
        future = ticket.future
        if future is not None and not future.done():
            heapq.heappush(self._waiting, ((rank, ticket.last_look_at), next(self._order), future))

    @asynccontextmanager
    async def listing(self) -> AsyncIterator[None]:
        """A listing is under way for the block: turns of other ranks wait until it ends."""
        self._listings += 1
        try:
            yield
        finally:
            self._listings -= 1
            self._grant()

    async def _acquire(self, priority: tuple[int, float], ticket: TurnTicket | None) -> None:
        if self._free > 0 and not self._waiting and not (self._listings and priority[0] != Rank.LISTING):
            self._free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiting, (priority, next(self._order), future))
        if ticket is not None:
            ticket.future, ticket.last_look_at = future, priority[1]
        try:
            self._grant()
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed the turn as it was cancelled: pass it on
                self._release()
            raise
        finally:
            if ticket is not None:
                ticket.future = None

    def _release(self) -> None:
        self._free += 1
        self._grant()

    def _grant(self) -> None:
        """Hand the free turns to the first waiters (none but listing pages while a listing is under way)."""
        waiting = self._waiting
        while self._free > 0 and waiting:
            (rank, _last_look_at), _order, future = waiting[0]
            if future.done():  # a cancelled waiter, or one moved up that already had its turn
                heapq.heappop(waiting)
            elif self._listings and rank != Rank.LISTING:
                return
            else:
                heapq.heappop(waiting)
                self._free -= 1
                future.set_result(None)

    # --- the stretched interval, in the log ------------------------------------------------------------

    def _note_turn(
        self, now: float, due_at: float, interval: float, watchers: int, *, vouched: bool = False
    ) -> None:
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
