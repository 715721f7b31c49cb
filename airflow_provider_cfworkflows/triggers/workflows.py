"""Triggers that wait for a Cloudflare Workflow step or instance in the triggerer.

They only make GET calls, so a triggerer restart that replays them is harmless. Transient API errors
(429, 5xx, timeouts, dropped connections) never fail the task: the hook retries a few times, and when
it gives up the trigger keeps polling with backoff until its deadline. Each trigger yields exactly one
small event (status and ids, never the output); the task resumes on a worker and acts on it there.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsError, CloudflareWorkflowsNotFoundError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.statuses import StepType
from airflow_provider_cfworkflows.waiting import (
    Check,
    Verdict,
    evaluate_instance,
    evaluate_step,
    step_name_candidates,
)

# Event "status" values: the check's verdict, or why the wait ended without one.
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = frozenset({Verdict.SUCCESS.value, Verdict.FAILURE.value, EVENT_TIMEOUT, EVENT_ERROR})
# Backoff between polls after a transient error: poll_interval doubled per failure, capped.
MAX_ERROR_BACKOFF_SECONDS = 300.0


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
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.success_states = tuple(success_states)
        self.failure_states = tuple(failure_states)
        self.end_time = end_time
        self.poll_interval = poll_interval
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id

    def _common_kwargs(self) -> dict[str, Any]:
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

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        raise NotImplementedError

    def _event(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {
            "status": status,
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "remote_status": check.status if check else None,
            "error": check.error.to_dict() if check and check.error else None,
            "message": message,
        }

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = CloudflareWorkflowsHook(self.cloudflare_conn_id)
        failures = 0
        try:
            while True:
                try:
                    check = await self._check(hook)
                except CloudflareWorkflowsError as error:
                    if not protocol.is_transient(error):
                        yield TriggerEvent(self._event(EVENT_ERROR, None, f"Cloudflare API error: {error}"))
                        return
                    failures += 1
                    delay = min(self.poll_interval * 2**failures, MAX_ERROR_BACKOFF_SECONDS)
                    self.log.warning(
                        "Transient error (%d in a row), polling again in %.0f s: %s", failures, delay, error
                    )
                else:
                    failures = 0
                    if check.verdict is not Verdict.PENDING:
                        yield TriggerEvent(self._event(check.verdict.value, check, check.message))
                        return
                    self.log.info("%s", check.message)
                    delay = self.poll_interval
                remaining = self.end_time - time.time()
                if remaining <= 0:
                    yield TriggerEvent(self._event(EVENT_TIMEOUT, None, "Timed out waiting for Cloudflare."))
                    return
                await asyncio.sleep(min(delay, remaining))
        finally:
            await hook.aclose()


class CloudflareWorkflowStepTrigger(_CloudflareWorkflowsPollingTrigger):
    """
    Wait until a step reaches a success or failure state (or can never run).

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param step_name: the step, as written in code or as logged (``name-N``).
    :param step_type: ``"step"`` or ``"waitForEvent"``.
    :param success_states: step statuses that end the wait successfully.
    :param failure_states: step statuses that end it as a failure.
    :param end_time: wall-clock deadline (``time.time()`` seconds).
    :param poll_interval: seconds between polls.
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: the connection; the trigger carries its id, never a credential.
    """

    def __init__(self, *, step_name: str, step_type: str = StepType.STEP, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_name = step_name
        self.step_type = str(step_type)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {**self._common_kwargs(), "step_name": self.step_name, "step_type": self.step_type},
        )

    def _event(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {
            **super()._event(status, check, message),
            "step_name": check.step_name if check and check.step_name else self.step_name,
            "step_type": self.step_type,
        }

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        return await acheck_step(
            hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            step_name=self.step_name,
            step_type=self.step_type,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
        )


class CloudflareWorkflowInstanceTrigger(_CloudflareWorkflowsPollingTrigger):
    """
    Wait until an instance reaches a success or failure state.

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param success_states: instance statuses that end the wait successfully.
    :param failure_states: instance statuses that end it as a failure.
    :param end_time: wall-clock deadline (``time.time()`` seconds).
    :param poll_interval: seconds between polls.
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: the connection; the trigger carries its id, never a credential.
    """

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return f"{type(self).__module__}.{type(self).__qualname__}", self._common_kwargs()

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        details = await hook.aget_instance(
            self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
        )
        return evaluate_instance(
            details, success_states=self.success_states, failure_states=self.failure_states
        )


async def acheck_step(
    hook: CloudflareWorkflowsHook,
    *,
    workflow_name: str,
    instance_id: str,
    step_name: str,
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    account_id: str | None,
) -> Check:
    """Async twin of :func:`airflow_provider_cfworkflows.sensors.workflows.check_step`."""
    step, exact = None, None
    for candidate in step_name_candidates(step_name):
        try:
            step = await hook.aget_step_output(
                workflow_name, instance_id, candidate, step_type, account_id=account_id
            )
        except CloudflareWorkflowsNotFoundError:
            continue
        exact = candidate
        break
    details = None
    instance_status = None
    if step is None:
        details = await hook.aget_instance(workflow_name, instance_id, account_id=account_id)
        instance_status = details.get("status")
    elif step.status not in (*success_states, *failure_states):
        instance_status = (
            await hook.aget_instance(workflow_name, instance_id, simple=True, account_id=account_id)
        ).get("status")
    return evaluate_step(
        step,
        step_label=step_name,
        step_name=exact,
        instance_status=instance_status,
        instance_details=details,
        success_states=success_states,
        failure_states=failure_states,
    )
