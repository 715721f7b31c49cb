"""Which instances of a Workflow finished since a moment: found with list pages, not one GET per instance.

The finished-instances trigger (:mod:`.triggers.finished_instances`) uses this; it is written so that
anything else needing "what changed in this Workflow since X" can too.

How a look finds the instances that finished (see ``docs/event-driven.md`` for the arithmetic):

1. **The open set**: list each of :data:`OPEN_LISTED_STATUSES` (``status=`` filter, every page). Items are
   classified by the status they carry, not by the filter asked for, so a server that ignored the
   filter would cost pages but never mislead.
2. **New instances**: list every instance created since the previous look (``date_start`` = previous
   look's start minus :data:`LIST_MARGIN`). Relies on ``date_start`` selecting on ``created_on``
   (:data:`DATE_FILTER_FIELD`, inferred: Cloudflare does not document it). Checked on every look: an
   instance the open listings show with ``created_on`` inside the window but the new listing lacks proves
   the assumption wrong, and the tracker falls back, for good, to listing without a date filter (correct,
   but its cost grows with the Workflow's history; it says so in the log).
3. **Disappeared**: an instance of the previous open set that none of this look's listings show as open
   has finished (or is in a status not listed, or was deleted): one ``GET`` of it decides.

The first look of a tracker that resumes from a :class:`Memory` catches up instead: it lists each wanted
status with ``date_start`` at the creation of the oldest instance that was open when the memory was
written, so what finished while nothing looked is found without paging through older history.

Nothing here depends on the order of a listing (undocumented) or on ``direction`` (documented only
together with a cursor): every listing is read to its last page.

The same listings tell the triggerer's waits on many instances of one Workflow which of them changed
since their last look (:mod:`.triggers.listers`); the rules for that are the functions after
:func:`oldest_creation` (:func:`watch_fingerprint`, :func:`last_change`, :func:`listing_is_behind`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsNotFoundError
from airflow_provider_cfworkflows.instance_details import status_of
from airflow_provider_cfworkflows.statuses import TERMINAL_INSTANCE_STATUSES, InstanceStatus

if TYPE_CHECKING:
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

# The open statuses listed on each look. `waitingForPause` and `rollingBack` are passing states: an
# instance in one of them is found by the GET of the "disappeared" step instead of a listing per look.
OPEN_LISTED_STATUSES = (
    InstanceStatus.QUEUED,
    InstanceStatus.RUNNING,
    InstanceStatus.WAITING,
    InstanceStatus.PAUSED,
)
# The API's largest page (`per_page` 1-100).
LIST_PAGE_SIZE = 100
# Inferred, not documented by Cloudflare: the list's `date_start` / `date_end` select on `created_on`.
# The emulator does the same (its `list_date_field` option models the other readings); the live check
# (`scripts/live-check.sh`, rows "date filter field") settles it on a real account. If it is wrong, the
# tracker notices (step 2 above) and stops using the filter.
DATE_FILTER_FIELD = "created_on"
# Added before every date bound and to every "after the watermark" comparison: the clock of this
# machine against Cloudflare's, and the time a new instance may take to show in listings.
LIST_MARGIN = timedelta(seconds=60)
# Memory layout version (see Memory.to_json).
MEMORY_VERSION = 1
# Inferred, not documented by Cloudflare: a listed instance's `modified_on` moves whenever one of its
# steps ends (not only when its status changes), so an unchanged `modified_on` means an unchanged step
# log. The emulator does so; the live check's "modified_on" row shows what production gives, and
# :func:`listing_is_behind` notices at run time when it is wrong. False: step waits never rely on it.
MODIFIED_ON_COVERS_STEPS = True
# Timestamps of a listing and of the instance details may be rounded differently.
TIMESTAMP_TOLERANCE = timedelta(seconds=1)

log = logging.getLogger(__name__)


def parse_time(value: Any) -> datetime | None:
    """An API timestamp (ISO 8601; ``Z`` or an offset; none means UTC) as an aware datetime, else None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_time(moment: datetime | None) -> str | None:
    """``2026-11-02T10:00:00.123Z`` (UTC, milliseconds), or None."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class ListedInstance:
    """
    One instance as a listing (or a GET) showed it.

    :param id: the instance id.
    :param status: its status then.
    :param created_on: when it was created (None if the item had no readable time).
    :param ended_on: when it ended (None while it runs).
    :param modified_on: when it last changed (None if the item had no readable time; see
        :data:`MODIFIED_ON_COVERS_STEPS`).
    """

    id: str
    status: str
    created_on: datetime | None = None
    ended_on: datetime | None = None
    modified_on: datetime | None = None

    @classmethod
    def from_item(cls, item: Any) -> ListedInstance | None:
        """An item of ``GET .../instances``; None when it has no id or status."""
        if not isinstance(item, Mapping):
            return None
        instance_id, status = item.get("id"), item.get("status")
        if not isinstance(instance_id, str) or not isinstance(status, str):
            return None
        return cls(
            instance_id,
            status,
            parse_time(item.get("created_on")),
            parse_time(item.get("ended_on")),
            parse_time(item.get("modified_on")),
        )

    @property
    def is_terminal(self) -> bool:
        """Whether the status is final (``complete``, ``errored``, ``terminated``)."""
        return self.status in TERMINAL_INSTANCE_STATUSES


@dataclass(frozen=True)
class FinishedInstance:
    """
    An instance found in one of the wanted statuses, to report.

    :param instance: as listed (or as the GET that found it showed it).
    :param details: the instance details, when the look already read them (else None).
    """

    instance: ListedInstance
    details: Mapping[str, Any] | None = None

    @property
    def ended_key(self) -> str:
        """How :attr:`Memory.reported` remembers this finish (a restarted instance finishes anew)."""
        return format_time(self.instance.ended_on) or ""


@dataclass(frozen=True)
class Memory:
    """
    What a tracker needs to resume after its process is gone (JSON: :meth:`to_json`).

    :param started: when watching first started: instances that ended earlier are never reported.
    :param watermark: the start of the last look: what ended before it (less :data:`LIST_MARGIN`) was
        either reported or not wanted.
    :param oldest_open: the creation time of the oldest instance that was open (or found but not yet
        reported) at the last look; the catch-up listings start there. None when there was none.
    :param reported: ``{instance id: ended_on}`` of the instances reported that ended after
        ``watermark - LIST_MARGIN`` (older ones can no longer be listed as new).
    """

    started: datetime
    watermark: datetime
    oldest_open: datetime | None = None
    reported: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The plain JSON value stored in the asset's state store."""
        return {
            "version": MEMORY_VERSION,
            "started": format_time(self.started),
            "watermark": format_time(self.watermark),
            "oldest_open": format_time(self.oldest_open),
            "reported": dict(self.reported),
        }

    @classmethod
    def from_json(cls, value: Any) -> Memory:
        """Read :meth:`to_json`'s value; ValueError says what is wrong with anything else."""
        if not isinstance(value, Mapping) or value.get("version") != MEMORY_VERSION:
            raise ValueError(f"not a version-{MEMORY_VERSION} memory of this trigger: {value!r:.200}")
        started, watermark = parse_time(value.get("started")), parse_time(value.get("watermark"))
        reported = value.get("reported", {})
        if started is None or watermark is None or not isinstance(reported, Mapping):
            raise ValueError(f"'started', 'watermark' or 'reported' is missing or unreadable: {value!r:.200}")
        return cls(
            started=started,
            watermark=watermark,
            oldest_open=parse_time(value.get("oldest_open")),
            reported={str(key): str(ended) for key, ended in reported.items()},
        )

    @property
    def threshold(self) -> datetime:
        """Listed instances that ended at or before this are old news."""
        return max(self.started, self.watermark - LIST_MARGIN)

    def is_reported(self, finished: FinishedInstance) -> bool:
        """Whether this very finish (instance and end time) was reported."""
        return self.reported.get(finished.instance.id) == finished.ended_key


def memory_key(*parts: str | None) -> str:
    """A state-store key naming one watcher configuration (the parts: connection, account, ...)."""
    digest = hashlib.sha256(json.dumps(list(parts)).encode()).hexdigest()[:16]
    return f"cloudflare_workflows.finished_instances.{digest}"


def is_wanted(
    finished: FinishedInstance, statuses: Iterable[str], memory: Memory, *, seen_open: bool = False
) -> bool:
    """
    Whether to report an instance found finished: in a wanted status, not reported already, and ended
    after the threshold (an instance this tracker saw open needs no time test: it ended since).
    """
    instance = finished.instance
    if instance.status not in statuses or memory.is_reported(finished):
        return False
    if seen_open or instance.ended_on is None:
        return True
    return instance.ended_on > memory.threshold


def created_but_not_listed(
    open_now: Mapping[str, ListedInstance], new_ids: Iterable[str], horizon: datetime
) -> list[str]:
    """
    Ids of open instances created at or after ``horizon`` that the listing with ``date_start=horizon``
    (made after the open listings) lacks: proof that ``date_start`` does not select on ``created_on``.
    The margin keeps instances right at the bound out of the comparison.
    """
    listed = set(new_ids)
    return [
        instance.id
        for instance in open_now.values()
        if instance.created_on is not None
        and instance.created_on >= horizon + timedelta(seconds=1)
        and instance.id not in listed
    ]


def oldest_creation(instances: Iterable[ListedInstance]) -> datetime | None:
    """The earliest ``created_on`` among ``instances`` (None if none has one)."""
    return min((i.created_on for i in instances if i.created_on is not None), default=None)


# --- watched instances: which changed since their last look ----------------------------------------


def watch_fingerprint(instance: ListedInstance, *, steps: bool) -> tuple[Any, ...] | None:
    """
    What must differ between two listings of an instance for a wait on it to need a new look.

    A wait for the instance's status needs only its status. A wait for a step needs its step log,
    which a listing does not show: it relies on ``modified_on`` (:data:`MODIFIED_ON_COVERS_STEPS`,
    inferred). None: the listing cannot tell (no readable ``modified_on``), so look.

    :param steps: whether the wait needs the step log.
    """
    if not steps:
        return (instance.status,)
    if not MODIFIED_ON_COVERS_STEPS or instance.modified_on is None:
        return None
    return (instance.status, instance.modified_on)


def _times(entry: Mapping[str, Any], *keys: str) -> list[datetime]:
    return [moment for key in keys if (moment := parse_time(entry.get(key))) is not None]


def last_change(details: Mapping[str, Any]) -> datetime | None:
    """
    The latest moment instance details show a change: the instance queued, started or ended, a step
    started, or a step ended (a ``sleep`` / ``waitForEvent`` entry's ``end`` counts only once it is
    ``finished``: before, it is the planned wake-up). None when the details show no readable time.
    """
    moments = _times(details, "queued", "start", "end")
    for entry in details.get("steps") or []:
        if not isinstance(entry, Mapping):
            continue
        moments += _times(entry, "start")
        if entry.get("finished") is True or entry.get("success") is not None:
            moments += _times(entry, "end")
    return max(moments, default=None)


def listing_is_behind(
    listed: ListedInstance | None, change: datetime, listed_at: datetime, margin: timedelta = LIST_MARGIN
) -> bool:
    """
    Whether a listing proves itself stale: requested at ``listed_at`` (this machine's clock), more than
    ``margin`` after ``change`` (a moment the instance details showed, Cloudflare's clock), it still
    shows the instance as last modified before that change. Either the listing lags behind the instance
    details, or ``modified_on`` does not move with every step (:data:`MODIFIED_ON_COVERS_STEPS`). An
    instance the listing does not show, or shows without ``modified_on``, proves nothing.
    """
    if listed is None or listed.modified_on is None or listed_at <= change + margin:
        return False
    return listed.modified_on < change - TIMESTAMP_TOLERANCE


class InstanceChangeTracker:
    """
    Finds the instances of one Workflow that reach one of ``statuses``, one :meth:`look` at a time.

    The caller reports what :meth:`look` returns and calls :meth:`acknowledge` for each instance it
    reported; unacknowledged ones are returned again by the next look (and kept in :meth:`memory`), so
    an instance whose report failed is not lost. A look that fails (an API error) changes nothing.

    :param hook: the hook to list and read instances with (its rate limiter paces every call).
    :param workflow_name: the Workflow.
    :param statuses: the wanted statuses (terminal ones).
    :param account_id: defaults to the connection's login.
    :param memory: what an earlier tracker remembered, or None to start watching now.
    """

    def __init__(
        self,
        hook: CloudflareWorkflowsHook,
        *,
        workflow_name: str,
        statuses: Sequence[str],
        account_id: str | None = None,
        memory: Memory | None = None,
    ) -> None:
        self.hook = hook
        self.workflow_name = workflow_name
        self.statuses = tuple(statuses)
        self.account_id = account_id
        self._memory = memory
        self._open: dict[str, ListedInstance] | None = None  # None until the first look of this object
        self._horizon: datetime | None = None
        self._pending: dict[str, FinishedInstance] = {}
        self.date_filter_usable = True

    # --- what the caller persists -----------------------------------------------------------

    def memory(self) -> Memory | None:
        """What to persist now (None before the first successful look)."""
        if self._memory is None:
            return None
        pending = [p.instance for p in self._pending.values()]
        watermark = min([self._memory.watermark, *(p.ended_on for p in pending if p.ended_on is not None)])
        memory = replace(self._memory, watermark=watermark)
        reported = {
            instance_id: ended
            for instance_id, ended in memory.reported.items()
            if (moment := parse_time(ended)) is None or moment > memory.threshold
        }
        if self._open is not None:  # this tracker has looked: its own view replaces the remembered one
            memory = replace(memory, oldest_open=oldest_creation([*self._open.values(), *pending]))
        return replace(memory, reported=reported)

    def acknowledge(self, finished: FinishedInstance) -> None:
        """``finished`` was reported (or is to be dropped): never return it again."""
        self._pending.pop(finished.instance.id, None)
        if self._memory is not None:
            reported = {**self._memory.reported, finished.instance.id: finished.ended_key}
            self._memory = replace(self._memory, reported=reported)

    # --- looking --------------------------------------------------------------------------------

    async def _list(self, **filters: Any) -> list[ListedInstance]:
        items = self.hook.alist_instances(
            self.workflow_name, per_page=LIST_PAGE_SIZE, account_id=self.account_id, **filters
        )
        return [instance async for item in items if (instance := ListedInstance.from_item(item)) is not None]

    async def _list_open(self) -> tuple[dict[str, ListedInstance], dict[str, ListedInstance]]:
        """``(open, terminal)`` instances of the open-status listings, by the status each item shows."""
        open_now: dict[str, ListedInstance] = {}
        terminal: dict[str, ListedInstance] = {}
        for status in OPEN_LISTED_STATUSES:
            for instance in await self._list(status=status.value):
                (terminal if instance.is_terminal else open_now)[instance.id] = instance
        return open_now, terminal

    async def look(self) -> list[FinishedInstance]:
        """One look: the instances to report now (oldest end first)."""
        look_started = datetime.now(UTC)
        open_now, found = await self._list_open()
        if self._memory is None:  # watching starts now
            started = datetime.now(UTC)  # after the open listings: what ended before is "before"
            self._memory = Memory(
                started=started, watermark=started, oldest_open=oldest_creation(open_now.values())
            )
            self._open, self._horizon = open_now, look_started - LIST_MARGIN
            return []
        memory = self._memory
        seen_open: set[str] = set()
        if self._open is None:
            found.update(await self._catch_up(memory))
        else:
            found.update(await self._list_new(open_now, self._horizon or look_started))
            for instance_id, before in self._open.items():
                if instance_id in open_now or instance_id in found:
                    continue
                if (now := await self._read(before)) is None:
                    continue  # deleted
                if now.instance.is_terminal:
                    found[instance_id] = now.instance
                    self._pending.setdefault(instance_id, now)
                    seen_open.add(instance_id)
                else:
                    open_now[instance_id] = now.instance  # in a status this look does not list
        for instance_id, instance in found.items():
            open_now.pop(instance_id, None)
            finished = self._pending.get(instance_id) or FinishedInstance(instance)
            if is_wanted(finished, self.statuses, memory, seen_open=instance_id in seen_open):
                self._pending[instance_id] = finished
            else:
                self._pending.pop(instance_id, None)
        self._open, self._horizon = open_now, look_started - LIST_MARGIN
        self._memory = replace(memory, watermark=look_started)
        far_past = datetime.max.replace(tzinfo=UTC)
        return sorted(self._pending.values(), key=lambda p: p.instance.ended_on or far_past)

    async def _catch_up(self, memory: Memory) -> dict[str, ListedInstance]:
        """The wanted instances created since the oldest one open at the memory's last look."""
        start = min(memory.oldest_open or memory.watermark, memory.watermark) - LIST_MARGIN
        found: dict[str, ListedInstance] = {}
        for status in self.statuses:
            date_start = start if self.date_filter_usable else None
            listed = await self._list(status=status, date_start=date_start)
            found.update((instance.id, instance) for instance in listed if instance.is_terminal)
        return found

    async def _list_new(
        self, open_now: dict[str, ListedInstance], horizon: datetime
    ) -> dict[str, ListedInstance]:
        """Instances created since ``horizon``: terminal ones returned, open ones added to ``open_now``."""
        listed = await self._list(date_start=horizon if self.date_filter_usable else None)
        if self.date_filter_usable and (
            missing := created_but_not_listed(open_now, (i.id for i in listed), horizon)
        ):
            self.date_filter_usable = False
            log.warning(
                "Listing instances of workflow %r with date_start=%s left out %d instance(s) created "
                "after it (e.g. %r): Cloudflare's date filter does not select on %s as this provider "
                "assumed. From now on this watcher lists without a date filter: still correct, but each "
                "look reads the workflow's whole instance history. Please report this with the output of "
                "scripts/live-check.sh.",
                self.workflow_name,
                format_time(horizon),
                len(missing),
                missing[0],
                DATE_FILTER_FIELD,
            )
            listed = await self._list()
        found: dict[str, ListedInstance] = {}
        for instance in listed:
            if instance.is_terminal:
                found[instance.id] = instance
            else:
                open_now.setdefault(instance.id, instance)
        return found

    async def _read(self, before: ListedInstance) -> FinishedInstance | None:
        """``GET`` one instance (simple): its status now, with its details; None when it is gone."""
        try:
            details = await self.hook.aget_instance(
                self.workflow_name, before.id, simple=True, account_id=self.account_id
            )
        except CloudflareWorkflowsNotFoundError:
            log.info("Instance %r of workflow %r no longer exists.", before.id, self.workflow_name)
            return None
        status = status_of(details) or before.status
        instance = replace(before, status=status, ended_on=parse_time(details.get("end")) or before.ended_on)
        return FinishedInstance(instance, details)
