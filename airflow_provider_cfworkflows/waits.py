"""How a wait talks to the API: the drivers of the step-check plan, the instance look, progress logs and
failure reports, shared by the triggers (async) and by the sensors and operators (sync).

:mod:`.waiting` decides (pure code); this module makes the calls it asks for, side by side for both
transports, so the sync and async paths cannot drift apart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, NoReturn

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.waiting import (
    Check,
    StepQuery,
    evaluate_instance,
    instance_failure_lines,
    instance_not_found_error,
    plan_step_check,
    step_failure_lines,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

# A deferred task may stay deferred this much longer than its trigger's own deadline: the trigger's
# timeout event (which says what was last seen) normally ends the wait; the scheduler's only if it never
# comes.
DEFERRAL_GRACE_SECONDS = 60


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
    known_name: str | None = None,
) -> Check:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.waiting.plan_step_check` asks for (sync hook).

    One request per look (the instance details), plus ``/step`` only where they cannot answer. A
    byte-stream output is never downloaded here: only the response headers are read.
    """
    plan = plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success_states,
        failure_states=failure_states,
        known_name=known_name,
    )
    answer: Any = None
    while True:
        try:
            query = plan.send(answer)
        except StopIteration as done:
            return done.value
        if isinstance(query, StepQuery):
            try:
                with hook.stream_step_output(
                    workflow_name, instance_id, query.step_name, step_type, account_id=account_id
                ) as stream:
                    answer = stream.step
            except CloudflareWorkflowsNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            answer = get_instance_details(
                hook, workflow_name, instance_id, simple=query.simple, account_id=account_id
            )


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
    details: dict[str, Any] | None = None,
) -> Check:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.waiting.plan_step_check` asks for (async hook).

    :param details: full instance details already read (a shared watcher's look): they answer the
        plan's instance query, so the check itself costs a request only where ``/step`` is needed.
    """
    plan = plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success_states,
        failure_states=failure_states,
        known_name=known_name,
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
        elif details is not None and not query.simple:
            answer, details = details, None
        else:
            answer = await aget_instance_details(
                hook, workflow_name, instance_id, simple=query.simple, account_id=account_id
            )


# --- the instance look, by each transport -----------------------------------------------------------


def get_instance_details(
    hook: CloudflareWorkflowsHook,
    workflow_name: str,
    instance_id: str,
    *,
    simple: bool,
    account_id: str | None,
) -> dict[str, Any]:
    """The instance's details; a 404 says what was looked for."""
    try:
        return hook.get_instance(workflow_name, instance_id, simple=simple, account_id=account_id)
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


# --- progress, transient errors, timeouts, deferral -------------------------------------------------


class ProgressLog:
    """
    Logs what a wait sees, each change once (a new status, a new step, a retry); repeats go to debug.

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


def check_unless_transient(log: logging.Logger | Any, check: Callable[[], Check]) -> Check | None:
    """
    Run one check; None when Cloudflare did not answer usably (a transient error after the hook's own
    retries): the wait looks again at its next poll. Other errors propagate.
    """
    try:
        return check()
    except CloudflareWorkflowsError as error:
        if not error.is_transient:
            raise
        log.warning("Cloudflare did not answer usably this time; looking again later: %s", error)
        return None


def timeout_message(awaited: str, last: Check | None) -> str:
    """What a wait that timed out says: what it waited for and what it saw last."""
    seen = last.message if last else "no usable answer from Cloudflare"
    return f"Timed out waiting for {awaited}; last seen: {seen}"


def defer_wait(task: BaseOperator, trigger: BaseTrigger, *, end_time: float) -> NoReturn:
    """
    Defer ``task`` to ``trigger`` (whose deadline is ``end_time``), resuming in ``execute_complete``.

    The deferral's own timeout is the trigger's deadline plus :data:`DEFERRAL_GRACE_SECONDS`.
    """
    remaining = max(end_time - time.time(), 0.0)
    task.defer(
        trigger=trigger,
        method_name="execute_complete",
        timeout=timedelta(seconds=remaining + DEFERRAL_GRACE_SECONDS),
    )
    raise AssertionError("unreachable: defer() raises TaskDeferred")  # pragma: no cover


# --- failure reports ---------------------------------------------------------------------------------


def fail_instance(
    hook: CloudflareWorkflowsHook,
    log: logging.Logger | Any,
    workflow_name: str,
    instance_id: str,
    account_id: str | None,
    message: str,
) -> NoReturn:
    """Log an instance's failure readably (its error and failed steps), then fail without retries."""
    _log_remote_failure(hook, log, workflow_name, instance_id, account_id, message, instance_failure_lines)
    raise CloudflareWorkflowInstanceFailedError(message)


def fail_step(
    hook: CloudflareWorkflowsHook,
    log: logging.Logger | Any,
    *,
    workflow_name: str,
    instance_id: str,
    account_id: str | None,
    step_name: str | None,
    step_type: str,
    message: str,
) -> NoReturn:
    """
    Log a step's failure readably (the remote error, each failed attempt), then fail without retries.

    :param step_name: the exact logged name when the step exists (its attempts are then looked up in
        the instance's step log); None when it never ran.
    """
    lines = (
        None if step_name is None else partial(step_failure_lines, step_name=step_name, step_type=step_type)
    )
    _log_remote_failure(hook, log, workflow_name, instance_id, account_id, message, lines)
    raise CloudflareWorkflowStepFailedError(message)


def _log_remote_failure(
    hook: CloudflareWorkflowsHook,
    log: logging.Logger | Any,
    workflow_name: str,
    instance_id: str,
    account_id: str | None,
    message: str,
    lines_from: Callable[[Mapping[str, Any]], list[str]] | None,
) -> None:
    """Log ``message``, then the lines ``lines_from`` reads from the instance's full details."""
    log.error("%s", message)
    if lines_from is None:
        return
    try:
        details = hook.get_instance(workflow_name, instance_id, account_id=account_id)
    except CloudflareWorkflowsError as lookup_error:
        log.warning("Could not read the instance's step log: %s", lookup_error)
    else:
        for line in lines_from(details):
            log.error("  %s", line)
