"""Triggers that wait for a Cloudflare Workflow step or instance in the triggerer.

They only make GET calls, so a triggerer restart that replays them is harmless. All the triggers of a
triggerer that wait on one instance share one look per interval (:mod:`.watchers`). Transient API
errors (429, 5xx, timeouts, dropped connections) never fail the task: the hook retries a few times, and
when it gives up the shared watcher keeps looking with backoff and jitter until the trigger's deadline.
Each trigger yields exactly one small event (status and ids, never the output); the task resumes on a
worker and acts on it there.

This module owns the event contract: :class:`StepWaitEvent` and :class:`InstanceWaitEvent` are built
here and validated here (``from_trigger``) when the task resumes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Self

from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cfworkflows.checks import (
    Check,
    Verdict,
    describe_awaited_instance,
    describe_awaited_step,
    evaluate_instance,
)
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.looks import ProgressLog, arun_step_check, timeout_message
from airflow_provider_cfworkflows.statuses import TERMINAL_INSTANCE_STATUSES, StatusAction, StepType
from airflow_provider_cfworkflows.triggers.finished_instances import (
    CloudflareWorkflowFinishedInstancesTrigger,
    FinishedInstanceEvent,
)
from airflow_provider_cfworkflows.triggers.watchers import (
    MAX_ERROR_BACKOFF_SECONDS,
    MIN_ERROR_BACKOFF_SECONDS,
    Look,
    Subscription,
    WatchKey,
    watch,
)

# Event "status" values: the check's verdict, or why the wait ended without one.
EVENT_SUCCESS = Verdict.SUCCESS.value
EVENT_FAILURE = Verdict.FAILURE.value
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = frozenset({EVENT_SUCCESS, EVENT_FAILURE, EVENT_TIMEOUT, EVENT_ERROR})
__all__ = [
    "EVENT_ERROR",
    "EVENT_FAILURE",
    "EVENT_STATUSES",
    "EVENT_SUCCESS",
    "EVENT_TIMEOUT",
    "MAX_ERROR_BACKOFF_SECONDS",
    "MIN_ERROR_BACKOFF_SECONDS",
    "CloudflareWorkflowFinishedInstancesTrigger",
    "CloudflareWorkflowInstanceTrigger",
    "CloudflareWorkflowStepTrigger",
    "FinishedInstanceEvent",
    "InstanceWaitEvent",
    "StepWaitEvent",
    "WaitEvent",
    "describe_awaited_instance",
]


@dataclass(frozen=True)
class WaitEvent:
    """
    The fields every trigger event carries (it crosses the triggerer/worker boundary as a plain dict).

    :param status: ``success``, ``failure``, ``timeout`` or ``error`` (the ``EVENT_*`` constants).
    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param error: the remote error ``{"name", "message"}``, if any.
    :param message: what was seen, in words.
    """

    status: str
    workflow_name: str
    instance_id: str
    error: dict[str, str] | None
    message: str

    def to_dict(self) -> dict[str, Any]:
        """The event as the trigger yields it."""
        return asdict(self)

    @classmethod
    def from_trigger(cls, event: Any) -> Self:
        """
        Validate the event a resumed task received; return it typed.

        A timeout event raises ``AirflowSensorTimeout`` (the task fails without retry; a sensor with
        ``soft_fail`` skips), an error event an ``AirflowException`` with the trigger's message; success
        and failure events need every field of this class.
        """
        if not isinstance(event, dict):
            raise AirflowException(f"The trigger sent no usable event: {event!r}")
        status = event.get("status")
        if status not in EVENT_STATUSES:
            raise AirflowException(
                f"The trigger sent an event with an unknown status {status!r}; expected one of "
                f"{sorted(EVENT_STATUSES)}."
            )
        if status == EVENT_TIMEOUT:
            raise AirflowSensorTimeout(f"Sensor timed out: {event.get('message')}")
        if status == EVENT_ERROR:
            raise AirflowException(event.get("message") or "The trigger failed without a message.")
        names = [field.name for field in fields(cls)]
        missing = [name for name in names if name not in event]
        if missing:
            raise AirflowException(f"The trigger's {status} event lacks {missing}: {event!r}")
        error = event["error"]
        if error is not None and not (isinstance(error, Mapping) and "name" in error and "message" in error):
            raise AirflowException(f"The trigger's event has an unreadable error {error!r}.")
        return cls(**{name: event[name] for name in names})

    @property
    def is_success(self) -> bool:
        """Whether the wait ended in a success state (else: a failure state)."""
        return self.status == EVENT_SUCCESS


@dataclass(frozen=True)
class StepWaitEvent(WaitEvent):
    """
    The event of :class:`CloudflareWorkflowStepTrigger`.

    :param step_name: the exact logged name once found, else the name as given.
    :param step_type: ``"step"`` or ``"waitForEvent"``.
    :param step_status: the step's status, or None when it was not seen.
    """

    step_name: str
    step_type: str
    step_status: str | None


@dataclass(frozen=True)
class InstanceWaitEvent(WaitEvent):
    """
    The event of :class:`CloudflareWorkflowInstanceTrigger` (never the output: read it on the worker).

    :param instance_status: the instance's status, or None when it was not seen.
    """

    instance_status: str | None


class _CloudflareWorkflowsPollingTrigger(BaseTrigger):
    """Poll until a check is no longer pending, the deadline passes, or a non-transient error."""

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        success_states: list[str],
        failure_states: list[str],
        end_time: float,
        poll_interval: float,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
    ) -> None:
        super().__init__()
        self.workflow_name = str(workflow_name)
        self.instance_id = str(instance_id)
        self.success_states = tuple(str(state) for state in success_states)
        self.failure_states = tuple(str(state) for state in failure_states)
        self.end_time = float(end_time)
        self.poll_interval = float(poll_interval)
        self.account_id = None if account_id is None else str(account_id)
        self.cloudflare_conn_id = str(cloudflare_conn_id)

    def _kwargs(self) -> dict[str, Any]:
        """Constructor arguments, plain JSON types only (the task runner serializes them with serde)."""
        return {
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "success_states": list(self.success_states),
            "failure_states": list(self.failure_states),
            "end_time": self.end_time,
            "poll_interval": self.poll_interval,
            "account_id": self.account_id,
            "cloudflare_conn_id": self.cloudflare_conn_id,
        }

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", self._kwargs()

    def _describe_awaited(self) -> str:
        """What this trigger waits for, for messages."""
        raise NotImplementedError

    # Whether the trigger needs the steps in the instance details (``simple=false``).
    _needs_steps = False

    def _awaited_statuses(self) -> frozenset[str] | None:
        """The instance statuses that end the wait; None when any look may (a listing never answers)."""
        return None

    async def _evaluate(self, subscription: Subscription, details: dict[str, Any]) -> Check:
        """Decide on one look at the instance (making only the calls the details cannot replace)."""
        raise NotImplementedError

    def _event(self, status: str, check: Check | None, message: str) -> WaitEvent:
        raise NotImplementedError

    def _common_event_fields(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {
            "status": status,
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "error": check.error.to_dict() if check and check.error else None,
            "message": message,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # The subscription ends before the event is yielded: the shared watcher never waits on a
        # trigger the triggerer is done with.
        event = await self._wait()
        yield TriggerEvent(event.to_dict())

    async def _wait(self) -> WaitEvent:
        """Look (through the shared watcher) until a verdict, a non-transient error or the deadline."""
        progress = ProgressLog(self.log)
        last: Check | None = None
        last_error: CloudflareWorkflowsError | None = None
        key = WatchKey(self.cloudflare_conn_id, self.account_id, self.workflow_name, self.instance_id)
        # Ends by end_time whatever the server does: the wait for a look ends by it, and so do our own calls.
        with watch(
            key,
            poll_interval=self.poll_interval,
            full=self._needs_steps,
            deadline=self.end_time,
            awaited=self._awaited_statuses(),
        ) as subscription:
            while (look := await subscription.next_look()) is not None:
                try:
                    check = await self._decide(subscription, look)
                except CloudflareWorkflowsError as error:
                    if not error.is_transient:
                        awaited = self._describe_awaited()
                        message = f"Cloudflare API error while waiting for {awaited}: {error}"
                        return self._event(EVENT_ERROR, last, message)
                    self._log_transient(error, look)
                    last_error = error
                    continue
                except AirflowException as error:  # e.g. the connection does not exist
                    message = f"Cannot poll Cloudflare for {self._describe_awaited()}: {error}"
                    return self._event(EVENT_ERROR, last, message)
                if check is None:
                    break
                last, last_error = check, None
                if check.verdict is not Verdict.PENDING:
                    return self._event(check.verdict.value, check, check.message)
                progress.report(check)
        message = timeout_message(self._describe_awaited(), last, last_error)
        return self._event(EVENT_TIMEOUT, last, message)

    async def _decide(self, subscription: Subscription, look: Look) -> Check | None:
        """The check of one look (or its error, raised); None when the deadline came first."""
        if look.error is not None:
            raise look.error
        assert look.details is not None  # for mypy: a look has one or the other
        try:
            # A scope only while deciding: a timer per waiting trigger would cost the garbage collector.
            async with asyncio.timeout(self.end_time - time.time()) as scope:
                with calls_end_by(self.end_time):
                    return await self._evaluate(subscription, look.details)
        except TimeoutError:
            if scope.expired():
                return None
            raise

    def _log_transient(self, error: CloudflareWorkflowsError, look: Look) -> None:
        if look.error is error:
            self.log.warning(
                "Transient Cloudflare error (%d in a row), polling again in %.1f s: %s",
                look.failures,
                look.retry_in,
                error,
            )
        else:
            self.log.warning("Transient Cloudflare error, looking again at the next poll: %s", error)


class CloudflareWorkflowStepTrigger(_CloudflareWorkflowsPollingTrigger):
    """
    Wait until a step reaches a success or failure state (or can never get there).

    Yields one event: ``{"status": "success"|"failure"|"timeout"|"error", "workflow_name",
    "instance_id", "step_name" (the exact logged name once found), "step_type", "step_status",
    "error": {"name", "message"} | None, "message"}``.

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param step_name: the step, as written in the Workflow code or as logged (see the step sensor).
    :param step_type: ``"step"`` or ``"waitForEvent"``.
    :param success_states: step statuses that end the wait successfully.
    :param failure_states: step statuses that end it as a failure.
    :param end_time: wall-clock deadline (``time.time()`` seconds).
    :param poll_interval: seconds between polls.
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: the connection; the trigger carries its id, never a credential.
    """

    def __init__(self, *, step_name: str, step_type: str = StepType.STEP.value, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_name = str(step_name)
        self.step_type = str(step_type)
        self._known_name: str | None = None

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "step_name": self.step_name, "step_type": self.step_type}

    def _describe_awaited(self) -> str:
        return describe_awaited_step(self.workflow_name, self.instance_id, self.step_name, self.step_type)

    def _event(self, status: str, check: Check | None, message: str) -> StepWaitEvent:
        return StepWaitEvent(
            **self._common_event_fields(status, check, message),
            step_name=check.step_name if check and check.step_name else self.step_name,
            step_type=self.step_type,
            step_status=check.status if check else None,
        )

    _needs_steps = True

    async def _evaluate(self, subscription: Subscription, details: dict[str, Any]) -> Check:
        check = await arun_step_check(
            subscription.hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            step_name=self.step_name,
            step_type=self.step_type,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
            instance_label=describe_awaited_instance(self.workflow_name, self.instance_id),
            known_name=self._known_name,
            details=details,
        )
        self._known_name = check.step_name or self._known_name
        return check


class CloudflareWorkflowInstanceTrigger(_CloudflareWorkflowsPollingTrigger):
    """
    Wait until an instance reaches a success or failure state (``GET .../instances/{id}?simple=true``).

    Generic on purpose: the instance sensor and operators that start an instance and wait for it use it
    alike. Yields one event: ``{"status": "success"|"failure"|"timeout"|"error", "workflow_name",
    "instance_id", "instance_status", "error": {"name", "message"} | None, "message"}`` (never the
    output: read it on the worker).

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param success_states: instance statuses that end the wait successfully.
    :param failure_states: instance statuses that end it as a failure.
    :param end_time: wall-clock deadline (``time.time()`` seconds).
    :param poll_interval: seconds between polls.
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: the connection; the trigger carries its id, never a credential.
    :param terminate_on_kill: terminate the instance when a user kills the deferred task (marks it
        failed or succeeded, or clears it); Airflow then calls :meth:`on_kill`. Only for instances the
        task created.
    """

    def __init__(self, *, terminate_on_kill: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.terminate_on_kill = bool(terminate_on_kill)

    def _kwargs(self) -> dict[str, Any]:
        return {**super()._kwargs(), "terminate_on_kill": self.terminate_on_kill}

    async def on_kill(self) -> None:
        """A user killed the deferred task: terminate the instance (one PATCH) if ``terminate_on_kill``."""
        if not self.terminate_on_kill:
            return
        self.log.warning(
            "The task was killed while deferred: terminating instance %r of workflow %r, which it created.",
            self.instance_id,
            self.workflow_name,
        )
        hook = CloudflareWorkflowsHook(self.cloudflare_conn_id)
        try:
            result = await hook.achange_instance_status(
                self.workflow_name, self.instance_id, StatusAction.TERMINATE.value, account_id=self.account_id
            )
        finally:
            await hook.aclose()
        self.log.info("Instance %r: status now %s.", self.instance_id, result.get("status"))

    def _describe_awaited(self) -> str:
        return describe_awaited_instance(self.workflow_name, self.instance_id)

    def _awaited_statuses(self) -> frozenset[str] | None:
        # evaluate_instance ends the wait on these, and on every final status.
        return frozenset((*self.success_states, *self.failure_states, *TERMINAL_INSTANCE_STATUSES))

    def _event(self, status: str, check: Check | None, message: str) -> InstanceWaitEvent:
        return InstanceWaitEvent(
            **self._common_event_fields(status, check, message),
            instance_status=check.status if check else None,
        )

    async def _evaluate(self, subscription: Subscription, details: dict[str, Any]) -> Check:
        return evaluate_instance(
            details, success_states=self.success_states, failure_states=self.failure_states
        )
