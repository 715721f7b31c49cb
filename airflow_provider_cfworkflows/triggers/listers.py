"""Listers: many watched instances of one Workflow are listed page by page instead of looked at one by one.

Cloudflare's budget (1,200 requests per 5 minutes) pays for about 230 looks a minute: with one ``GET`` per
instance, 10,000 instances take 42 minutes for one round. A listing page shows up to 100 instances with
their status and ``modified_on``. So when one event loop watches :data:`LISTING_MIN_WATCHERS` or more
instances of one Workflow through one connection and account, a :class:`WorkflowLister` lists the
Workflow's open instances every interval (each status of
:data:`~airflow_provider_cfworkflows.instance_changes.OPEN_LISTED_STATUSES`, every page, with the hook's
listing and the rules of :mod:`airflow_provider_cfworkflows.instance_changes`), and tells each watcher
what it saw (:meth:`.watchers.InstanceWatcher.on_listing`):

- an instance gone from the open listings (finished, or in a passing state such as ``waitingForPause``),
  or changed since its watcher's last look (its status; for a step wait also its ``modified_on``,
  which is assumed to move when a step ends: ``MODIFIED_ON_COVERS_STEPS``, inferred), is looked at
  with its own ``GET``, ahead of other looks;
- an instance wait whose instance shows a status the wait does not wait for is answered by the listing
  alone (an instance wait's first look included); a step wait's first look is its own ``GET``, made in
  turn, moved up when the listing shows its instance changed;
- every other watcher skips its look: the listing vouches for it.

Each listing page takes a turn of the connection's queue (:mod:`.turns`) ahead of the looks, which wait
while a listing is under way; at most half the time goes to listings (the next round starts no sooner
than the last one took after its end), so changed instances get their looks between rounds.

**Only where it is cheaper.** A round costs about one page per 100 open instances of the Workflow
(watched or not), at least one per listed status; listing starts only when a round needs at most half as
many pages as there are watchers (a first round stops as soon as it needs more, and listing is tried
again when the watchers have doubled), and stops when a round needs more pages than there are watchers.
Below :data:`LISTING_MIN_WATCHERS`, watchers look on their own, exactly as without listers.

**When the listing is wrong.** Correctness never depends on a listing alone:

- the safety net: every watcher looks with its own ``GET`` at least every :data:`SAFETY_NET_INTERVALS`
  of its intervals, in turn, with what the budget leaves after listings and needed looks;
- an instance gone from a listing is looked at, so a listing that misses instances costs requests,
  never news; one that misses the same instance :data:`MISSES_FOR_FALLBACK` rounds in a row while its
  own looks show it in a listed status (an instance changing status during a round can slip between two
  status listings once, not round after round) proves the listing incomplete;
- a listing made more than a minute after a change that an instance's own look showed, still showing
  the instance as modified before that change
  (:func:`~airflow_provider_cfworkflows.instance_changes.listing_is_behind`), proves it stale, or
  ``modified_on`` not moving with every step;

and either proof makes the Workflow fall back to per-instance looks for as long as the event loop runs,
logged once.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from airflow.sdk.exceptions import AirflowException

from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsAuthError, CloudflareWorkflowsError
from airflow_provider_cfworkflows.instance_changes import (
    LIST_MARGIN,
    LIST_PAGE_SIZE,
    OPEN_LISTED_STATUSES,
    ListedInstance,
    last_change,
    listing_is_behind,
    watch_fingerprint,
)
from airflow_provider_cfworkflows.instance_details import status_of
from airflow_provider_cfworkflows.triggers.turns import Rank

if TYPE_CHECKING:
    from airflow_provider_cfworkflows.triggers.watchers import InstanceWatcher, SharedHooks

log = logging.getLogger(__name__)

# Watched instances of one Workflow (per connection and account) from which listing is tried. Below,
# per-instance looks cost at most this many requests per interval (100 a minute at 60 s, under half the
# budget), and a round of at least 4 pages would save little.
LISTING_MIN_WATCHERS = 100
# Each watcher looks with its own GET at least every this many of its intervals (budget permitting).
SAFETY_NET_INTERVALS = 10
# Rounds in a row that miss an instance its own looks show in a listed status, before the listing is
# taken to be incomplete.
MISSES_FOR_FALLBACK = 3
# A round that failed is tried again after 1, 2, 4, ... intervals, at most this long (meanwhile every
# watcher looks on its own).
MAX_LISTING_PAUSE_SECONDS = 300.0
# How long after a change a listing must show it (this machine's clock against Cloudflare's, and the
# time a change may take to reach listings), see instance_changes.listing_is_behind.
STALE_MARGIN = LIST_MARGIN
# Watchers handled between two yields to the event loop while a round's news is handed out.
WATCHERS_PER_STEP = 500


class ListerKey(NamedTuple):
    """What a lister lists: one Workflow, through one connection and account."""

    cloudflare_conn_id: str
    account_id: str | None
    workflow_name: str


@dataclass(frozen=True)
class ListingRound:
    """
    One round: every page of every open status.

    :param started_at: ``time.monotonic()`` when its first page was asked for.
    :param started_wall: the same moment on this machine's clock (compared with Cloudflare's times).
    :param instances: the instances listed, by id (classified by the status each item shows).
    :param pages: the requests it took.
    """

    started_at: float
    started_wall: datetime
    instances: Mapping[str, ListedInstance]
    pages: int


class WorkflowLister:
    """
    Lists one Workflow's open instances for the watchers of its instances (see the module docstring).

    :param key: the Workflow, connection and account.
    :param hooks: the event loop's shared hooks (the lister uses the connection's hook and queue).
    :param untrusted: the keys whose listings proved wrong in this event loop (shared by its listers).
    """

    def __init__(self, key: ListerKey, hooks: SharedHooks, *, untrusted: set[ListerKey]) -> None:
        self.key = key
        self.watchers: dict[str, InstanceWatcher] = {}
        self.task: asyncio.Task[None] | None = None
        self.last_round: ListingRound | None = None
        self._hooks = hooks
        self._untrusted = untrusted
        self._active = False  # its rounds vouch for the watchers
        self._dearer_at = 0  # watchers when listing last proved dearer (tried again at twice as many)
        self._expected: dict[str, float] = {}  # instance id -> when a look saw it in a listed status
        self._missing: set[str] = set()  # gone from the last round although expected there
        self._misses: dict[str, int] = {}  # such rounds in a row, each confirmed by a look
        self._changes: dict[str, datetime] = {}  # instance id -> the last change its look showed

    # --- watchers ----------------------------------------------------------------------------------

    def add(self, watcher: InstanceWatcher) -> None:
        """A watcher of one of the Workflow's instances (vouched for at once while listing is active)."""
        self.watchers[watcher.key.instance_id] = watcher
        if self._active:
            watcher.attach(self)
        if (
            self.task is None
            and self.key not in self._untrusted
            and len(self.watchers) >= max(LISTING_MIN_WATCHERS, 2 * self._dearer_at)
        ):
            # A fresh context: the lister serves every watcher, not the trigger that happened to start it.
            self.task = asyncio.get_running_loop().create_task(
                self._run(),
                name=f"cloudflare-workflows-list:{self.key.workflow_name}",
                context=contextvars.Context(),
            )

    def remove(self, watcher: InstanceWatcher) -> bool:
        """The watcher stopped; True when it was the last (the lister is then stopped too)."""
        if self.watchers.get(watcher.key.instance_id) is watcher:
            del self.watchers[watcher.key.instance_id]
            self._expected.pop(watcher.key.instance_id, None)
            self._missing.discard(watcher.key.instance_id)
            self._misses.pop(watcher.key.instance_id, None)
        if self.watchers:
            return False
        if self.task is not None:
            self.task.cancel()
        return True

    def reference(self, watcher: InstanceWatcher) -> tuple[Any, ...] | None:
        """How the last round showed the watcher's instance (see ``watch_fingerprint``), for its look now."""
        listed = None if self.last_round is None else self.last_round.instances.get(watcher.key.instance_id)
        return None if listed is None else watch_fingerprint(listed, steps=watcher.needs_steps)

    def looked(self, watcher: InstanceWatcher, details: Mapping[str, Any]) -> None:
        """A watcher made its own look: what it saw checks the listings."""
        instance_id = watcher.key.instance_id
        listed_status = status_of(details) in OPEN_LISTED_STATUSES
        if instance_id in self._missing:
            self._missing.discard(instance_id)
            if listed_status:
                misses = self._misses[instance_id] = self._misses.get(instance_id, 0) + 1
                if misses >= MISSES_FOR_FALLBACK:
                    self._fall_back(
                        f"instance {instance_id!r} was missing from {misses} listings in a row while its own "
                        f"looks showed it {status_of(details)}"
                    )
                    return
            else:
                self._misses.pop(instance_id, None)
        if listed_status:
            self._expected[instance_id] = time.monotonic()
        else:
            self._expected.pop(instance_id, None)
        if (change := last_change(details)) is not None:
            self._changes[instance_id] = change

    # --- rounds ------------------------------------------------------------------------------------

    def _deadline(self) -> float:
        """The latest deadline among the watchers' subscribers: nobody needs a listing after it."""
        return max(
            (s.deadline for watcher in self.watchers.values() for s in watcher.subscribers),
            default=time.time(),
        )

    async def _run(self) -> None:
        failures = 0
        next_round_at = time.monotonic()
        try:
            while self.watchers:
                await asyncio.sleep(max(0.0, next_round_at - time.monotonic()))
                if not self.watchers:
                    return
                self._active = True
                for watcher in list(self.watchers.values()):
                    watcher.attach(self)
                interval = min(watcher.interval for watcher in self.watchers.values())
                try:
                    listing = await self._list_round(interval)
                except (CloudflareWorkflowsError, AirflowException) as error:
                    failures += 1
                    pause = min(interval * 2 ** (failures - 1), max(interval, MAX_LISTING_PAUSE_SECONDS))
                    log.warning(
                        "Listing the instances of workflow %r failed (%d in a row): its %d watched instances "
                        "are looked at one by one until it works again, tried in %.0f s: %s",
                        self.key.workflow_name,
                        failures,
                        len(self.watchers),
                        pause,
                        error,
                    )
                    self._detach_all()
                    next_round_at = time.monotonic() + pause
                    continue
                if listing is None:
                    return
                failures = 0
                ended = time.monotonic()
                await self._hand_out(listing)
                if not self._active:  # fell back
                    return
                # At most half the time goes to listing: looks get theirs between rounds.
                next_round_at = max(listing.started_at + interval, ended + (ended - listing.started_at))
        finally:
            self._detach_all()
            self.task = None

    async def _list_round(self, interval: float) -> ListingRound | None:
        """Every page of every open status; None when it needs more pages than listing is worth."""
        shared = self._hooks.acquire(self.key.cloudflare_conn_id)
        started_at, started_wall = time.monotonic(), datetime.now(UTC)
        pages = 0
        instances: dict[str, ListedInstance] = {}
        try:
            with calls_end_by(self._deadline()):
                async with shared.turns.listing():
                    for status in OPEN_LISTED_STATUSES:
                        listing = shared.hook.alist_instance_pages(
                            self.key.workflow_name,
                            status=status.value,
                            per_page=LIST_PAGE_SIZE,
                            account_id=self.key.account_id,
                        )
                        try:
                            while True:
                                if not self._worth(pages + 1):
                                    self._dearer(pages + 1)
                                    return None
                                async with shared.turns.turn(last_look_at=started_at, rank=Rank.LISTING):
                                    now = time.monotonic()
                                    shared.turns.note_turn(now, now, interval, shared.users)
                                    page = await anext(listing, None)
                                if page is None:
                                    break
                                pages += 1
                                for item in page:
                                    if (instance := ListedInstance.from_item(item)) is not None:
                                        instances[instance.id] = instance
                        finally:
                            await listing.aclose()
        except CloudflareWorkflowsAuthError:
            self._hooks.retire(shared)
            raise
        finally:
            self._hooks.release(shared)
        return ListingRound(started_at, started_wall, instances, pages)

    def _worth(self, pages: int) -> bool:
        """Whether a round of ``pages`` pages is cheaper than the watchers' own looks."""
        watchers = len(self.watchers)
        return pages <= (watchers if self.last_round is not None else watchers // 2)

    def _dearer(self, pages: int) -> None:
        self._dearer_at = len(self.watchers)
        log.info(
            "Listing workflow %r needs %d pages or more per round, not fewer than its %d watched instances "
            "need looks: they are looked at one by one (listing is tried again at twice as many).",
            self.key.workflow_name,
            pages,
            len(self.watchers),
        )
        self.last_round = None
        self._detach_all()

    async def _hand_out(self, listing: ListingRound) -> None:
        """Check the round against what the watchers' looks saw, then tell each watcher its news."""
        for instance_id, change in list(self._changes.items()):
            if listing.started_wall <= change + STALE_MARGIN:
                continue
            del self._changes[instance_id]
            listed = listing.instances.get(instance_id)
            if listing_is_behind(listed, change, listing.started_wall, STALE_MARGIN):
                assert listed is not None  # for mypy: listing_is_behind says so
                self._fall_back(
                    f"a listing made at {listing.started_wall:%H:%M:%S} UTC showed instance "
                    f"{instance_id!r} as last modified at {listed.modified_on}, before a change its own "
                    f"look showed: {change}"
                )
                return
        if self.last_round is None:
            log.info(
                "Watching %d instances of workflow %r through connection %r: a listing of its open instances "
                "(%d pages per round) replaces a look at each; each is still looked at directly at least "
                "every %d intervals, budget permitting.",
                len(self.watchers),
                self.key.workflow_name,
                self.key.cloudflare_conn_id,
                listing.pages,
                SAFETY_NET_INTERVALS,
            )
        previous = self.last_round
        self.last_round = listing
        for number, (instance_id, watcher) in enumerate(list(self.watchers.items()), start=1):
            listed = listing.instances.get(instance_id)
            expected_at = self._expected.get(instance_id, math.inf)
            was_listed = previous is not None and instance_id in previous.instances
            if listed is not None:
                self._misses.pop(instance_id, None)
                self._missing.discard(instance_id)
            elif was_listed or expected_at < listing.started_at:
                self._missing.add(instance_id)
            watcher.on_listing(listed, listing)
            if number % WATCHERS_PER_STEP == 0:
                await asyncio.sleep(0)
                if not self._active:
                    return

    def _fall_back(self, proof: str) -> None:
        """The listing proved wrong: per-instance looks for this Workflow while the event loop runs."""
        self._untrusted.add(self.key)
        log.warning(
            "Listing the instances of workflow %r cannot be trusted: %s. From now on each of its instances "
            "watched through connection %r is looked at directly (one request per instance per interval, "
            "in turn). Please report this with the output of scripts/live-check.sh.",
            self.key.workflow_name,
            proof,
            self.key.cloudflare_conn_id,
        )
        self._detach_all()
        if self.task is not None and self.task is not asyncio.current_task():
            self.task.cancel()

    def _detach_all(self) -> None:
        self._active = False
        for watcher in self.watchers.values():
            watcher.attach(None)
