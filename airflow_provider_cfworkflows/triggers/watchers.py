"""Watchers: shared looks at Workflow instances for all the triggers of one triggerer event loop.

Every trigger that waits on the same (connection, account, workflow, instance) subscribes to one
:class:`InstanceWatcher`, which reads the instance details once per interval (the shortest among its
subscribers) and hands each look, or the error it got, to all of them. A trigger decides on each look
with the pure checks of :mod:`~airflow_provider_cfworkflows.checks` and makes its own call only where
the details cannot answer (``/step`` for an entry they cannot read).

Requests per interval, per instance: one, however many triggers watch it (full details when any of
them waits for a step, ``simple=true`` when all wait for the instance). So 1,000 step waits over 100
instances at 60 s cost 100 requests a minute, inside Cloudflare's 240 a minute (1,200 per 5 minutes,
shared with the dashboard). Beyond what the budget pays for, the watchers of a connection take their
looks in turn (:mod:`.turns`): the one whose last look is oldest goes next, a few at a time. A watcher
is no task of its own: the connection's :class:`.turns.Alarms` wake it when a look is due, its queue
gives it a turn, and only a look in flight runs as a task (a task, its timer and events per watcher
would make each idle watcher a few dozen objects for the garbage collector to walk).

Many watched instances of one Workflow (:data:`.listers.LISTING_MIN_WATCHERS` or more) are listed
instead, page by page (:mod:`.listers`): a watcher then makes its own look only when the listing shows
its instance changed or gone from the open ones, when it never looked (a step wait), or when the safety
net says so; an instance wait may be answered by the listing alone while its status is one it does not
wait for.

The registry lives per event loop (the triggerer runs one; tests may run several): a watcher is made by
its first subscriber and stopped when the last one leaves (finished, failed, timed out or cancelled),
so the registry is then empty. The watchers of one connection share one hook (one httpx client and
its connection pool), closed when the last of them stops: a client per watcher costs 50-130 ms of CPU
(httpx loads the CA bundle into a new SSL context), which would block the loop. A hook that meets an
authentication error is retired (the next watcher reads the connection afresh, so a rotated token is
picked up).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import random
import time
import weakref
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, NamedTuple

from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsRateLimitError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_changes import ListedInstance, watch_fingerprint
from airflow_provider_cfworkflows.looks import aget_instance_details
from airflow_provider_cfworkflows.triggers.listers import (
    SAFETY_NET_INTERVALS,
    ListerKey,
    ListingRound,
    WorkflowLister,
)
from airflow_provider_cfworkflows.triggers.turns import Alarms, LookTurns, Rank

log = logging.getLogger(__name__)

# Waits after a transient error: the poll interval (at least the minimum) doubled per failure in a
# row, capped, minus up to 25 % jitter; a longer Retry-After wins (plus up to 10 % jitter), so the
# watchers of one process do not all look again in the same instant.
MIN_ERROR_BACKOFF_SECONDS = 1.0
MAX_ERROR_BACKOFF_SECONDS = 300.0
BACKOFF_JITTER_FRACTION = 0.25
RETRY_AFTER_JITTER_FRACTION = 0.1


class WatchKey(NamedTuple):
    """What a watcher looks at: one instance, through one connection and account."""

    cloudflare_conn_id: str
    account_id: str | None
    workflow_name: str
    instance_id: str


@dataclass(frozen=True)
class Look:
    """
    One look at an instance: its details, or the error that came instead.

    :param number: increases by one per look of the watcher (subscribers use it to skip repeats).
    :param taken_at: ``time.monotonic()`` when the look ended.
    :param full: whether the details list the steps (``simple=false``).
    :param details: the instance details, or None with ``error``.
    :param error: why there are no details (the trigger decides what it means).
    :param failures: transient errors in a row, this one included (0 for a usable look).
    :param retry_in: seconds until the watcher looks again after a transient error.
    :param listed: the details are only ``{"status"}``, from a listing of the Workflow's instances
        (given only to subscribers that do not wait for that status, see :class:`Subscription`).
    """

    number: int
    taken_at: float
    full: bool
    details: dict[str, Any] | None = None
    error: BaseException | None = None
    failures: int = 0
    retry_in: float = 0.0
    listed: bool = False


def error_delay(
    failures: int, error: BaseException, poll_interval: float, jitter: float | None = None
) -> float:
    """
    Seconds until the next look after ``failures`` transient errors in a row (see the constants).

    :param jitter: a number in [0, 1) (default: random).
    """
    fraction = random.random() if jitter is None else jitter
    base = max(poll_interval, MIN_ERROR_BACKOFF_SECONDS)
    delay = min(base * 2 ** (failures - 1), MAX_ERROR_BACKOFF_SECONDS) * (
        1 - BACKOFF_JITTER_FRACTION * fraction
    )
    if isinstance(error, CloudflareWorkflowsRateLimitError) and error.retry_after:
        waited = min(error.retry_after, MAX_ERROR_BACKOFF_SECONDS) * (
            1 + RETRY_AFTER_JITTER_FRACTION * fraction
        )
        delay = max(delay, waited)
    return delay


@dataclass(kw_only=True, eq=False)
class Subscription:
    """
    One trigger's place at a watcher; leaving the ``with`` block of :func:`watch`, by any way,
    unsubscribes (the last subscriber to leave stops the watcher and removes it). Its wait for a look
    ends by its deadline, with an alarm of the connection's :class:`.turns.Alarms` (not a timer each).

    :param watcher: the watcher.
    :param poll_interval: the trigger's seconds between looks.
    :param full: whether the trigger needs the steps (a step wait).
    :param deadline: the trigger's wall-clock end (``time.time()`` seconds).
    :param awaited: the instance statuses that end the wait (those a listing's status alone cannot
        answer); None when any look may end it (the listing then never answers for the trigger).
    """

    watcher: InstanceWatcher
    poll_interval: float
    full: bool
    deadline: float
    awaited: frozenset[str] | None = None
    _seen: int = field(default=0, init=False)
    _waiter: asyncio.Future[None] | None = field(default=None, init=False)
    _ends_at: float = field(default=0.0, init=False)  # the deadline, as time.monotonic()
    alarm_order: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._ends_at = time.monotonic() + self.deadline - time.time()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _leave(self)

    @property
    def hook(self) -> CloudflareWorkflowsHook:
        """The watcher's hook, for the trigger's own calls (``/step``)."""
        return self.watcher.hook

    def wants(self, look: Look | None) -> bool:
        """Whether ``look`` is new to this subscriber and has what it needs."""
        if look is None or look.number <= self._seen or (self.full and not look.full):
            return False
        return not look.listed or (look.details is not None and self.takes_listed(look.details["status"]))

    def takes_listed(self, status: str) -> bool:
        """Whether a listing's ``status`` alone answers this subscriber (it does not end its wait)."""
        return not self.full and self.awaited is not None and status not in self.awaited

    def notify(self) -> None:
        """A new look (or error) is there."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_alarm(self) -> None:
        """The deadline came (:class:`.turns.Alarms`)."""
        self.notify()

    async def next_look(self) -> Look | None:
        """The next look this subscriber has not seen (at once if there is one); None at the deadline."""
        while not self.wants(self.watcher.latest):
            if time.monotonic() >= self._ends_at:
                return None
            if self.alarm_order is None:
                self.watcher.alarms.set(self, self._ends_at)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        look = self.watcher.latest
        assert look is not None  # for mypy: wants() said so
        self._seen = look.number
        return look


class InstanceWatcher:
    """
    Looks at one instance for all its subscribers (see the module docstring).

    :param key: the instance, connection and account.
    :param hooks: the hooks of this event loop, one per connection.
    """

    def __init__(self, key: WatchKey, hooks: SharedHooks) -> None:
        self.key = key
        self._hooks = hooks
        self._shared = hooks.acquire(key.cloudflare_conn_id)
        self.hook = self._shared.hook
        self.alarms = self._shared.alarms
        self.subscribers: list[Subscription] = []
        self.latest: Look | None = None
        self.looks = 0
        self.stopped = False
        self._failures = 0
        self._retry_at = 0.0
        self._look_now = False
        self._wanted_at = time.monotonic()  # when a look was first wanted (no look yet, or a stale one)
        # Where it is between looks (see .turns): an alarm set for when the next look is due, or a place in
        # the connection's queue (with the rank and due time it queued with), or a look in flight.
        self.alarm_order: int | None = None
        self.turn_order: int | None = None
        self._queued_rank = Rank.LOOK
        self._queued_due_at = 0.0
        self._looking: asyncio.Task[None] | None = None
        # While a lister vouches for this instance (see .listers):
        self.lister: WorkflowLister | None = None
        self._direct_at = self._wanted_at  # the last look of its own (the safety net counts from it)
        self._vouched_at = -math.inf  # the start of the last listing that showed nothing new
        self._reference: tuple[Any, ...] | None = None  # how listings showed it before its last look
        self._first_seen: tuple[Any, ...] | None = None  # ... before its first look (a step wait)

    # --- subscribers ---------------------------------------------------------------------------------

    def subscribe(
        self, *, poll_interval: float, full: bool, deadline: float, awaited: frozenset[str] | None = None
    ) -> Subscription:
        """Add a subscriber; it gets the latest look at once if that is fresher than its interval."""
        subscription = Subscription(
            watcher=self, poll_interval=poll_interval, full=full, deadline=deadline, awaited=awaited
        )
        latest = self.latest
        fresh = (
            latest is not None and time.monotonic() - max(latest.taken_at, self._vouched_at) <= poll_interval
        )
        if latest is not None and not (fresh and subscription.wants(latest)):
            subscription._seen = latest.number  # stale for it: wait for the next look...
            if not self._look_now:  # ...which comes now (unless a transient error holds the watcher back)
                self._look_now, self._wanted_at = True, time.monotonic()
        self.subscribers.append(subscription)
        self._schedule()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscriber (the registry stops the watcher when none is left)."""
        if subscription in self.subscribers:
            self.subscribers.remove(subscription)
        self.alarms.cancel(subscription)
        self._schedule()

    def stop(self) -> None:
        """Stop looking (a look in flight is cancelled); the hook is released once no look is in flight."""
        if self.stopped:
            return
        self.stopped = True
        self.alarms.cancel(self)
        self.turn_order = None  # its place in the queue, if any, is skipped
        if self._looking is None:
            self._hooks.release(self._shared)
        else:
            self._looking.cancel()  # the look releases the hook as it ends

    # --- when to look --------------------------------------------------------------------------------

    @property
    def needs_steps(self) -> bool:
        """Whether a subscriber needs the step log (a step wait)."""
        return any(subscription.full for subscription in self.subscribers)

    @property
    def interval(self) -> float:
        """The shortest poll interval among the subscribers."""
        return min((s.poll_interval for s in self.subscribers), default=MAX_ERROR_BACKOFF_SECONDS)

    def _next_look_at(self) -> float:
        """``time.monotonic()`` of the next look."""
        if self._look_now or (self.latest is None and (self.lister is None or self.needs_steps)):
            due = self._wanted_at
        elif self.lister is not None:  # the listing tells when to look; the safety net looks anyway
            due = self._direct_at + SAFETY_NET_INTERVALS * self.interval
        else:
            assert self.latest is not None  # for mypy: the first branch takes a watcher without looks
            due = max(self.latest.taken_at, self._vouched_at) + self.interval
        return max(due, self._retry_at)

    def _rank(self) -> Rank:
        """How urgent the next look is (see :class:`.turns.Rank`)."""
        if self._look_now or self.lister is None:
            return Rank.LOOK
        return Rank.FIRST_LOOK if self.latest is None else Rank.SAFETY_NET

    def _schedule(self) -> None:
        """
        After anything that may move the next look: queue for a turn if it is due (again, if it now has a
        better rank: moved up, keeping its age), else set the alarm for when it is. A watcher queued for a
        look no longer due keeps its place: :meth:`take_turn` finds it not wanted.
        """
        if self.stopped or self._looking is not None:
            return  # a look in flight schedules the next one as it ends
        alarms = self.alarms
        if not self.subscribers:
            alarms.cancel(self)
            return
        due_at = self._next_look_at()
        if due_at > time.monotonic():
            if self.turn_order is None:
                alarms.set(self, due_at)
            return
        alarms.cancel(self)
        rank = self._rank()
        if self.turn_order is None or rank < self._queued_rank:
            self._queued_rank, self._queued_due_at = rank, due_at
            last_look_at = -math.inf if self.latest is None else self.latest.taken_at
            self._shared.turns.enqueue(self, rank=rank, last_look_at=last_look_at)

    def on_alarm(self) -> None:
        """The next look may be due (:class:`.turns.Alarms`)."""
        self._schedule()

    def take_turn(self) -> bool:
        """The queue's turn came (:class:`.turns.LookTurns`): look, if a look is still wanted."""
        if self.stopped:
            return False
        if not (self.subscribers and self._next_look_at() <= time.monotonic()):
            # All subscribers left (the watcher is being stopped), or a listing made the look needless
            # while it waited for its turn.
            self._schedule()
            return False
        interval = self.interval * (SAFETY_NET_INTERVALS if self._queued_rank is Rank.SAFETY_NET else 1)
        shared, vouched = self._shared, self.lister is not None
        shared.turns.note_turn(time.monotonic(), self._queued_due_at, interval, shared.users, vouched=vouched)
        self._look_now = False
        # A fresh context: the look must not inherit the deadline (or log context) of whichever trigger
        # or look led to this turn; it serves all the subscribers.
        looking = self._looking = asyncio.get_running_loop().create_task(
            self._look_in_turn(),
            name=f"cloudflare-workflows-look:{self.key.workflow_name}/{self.key.instance_id}",
            context=contextvars.Context(),
        )
        # A done callback, not a finally: a task cancelled before it started never runs its coroutine.
        looking.add_done_callback(self._look_ended)
        return True

    # --- a look --------------------------------------------------------------------------------------

    async def _look_in_turn(self) -> None:
        reference = None if self.lister is None else self.lister.reference(self)
        look = await self._look()
        self._publish(look)
        if look.details is not None:
            self._direct_at, self._reference = look.taken_at, reference
            if self.lister is not None:
                self.lister.looked(self, look.details)

    def _look_ended(self, looking: asyncio.Task[None]) -> None:
        """The look's task ended (or was cancelled, perhaps before it started): the turn goes on."""
        self._looking = None
        self._shared.turns.release()
        if not looking.cancelled() and (error := looking.exception()) is not None:
            key = self.key
            log.error(
                "Looking at instance %r of %r failed", key.instance_id, key.workflow_name, exc_info=error
            )
        if self.stopped:
            self._hooks.release(self._shared)
        else:
            self._schedule()

    async def _look(self) -> Look:
        full = self.needs_steps
        # Bounded by the latest deadline among the subscribers: nobody needs an answer after it.
        deadline = max(subscription.deadline for subscription in self.subscribers)
        key = self.key
        self.looks += 1
        try:
            with calls_end_by(deadline):
                details = await aget_instance_details(
                    self.hook, key.workflow_name, key.instance_id, simple=not full, account_id=key.account_id
                )
        except Exception as error:  # handed to the subscribers, which decide (as their own call would)
            return self._error_look(error, full)
        self._failures = 0
        return Look(self.looks, time.monotonic(), full, details=details)

    def _error_look(self, error: Exception, full: bool) -> Look:
        if isinstance(error, CloudflareWorkflowsAuthError):
            self._hooks.retire(self._shared)
        if not (isinstance(error, CloudflareWorkflowsError) and error.is_transient):
            return Look(self.looks, time.monotonic(), full, error=error)
        self._failures += 1
        interval = min((s.poll_interval for s in self.subscribers), default=MIN_ERROR_BACKOFF_SECONDS)
        retry_in = error_delay(self._failures, error, interval)
        self._retry_at = time.monotonic() + retry_in
        return Look(
            self.looks, time.monotonic(), full, error=error, failures=self._failures, retry_in=retry_in
        )

    def _publish(self, look: Look) -> None:
        self.latest = look
        for subscription in self.subscribers:
            subscription.notify()

    # --- what a listing of the Workflow says (called by its lister) --------------------------------

    def want_look(self) -> None:
        """Look as soon as a turn allows (ahead of looks only the safety net or a first look asks for)."""
        if not self._look_now:
            self._look_now, self._wanted_at = True, time.monotonic()
        self._schedule()

    def attach(self, lister: WorkflowLister | None) -> None:
        """Let ``lister`` vouch for this instance, or (None) look on its own again."""
        if lister is self.lister:
            return
        self.lister = lister
        self._schedule()  # without a lister, a look waiting at a low rank is an ordinary one now

    def on_listing(self, listed: ListedInstance | None, listing: ListingRound) -> None:
        """
        A listing round of the Workflow showed this instance as ``listed`` (None: not among the open
        instances): look now if that may change a subscriber's verdict, else count the listing as a look.
        """
        if self._look_now or not self.subscribers:
            return
        full = self.needs_steps
        if listed is None or listed.is_terminal:
            self.want_look()
            return
        fingerprint = watch_fingerprint(listed, steps=full)
        if self.latest is None and full:  # its first look is on its way; a change moves it up
            seen, self._first_seen = self._first_seen, fingerprint
            if fingerprint is None or (seen is not None and seen != fingerprint):
                self.want_look()
            return
        if fingerprint is not None and fingerprint == self._reference:
            self._vouched_at = listing.started_at
            return
        if all(subscription.takes_listed(listed.status) for subscription in self.subscribers):
            self._reference, self._vouched_at = fingerprint, listing.started_at
            latest = self.latest
            if latest is None or latest.details is None or latest.details.get("status") != listed.status:
                self.looks += 1
                details = {"status": listed.status}
                self._publish(Look(self.looks, time.monotonic(), False, details, listed=True))
            return
        self.want_look()


@dataclass
class _SharedHook:
    cloudflare_conn_id: str
    hook: CloudflareWorkflowsHook
    turns: LookTurns
    alarms: Alarms = field(default_factory=Alarms)
    users: int = 0


class SharedHooks:
    """The hooks of one event loop's watchers, one per connection, each closed after its last user."""

    def __init__(self) -> None:
        self.by_connection: dict[str, _SharedHook] = {}
        self._closing: set[asyncio.Task[None]] = set()  # hooks being closed (kept until done)

    def acquire(self, cloudflare_conn_id: str) -> _SharedHook:
        """The connection's hook (made if there is none), counted as used once more."""
        shared = self.by_connection.get(cloudflare_conn_id)
        if shared is None:
            hook = CloudflareWorkflowsHook(cloudflare_conn_id)
            shared = _SharedHook(cloudflare_conn_id, hook, LookTurns(label=cloudflare_conn_id))
            self.by_connection[cloudflare_conn_id] = shared
        shared.users += 1
        return shared

    def retire(self, shared: _SharedHook) -> None:
        """Give no more watchers this hook (its current users keep it until they stop)."""
        if self.by_connection.get(shared.cloudflare_conn_id) is shared:
            del self.by_connection[shared.cloudflare_conn_id]

    def release(self, shared: _SharedHook) -> None:
        """One user less; the last one closes the hook (in a task of its own)."""
        shared.users -= 1
        if shared.users == 0:
            self.retire(shared)
            closing = asyncio.get_running_loop().create_task(
                shared.hook.aclose(), name=f"cloudflare-workflows-close:{shared.cloudflare_conn_id}"
            )
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)


@dataclass
class _LoopRegistry:
    watchers: dict[WatchKey, InstanceWatcher] = field(default_factory=dict)
    hooks: SharedHooks = field(default_factory=SharedHooks)
    listers: dict[ListerKey, WorkflowLister] = field(default_factory=dict)
    untrusted: set[ListerKey] = field(default_factory=set)  # listings proved wrong: never listed again


_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopRegistry] = weakref.WeakKeyDictionary()


def _registry() -> _LoopRegistry:
    return _registries.setdefault(asyncio.get_running_loop(), _LoopRegistry())


def watchers() -> dict[WatchKey, InstanceWatcher]:
    """The watchers of the running event loop (empty when no trigger watches anything)."""
    return _registry().watchers


def listers() -> dict[ListerKey, WorkflowLister]:
    """The listers of the running event loop (empty when no trigger watches anything)."""
    return _registry().listers


def shared_hooks() -> dict[str, CloudflareWorkflowsHook]:
    """The open hooks of the running event loop's watchers, by connection id (empty once they stopped)."""
    return {conn_id: shared.hook for conn_id, shared in _registry().hooks.by_connection.items()}


def watch(
    key: WatchKey,
    *,
    poll_interval: float,
    full: bool,
    deadline: float,
    awaited: frozenset[str] | None = None,
) -> Subscription:
    """
    Subscribe to the watcher of ``key`` (made if there is none), for a ``with`` block: leaving it, by
    any way, unsubscribes, and the last subscriber to leave stops the watcher and removes it.

    :param poll_interval: the subscriber's seconds between looks.
    :param full: whether it needs the steps.
    :param deadline: its wall-clock end (``time.time()`` seconds).
    :param awaited: the instance statuses that end its wait (see :class:`Subscription`).
    """
    registry = _registry()
    watcher = registry.watchers.get(key)
    lister_key = _lister_key(key)
    if watcher is None or watcher.stopped:
        watcher = registry.watchers[key] = InstanceWatcher(key, registry.hooks)
        lister = registry.listers.get(lister_key)
        if lister is None:
            lister = registry.listers[lister_key] = WorkflowLister(
                lister_key, registry.hooks, untrusted=registry.untrusted
            )
        lister.add(watcher)
    return watcher.subscribe(poll_interval=poll_interval, full=full, deadline=deadline, awaited=awaited)


def _lister_key(key: WatchKey) -> ListerKey:
    """The listing that may vouch for the instance of ``key``: its Workflow's, same connection and account."""
    return ListerKey(key.cloudflare_conn_id, key.account_id, key.workflow_name)


def _leave(subscription: Subscription) -> None:
    """The end of :func:`watch`'s block."""
    watcher = subscription.watcher
    watcher.unsubscribe(subscription)
    if watcher.subscribers:
        return
    registry = _registry()
    key = watcher.key
    if registry.watchers.get(key) is watcher:
        del registry.watchers[key]
    watcher.stop()
    lister_key = _lister_key(key)
    lister = registry.listers.get(lister_key)
    if lister is not None and lister.remove(watcher) and registry.listers.get(lister_key) is lister:
        del registry.listers[lister_key]
