"""An event trigger for asset watchers: each instance of a Workflow that finishes starts a DAG run.

Use it in an :class:`airflow.sdk.AssetWatcher` (or build the asset with
:func:`airflow_provider_cfworkflows.assets.cloudflare_workflow_asset`); ``docs/event-driven.md`` has the
request arithmetic, where the memory lives and how to reset it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Self

from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseEventTrigger, TriggerEvent

from airflow_provider_cfworkflows.checks import summary_output
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_changes import (
    FinishedInstance,
    InstanceChangeTracker,
    Memory,
    format_time,
    memory_key,
    parse_time,
)
from airflow_provider_cfworkflows.models import RemoteError, instance_output
from airflow_provider_cfworkflows.statuses import TERMINAL_INSTANCE_STATUSES, InstanceStatus
from airflow_provider_cfworkflows.validation import validate_workflow_name

DEFAULT_FINISHED_STATUSES = (InstanceStatus.COMPLETE.value,)
DEFAULT_WATCH_POLL_INTERVAL = 60.0
MIN_WATCH_POLL_INTERVAL = 1.0
# After a look that reported something, the memory is written this much later (at most one poll
# interval): by then the triggerer has handed the events to the metadata DB (its runner syncs about once
# a second), so the memory never records an event Airflow may still lose in a stop.
MEMORY_SETTLE_SECONDS = 3.0
# Looks that fail (an API error the hook's retries did not cure) are repeated after a growing pause.
MAX_FAILURE_PAUSE_SECONDS = 300.0


@dataclass(frozen=True)
class FinishedInstanceEvent:
    """
    The payload of :class:`CloudflareWorkflowFinishedInstancesTrigger`: an asset event's
    ``extra["payload"]``. Plain JSON, small, with nothing secret.

    :param workflow_name: the Workflow.
    :param instance_id: the instance that finished.
    :param status: ``complete``, ``errored`` or ``terminated``.
    :param output: what the Workflow's ``run()`` returned (decoded as the instance sensor decodes it), or
        None: not complete, or too big for an event (then ``output_truncated`` is true; read it with
        ``CloudflareWorkflowsHook.get_instance``).
    :param output_truncated: whether ``output`` was left out for its size (over 64 KiB as JSON).
    :param error: ``{"name", "message"}`` of an errored instance, else None.
    :param ended_on: when it ended (ISO 8601, UTC), as Cloudflare reports it.
    :param account_id: the Cloudflare account.
    """

    workflow_name: str
    instance_id: str
    status: str
    output: Any
    output_truncated: bool
    error: dict[str, str] | None
    ended_on: str | None
    account_id: str

    def to_dict(self) -> dict[str, Any]:
        """The payload as the trigger yields it."""
        return asdict(self)

    @classmethod
    def from_asset_event(cls, asset_event: Any) -> Self:
        """
        Read the payload of an asset event the trigger caused (an item of ``triggering_asset_events``).

        :raises ValueError: the event did not come from this trigger.
        """
        extra = getattr(asset_event, "extra", asset_event)
        payload = extra.get("payload") if isinstance(extra, Mapping) else None
        names = cls.__dataclass_fields__
        if not isinstance(payload, Mapping) or not set(names) <= set(payload):
            raise ValueError(
                "This asset event was not caused by CloudflareWorkflowFinishedInstancesTrigger: "
                f"{extra!r:.300}"
            )
        return cls(**{name: payload[name] for name in names})


def validate_finished_statuses(statuses: Any) -> list[str]:
    """The statuses, each a final one, without repeats, sorted (so the trigger's identity is stable)."""
    if isinstance(statuses, str) or not isinstance(statuses, Sequence | set | frozenset) or not statuses:
        raise CloudflareWorkflowsConfigurationError(
            f"statuses must be a non-empty list of final instance statuses, got {statuses!r}."
        )
    allowed = sorted(str(s) for s in TERMINAL_INSTANCE_STATUSES)
    wrong = [s for s in statuses if s not in allowed]
    if wrong:
        raise CloudflareWorkflowsConfigurationError(
            f"statuses may only hold the final instance statuses {allowed}, got {wrong!r}."
        )
    return sorted({str(s) for s in statuses})


class CloudflareWorkflowFinishedInstancesTrigger(BaseEventTrigger):
    """
    Yield one event per instance of a Workflow that reaches one of ``statuses`` after the watcher first
    started (instances that finished before are never reported), for asset watchers.

    Each look lists instances, page by page, instead of reading each instance: about five requests
    however many instances the Workflow keeps, plus one ``GET`` per instance that finished (see
    :mod:`airflow_provider_cfworkflows.instance_changes`). Every call goes through the hook, so it is
    paced by the connection's rate limiter like any other.

    What was reported is remembered in the watched asset's state store (Airflow's metadata DB), so a
    triggerer restart neither repeats an instance nor loses one that finished while no triggerer ran.
    Delete the state-store key (it starts with ``cloudflare_workflows.finished_instances.``) to start
    afresh: only instances finishing from then on are reported. See ``docs/event-driven.md``.

    The event payload is :class:`FinishedInstanceEvent` (``workflow_name``, ``instance_id``, ``status``,
    ``output``, ``output_truncated``, ``error``, ``ended_on``, ``account_id``).

    :param workflow_name: the Workflow.
    :param statuses: which final statuses to report: any of ``complete``, ``errored``, ``terminated``.
    :param cloudflare_conn_id: the connection; the trigger carries its id, never a credential.
    :param account_id: defaults to the connection's login.
    :param poll_interval: seconds between two looks (at least 1).
    """

    def __init__(
        self,
        *,
        workflow_name: str,
        statuses: Sequence[str] = DEFAULT_FINISHED_STATUSES,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        account_id: str | None = None,
        poll_interval: float = DEFAULT_WATCH_POLL_INTERVAL,
    ) -> None:
        super().__init__()
        self.workflow_name = validate_workflow_name(workflow_name)
        self.statuses = validate_finished_statuses(statuses)
        self.cloudflare_conn_id = str(cloudflare_conn_id)
        self.account_id = None if account_id is None else str(account_id)
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, int | float)
            or not poll_interval >= MIN_WATCH_POLL_INTERVAL
        ):
            raise CloudflareWorkflowsConfigurationError(
                f"poll_interval must be a number of seconds >= {MIN_WATCH_POLL_INTERVAL:g}, "
                f"got {poll_interval!r}."
            )
        self.poll_interval = float(poll_interval)
        self._memory_warning_logged = False

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", {
            "workflow_name": self.workflow_name,
            "statuses": list(self.statuses),
            "cloudflare_conn_id": self.cloudflare_conn_id,
            "account_id": self.account_id,
            "poll_interval": self.poll_interval,
        }

    @property
    def memory_key(self) -> str:
        """This watcher's key in the asset's state store (the poll interval is not part of it)."""
        return memory_key(self.cloudflare_conn_id, self.account_id, self.workflow_name, *self.statuses)

    # --- memory ---------------------------------------------------------------------------------

    def _warn_memory_once(self, message: str) -> None:
        if not self._memory_warning_logged:
            self._memory_warning_logged = True
            self.log.warning(message)

    async def _load_memory(self) -> Memory | None:
        store = getattr(self, "asset_state_store", None)
        if store is None:
            self._warn_memory_once(
                "No asset state store (the trigger is not running as an asset watcher): what was reported "
                "is remembered only while this trigger runs."
            )
            return None
        try:
            value = await store.aget(self.memory_key)
        except ValueError:  # more than one asset watched by one trigger
            self._warn_memory_once(
                "This trigger watches more than one asset, so it has no single state store: what was "
                "reported is remembered only while it runs. Give each asset its own watcher."
            )
            return None
        if value is None:
            self.log.info(
                "No memory under %r: watching workflow %r starts now.", self.memory_key, self.workflow_name
            )
            return None
        try:
            memory = Memory.from_json(value)
        except ValueError as error:
            self.log.error(
                "The memory under %r is unreadable (%s): watching starts afresh now.", self.memory_key, error
            )
            return None
        self.log.info(
            "Resuming: watching since %s, last look at %s.",
            format_time(memory.started),
            format_time(memory.watermark),
        )
        return memory

    async def _save_memory(self, memory: Memory | None) -> None:
        store = getattr(self, "asset_state_store", None)
        if store is None or memory is None:
            return
        try:
            await store.aset(self.memory_key, memory.to_json())
        except ValueError:
            self._warn_memory_once("This trigger watches more than one asset: its memory is not saved.")

    # --- events ---------------------------------------------------------------------------------

    async def _event(
        self, hook: CloudflareWorkflowsHook, finished: FinishedInstance
    ) -> FinishedInstanceEvent:
        """The payload of ``finished`` (one ``GET`` unless the look already read the details)."""
        details = finished.details
        if details is None:
            details = await hook.aget_instance(
                self.workflow_name, finished.instance.id, simple=True, account_id=self.account_id
            )
        settings = await hook.aget_settings()
        status = finished.instance.status
        output = instance_output(details.get("output")) if status == InstanceStatus.COMPLETE else None
        summary = summary_output(output)
        error = RemoteError.from_api(details.get("error"))
        ended = finished.instance.ended_on or parse_time(details.get("end"))
        return FinishedInstanceEvent(
            workflow_name=self.workflow_name,
            instance_id=finished.instance.id,
            status=status,
            output=summary["output"],
            output_truncated=bool(summary.get("output_truncated", False)),
            error=error.to_dict() if error else None,
            ended_on=format_time(ended),
            account_id=settings.resolve_account_id(self.account_id),
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = CloudflareWorkflowsHook(self.cloudflare_conn_id)
        try:
            tracker = InstanceChangeTracker(
                hook,
                workflow_name=self.workflow_name,
                statuses=self.statuses,
                account_id=self.account_id,
                memory=await self._load_memory(),
            )
            failures = 0
            while True:
                look_started = time.monotonic()
                try:
                    finished = await tracker.look()
                except (CloudflareWorkflowsError, AirflowException) as error:
                    failures += 1
                    pause = min(
                        self.poll_interval * 2 ** (failures - 1),
                        max(self.poll_interval, MAX_FAILURE_PAUSE_SECONDS),
                    )
                    self.log.warning(
                        "Looking at workflow %r failed (%d in a row), trying again in %.0f s: %s",
                        self.workflow_name,
                        failures,
                        pause,
                        error,
                    )
                    await asyncio.sleep(pause)
                    continue
                failures = 0
                reported = 0
                for instance in finished:
                    try:
                        event = await self._event(hook, instance)
                    except CloudflareWorkflowsNotFoundError:
                        self.log.info(
                            "Instance %r finished and is gone already: not reported.", instance.instance.id
                        )
                        tracker.acknowledge(instance)
                        continue
                    except (CloudflareWorkflowsError, AirflowException) as error:
                        self.log.warning(
                            "Reading instance %r failed, reporting it at the next look: %s",
                            instance.instance.id,
                            error,
                        )
                        break
                    self.log.info(
                        "Instance %r of workflow %r is %s.",
                        event.instance_id,
                        self.workflow_name,
                        event.status,
                    )
                    yield TriggerEvent(event.to_dict())
                    tracker.acknowledge(instance)
                    reported += 1
                if reported:
                    await asyncio.sleep(min(MEMORY_SETTLE_SECONDS, self.poll_interval))
                await self._save_memory(tracker.memory())
                await asyncio.sleep(max(0.0, look_started + self.poll_interval - time.monotonic()))
        finally:
            await hook.aclose()
