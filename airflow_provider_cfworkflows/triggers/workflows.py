"""Triggers that wait for a Cloudflare Workflow step or instance in the triggerer.

They only make GET calls, so a triggerer restart that replays them is harmless. Transient API errors
(429, 5xx, timeouts, dropped connections) never fail the task: the hook retries a few times, and when
it gives up the trigger keeps polling with backoff until its deadline. Each trigger yields exactly one
small event (status and ids, never the output); the task resumes on a worker and acts on it there.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk.exceptions import AirflowException
from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.statuses import StepType
from airflow_provider_cfworkflows.waiting import (
    Check,
    StepQuery,
    Verdict,
    evaluate_instance,
    instance_not_found_error,
    plan_step_check,
)

# Event "status" values: the check's verdict, or why the wait ended without one.
EVENT_SUCCESS = Verdict.SUCCESS.value
EVENT_FAILURE = Verdict.FAILURE.value
EVENT_TIMEOUT = "timeout"
EVENT_ERROR = "error"
EVENT_STATUSES = frozenset({EVENT_SUCCESS, EVENT_FAILURE, EVENT_TIMEOUT, EVENT_ERROR})
# Waits after a transient error: the poll interval (at least the minimum) doubled per failure in a
# row, capped; a longer Retry-After wins.
MIN_ERROR_BACKOFF_SECONDS = 1.0
MAX_ERROR_BACKOFF_SECONDS = 300.0


async def arun_step_check(
    hook: CloudflareWorkflowsHook,
    *,
    workflow_name: str,
    instance_id: str,
    step_name: str,
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    account_id: str | None,
    known_name: str | None = None,
) -> Check:
    """Make the calls :func:`~airflow_provider_cfworkflows.waiting.plan_step_check` asks for (async hook)."""
    plan = plan_step_check(
        step_name, success_states=success_states, failure_states=failure_states, known_name=known_name
    )
    answer: Any = None
    while True:
        try:
            query = plan.send(answer)
        except StopIteration as done:
            return done.value
        if isinstance(query, StepQuery):
            try:
                answer = await hook.aget_step_output(
                    workflow_name, instance_id, query.step_name, step_type, account_id=account_id
                )
            except CloudflareWorkflowsNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            try:
                answer = await hook.aget_instance(
                    workflow_name, instance_id, simple=query.simple, account_id=account_id
                )
            except CloudflareWorkflowsNotFoundError as error:
                raise instance_not_found_error(error, workflow_name, instance_id) from None


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

    def _what(self) -> str:
        raise NotImplementedError

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        raise NotImplementedError

    def _event(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {
            "status": status,
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "error": check.error.to_dict() if check and check.error else None,
            "message": message,
        }

    def _error_delay(self, failures: int, error: CloudflareWorkflowsError) -> float:
        base = max(self.poll_interval, MIN_ERROR_BACKOFF_SECONDS)
        delay = min(base * 2 ** (failures - 1), MAX_ERROR_BACKOFF_SECONDS)
        if isinstance(error, CloudflareWorkflowsRateLimitError) and error.retry_after:
            delay = max(delay, min(error.retry_after, MAX_ERROR_BACKOFF_SECONDS))
        return delay

    async def run(self) -> AsyncIterator[TriggerEvent]:
        hook = CloudflareWorkflowsHook(self.cloudflare_conn_id)
        failures = 0
        last: Check | None = None
        logged: str | None = None
        try:
            while True:
                try:
                    check = await self._check(hook)
                except CloudflareWorkflowsError as error:
                    if not protocol.is_transient(error):
                        message = f"Cloudflare API error while waiting for {self._what()}: {error}"
                        yield TriggerEvent(self._event(EVENT_ERROR, last, message))
                        return
                    failures += 1
                    delay = self._error_delay(failures, error)
                    self.log.warning(
                        "Transient Cloudflare error (%d in a row), polling again in %.1f s: %s",
                        failures,
                        delay,
                        error,
                    )
                except AirflowException as error:  # e.g. the connection does not exist
                    message = f"Cannot poll Cloudflare for {self._what()}: {error}"
                    yield TriggerEvent(self._event(EVENT_ERROR, last, message))
                    return
                else:
                    failures = 0
                    last = check
                    if check.verdict is not Verdict.PENDING:
                        yield TriggerEvent(self._event(check.verdict.value, check, check.message))
                        return
                    if check.message != logged:  # each change once, not every poll
                        self.log.log(logging.WARNING if check.error else logging.INFO, "%s", check.message)
                        logged = check.message
                    delay = self.poll_interval
                remaining = self.end_time - time.time()
                if remaining <= 0:
                    seen = last.message if last else "no usable answer from Cloudflare"
                    message = f"Timed out waiting for {self._what()}; last seen: {seen}"
                    yield TriggerEvent(self._event(EVENT_TIMEOUT, last, message))
                    return
                await asyncio.sleep(min(delay, remaining))
        finally:
            await hook.aclose()


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

    def _what(self) -> str:
        return f"step {self.step_name!r} ({self.step_type}) of instance {self.instance_id!r}"

    def _event(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {
            **super()._event(status, check, message),
            "step_name": check.step_name if check and check.step_name else self.step_name,
            "step_type": self.step_type,
            "step_status": check.status if check else None,
        }

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        check = await arun_step_check(
            hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            step_name=self.step_name,
            step_type=self.step_type,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
            known_name=self._known_name,
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
    """

    def _what(self) -> str:
        return f"instance {self.instance_id!r} of workflow {self.workflow_name!r}"

    def _event(self, status: str, check: Check | None, message: str) -> dict[str, Any]:
        return {**super()._event(status, check, message), "instance_status": check.status if check else None}

    async def _check(self, hook: CloudflareWorkflowsHook) -> Check:
        try:
            details = await hook.aget_instance(
                self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
            )
        except CloudflareWorkflowsNotFoundError as error:
            raise instance_not_found_error(error, self.workflow_name, self.instance_id) from None
        return evaluate_instance(
            details, success_states=self.success_states, failure_states=self.failure_states
        )
