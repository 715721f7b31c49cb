"""The API calls a look makes, side by side for both transports, and how a look's outcome is put in words.

A look is one round of calls during a wait (normally one ``GET`` of the instance details). The step
check (:func:`~airflow_provider_cfworkflows.checks.plan_step_check`) says which calls to make; this
module makes them with the sync hook (sensors and operators on a worker) and the async hook (triggers),
so the two paths cannot drift apart.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from airflow_provider_cfworkflows.checks import (
    Check,
    InstanceQuery,
    StepCheckPlan,
    StepQuery,
    evaluate_instance,
    instance_not_found_error,
    plan_step_check,
)
from airflow_provider_cfworkflows.deadlines import seconds_left
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowStepNotFoundError,
)
from airflow_provider_cfworkflows.single_flight import SingleFlight
from airflow_provider_cfworkflows.transport import transport_cause

if TYPE_CHECKING:
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook


# --- the step-check plan, driven by each transport -------------------------------------------------


def run_step_check(
    hook: CloudflareWorkflowsHook,
    *,
    workflow_name: str,
    instance_id: str,
    step_name: str,
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    account_id: str | None,
    instance_label: str,
    known_name: str | None = None,
) -> Check:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.checks.plan_step_check` asks for (sync hook).

    One request per look (the instance details), plus ``/step`` only where they cannot answer. A
    byte-stream output is never downloaded here: only the response headers are read.
    """
    plan = plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success_states,
        failure_states=failure_states,
        instance_label=instance_label,
        known_name=known_name,
    )
    answer: Any = None
    while not isinstance(query := _advance(plan, answer), Check):
        if isinstance(query, StepQuery):
            try:
                with hook.find_step_output(
                    workflow_name, instance_id, query.candidates, step_type, account_id=account_id
                ) as (found, stream):
                    answer = (found, stream.step)
            except CloudflareWorkflowStepNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            answer = get_instance_details(
                hook, workflow_name, instance_id, simple=False, account_id=account_id
            )
    return query


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
    instance_label: str,
    details: dict[str, Any],
    known_name: str | None = None,
) -> Check:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.checks.plan_step_check` asks for (async hook).

    :param details: full instance details already read (a shared watcher's look): they answer the
        plan's instance query, so the check itself costs a request only where ``/step`` is needed.
    """
    plan = plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success_states,
        failure_states=failure_states,
        instance_label=instance_label,
        known_name=known_name,
    )
    answer: Any = None
    while not isinstance(query := _advance(plan, answer), Check):
        answer = details
        if isinstance(query, StepQuery):
            try:
                answer = await hook.afind_step_status(
                    workflow_name, instance_id, query.candidates, step_type, account_id=account_id
                )
            except CloudflareWorkflowStepNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
    return query


def _advance(plan: StepCheckPlan, answer: Any) -> InstanceQuery | StepQuery | Check:
    """Give the plan the answer to its last call: its next call, or its decision once it has one."""
    try:
        return plan.send(answer)
    except StopIteration as done:
        return done.value


# --- the instance look, by each transport -----------------------------------------------------------

# The sync looks of this process in flight, by instance (the async ones are shared by the watchers).
_instance_looks: SingleFlight[dict[str, Any]] = SingleFlight()


def get_instance_details(
    hook: CloudflareWorkflowsHook,
    workflow_name: str,
    instance_id: str,
    *,
    simple: bool,
    account_id: str | None,
) -> dict[str, Any]:
    """
    The instance's details; a 404 says what was looked for. Looks at the same instance made at the same
    time in this process share one request (:mod:`~airflow_provider_cfworkflows.single_flight`).
    """
    key = (hook.cloudflare_conn_id, account_id, workflow_name, instance_id, simple)
    try:
        return _instance_looks.run(
            key,
            lambda: hook.get_instance(workflow_name, instance_id, simple=simple, account_id=account_id),
        )
    except CloudflareWorkflowsNotFoundError as error:
        raise instance_not_found_error(error, workflow_name, instance_id) from None


async def aget_instance_details(
    hook: CloudflareWorkflowsHook,
    workflow_name: str,
    instance_id: str,
    *,
    simple: bool,
    account_id: str | None,
) -> dict[str, Any]:
    """Async :func:`get_instance_details`."""
    try:
        return await hook.aget_instance(workflow_name, instance_id, simple=simple, account_id=account_id)
    except CloudflareWorkflowsNotFoundError as error:
        raise instance_not_found_error(error, workflow_name, instance_id) from None


def run_instance_check(
    hook: CloudflareWorkflowsHook,
    *,
    workflow_name: str,
    instance_id: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    account_id: str | None,
) -> Check:
    """One look at an instance (``simple=true``) and the decision on it (sync hook)."""
    details = get_instance_details(hook, workflow_name, instance_id, simple=True, account_id=account_id)
    return evaluate_instance(details, success_states=success_states, failure_states=failure_states)


# --- what a look saw, in words -----------------------------------------------------------------------


class ProgressLog:
    """
    Logs what the looks of a wait see, each change once (a new status, a new step, a retry); repeats
    go to debug.

    :param log: the task's (or trigger's) logger.
    """

    def __init__(self, log: logging.Logger | Any) -> None:
        self.log = log
        self._last: str | None = None

    def report(self, check: Check) -> None:
        """Log a pending check: a warning when it carries an error (a retry), else info."""
        if check.message == self._last:
            self.log.debug("%s", check.message)
            return
        self.log.log(logging.WARNING if check.error else logging.INFO, "%s", check.message)
        self._last = check.message


def deadline_passed() -> bool:
    """Whether the deadline of the calls in progress (:mod:`.deadlines`) has passed."""
    left = seconds_left()
    return left is not None and left <= 0


def brief_error(error: CloudflareWorkflowsError) -> str:
    """
    One line for a transient error: what happened, the HTTP status, Cloudflare's errors and the
    ``cf-ray``, without the request path (the wait says what it looks at); for no response, the cause.
    """
    if isinstance(error, CloudflareWorkflowsConnectionError):
        return f"no complete response ({transport_cause(error)})"
    parts = [error.message]
    if error.http_status is not None:
        parts.append(f"HTTP {error.http_status}")
    if isinstance(error, CloudflareWorkflowsRateLimitError) and error.retry_after is not None:
        parts.append(f"Retry-After {error.retry_after:g} s")
    parts.extend(str(detail) for detail in error.errors)
    if error.cf_ray:
        parts.append(f"cf-ray {error.cf_ray}")
    return "; ".join(parts)


def timeout_message(
    awaited: str, last: Check | None, last_error: CloudflareWorkflowsError | None = None
) -> str:
    """
    What a wait that timed out says: what it waited for, what it saw last, and the transient error
    of its last look if that failed (a rate limit that outlasts the wait names itself here).
    """
    seen = last.message if last else "no usable answer from Cloudflare"
    error = f"; the last look failed: {brief_error(last_error)}" if last_error is not None else ""
    return f"Timed out waiting for {awaited}; last seen: {seen}{error}"
