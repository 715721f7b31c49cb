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
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn
from urllib.parse import urlsplit

from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_cfworkflows.deadlines import seconds_left
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.waiting import (
    Check,
    InstanceQuery,
    StepCheckPlan,
    StepQuery,
    Verdict,
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


class StepLook(NamedTuple):
    """A step check, and the full instance details it was decided on (None when it read none)."""

    check: Check
    details: dict[str, Any] | None


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
) -> StepLook:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.waiting.plan_step_check` asks for (sync hook).

    One request per look (the instance details), plus ``/step`` only where they cannot answer. A
    byte-stream output is never downloaded here: only the response headers are read. Returns the check
    with the details it was decided on, so a failure report needs no second read of them.
    """
    plan = _step_plan(step_name, step_type, success_states, failure_states, known_name)
    details: dict[str, Any] | None = None
    query = _advance(plan, None)
    while not isinstance(query, Check):
        if isinstance(query, StepQuery):
            try:
                with hook.stream_step_output(
                    workflow_name, instance_id, query.step_name, step_type, account_id=account_id
                ) as stream:
                    answer: Any = stream.step
            except CloudflareWorkflowsNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            answer = get_instance_details(
                hook, workflow_name, instance_id, simple=query.simple, account_id=account_id
            )
            details = None if query.simple else answer
        query = _advance(plan, answer)
    return StepLook(query, details)


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
    details: dict[str, Any],
    known_name: str | None = None,
) -> Check:
    """
    Make the calls :func:`~airflow_provider_cfworkflows.waiting.plan_step_check` asks for (async hook).

    :param details: full instance details already read (a shared watcher's look): they answer the
        plan's instance query, so the check itself costs a request only where ``/step`` is needed.
    """
    plan = _step_plan(step_name, step_type, success_states, failure_states, known_name)
    query = _advance(plan, None)
    while not isinstance(query, Check):
        answer: Any
        if isinstance(query, StepQuery):
            try:
                answer = await hook.aget_step_output(
                    workflow_name, instance_id, query.step_name, step_type, account_id=account_id
                )
            except CloudflareWorkflowsNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            answer = details
        query = _advance(plan, answer)
    return query


def _step_plan(
    step_name: str,
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    known_name: str | None,
) -> StepCheckPlan:
    """The step-check plan both drivers run."""
    return plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success_states,
        failure_states=failure_states,
        known_name=known_name,
    )


def _advance(plan: StepCheckPlan, answer: Any) -> StepQuery | InstanceQuery | Check:
    """Give the plan the answer to its last call: its next call, or its decision once it has one."""
    try:
        return plan.send(answer)
    except StopIteration as done:
        return done.value


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


class Lookout:
    """
    Makes the looks of one wait and decides what a failed look means.

    A transient error (429, 5xx, no complete response, ...) after the hook's own retries means "look
    again later", logged as one short line with its cause in full. But when the API has not answered
    once in this task (no HTTP response at all: the host does not resolve, the connection is refused,
    nothing comes back), looking again cannot help a wrong host or a stopped server: the look raises
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowsConnectionError` naming the host
    and the cause, which fails the task at once (task ``retries`` still apply: the API may be down).

    The caller bounds each look with :func:`~airflow_provider_cfworkflows.deadlines.calls_end_by` (the
    wait's deadline): a look that is not done once the deadline has passed raises
    ``AirflowSensorTimeout`` (no retry) saying what was seen last.

    :param log: the task's logger.
    :param hook: the hook the looks use (for the API's address in messages).
    :param awaited: what the wait waits for (``step 'x' (step) of instance 'i'``), for messages.
    :param answered: the API already answered in this task (an earlier poke, or a create call).
    """

    def __init__(
        self,
        log: logging.Logger | Any,
        hook: CloudflareWorkflowsHook,
        *,
        awaited: str,
        answered: bool = False,
    ) -> None:
        self.log = log
        self.hook = hook
        self.awaited = awaited
        self.answered = answered
        self.last_seen: Check | None = None
        self.last_error: CloudflareWorkflowsError | None = None

    def look(self, check: Callable[[], Check]) -> Check | None:
        """Run one check: its result, or None when Cloudflare did not answer usably this time."""
        result = self._attempt(check)
        if result is not None:
            self.last_seen = result
        if (result is None or result.verdict is Verdict.PENDING) and deadline_passed():
            raise self.timeout_error()
        return result

    def timeout_error(self) -> AirflowSensorTimeout:
        """The wait's timeout (fails without retry), saying what was seen last."""
        message = timeout_message(self.awaited, self.last_seen, self.last_error)
        return AirflowSensorTimeout(f"Sensor timed out: {message}")

    def _attempt(self, check: Callable[[], Check]) -> Check | None:
        try:
            result = check()
        except CloudflareWorkflowsError as error:
            if error.http_status is not None:
                self.answered = True
            if not error.is_transient:
                raise
            if deadline_passed():
                return None  # cut short by the wait's own deadline: the timeout says so
            self.last_error = error
            if not self.answered and isinstance(error, CloudflareWorkflowsConnectionError):
                raise self._unreachable(error) from error
            self.log.warning(
                "Cloudflare did not answer usably this time; looking again later: %s", brief_error(error)
            )
            return None
        self.answered = True
        self.last_error = None
        return result

    def _unreachable(self, error: CloudflareWorkflowsConnectionError) -> CloudflareWorkflowsConnectionError:
        settings = self.hook.settings
        host = urlsplit(settings.base_url).netloc
        return CloudflareWorkflowsConnectionError(
            f"Could not reach the Cloudflare Workflows API at {host} ({settings.base_url}): no response "
            f"to the first look of this task, after {settings.max_retries} retries: "
            f"{transport_cause(error)}. Check the connection's host (and that the API or emulator is "
            "running and reachable from this worker); the task fails now instead of waiting for "
            f"{self.awaited} until its timeout.",
            method=error.method,
            path=error.path,
        )


def deadline_passed() -> bool:
    """Whether the deadline of the calls in progress (:mod:`.deadlines`) has passed."""
    left = seconds_left()
    return left is not None and left <= 0


def transport_cause(error: BaseException) -> str:
    """
    Why a request got no complete response, in full: the operating system's error at the root of the
    chain (``ConnectionRefusedError: [Errno 111] Connection refused``, ``gaierror: [Errno -2] Name or
    service not known``, ``TimeoutError: timed out``), else the error's own text.
    """
    root: tuple[int, OSError] | None = None
    seen: set[int] = set()
    pending: list[tuple[BaseException | None, int]] = [(error, 0)]
    while pending:
        current, depth = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and not _is_wrapper(current) and (root is None or depth > root[0]):
            root = (depth, current)
        reason = getattr(current, "reason", None)  # urllib3's MaxRetryError keeps its cause here
        linked = [*current.args, reason, current.__context__, current.__cause__]
        pending.extend((item, depth + 1) for item in linked if isinstance(item, BaseException))
    if root is None:
        return error.message if isinstance(error, CloudflareWorkflowsError) else str(error)
    return f"{type(root[1]).__name__}: {root[1]}"


def _is_wrapper(error: OSError) -> bool:
    """requests' and urllib3's errors subclass OSError but only wrap the real one (with its long repr)."""
    return type(error).__module__.split(".")[0] in ("requests", "urllib3", "httpx", "httpcore")


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
    details: Mapping[str, Any] | None = None,
) -> NoReturn:
    """
    Log a step's failure readably (the remote error, each failed attempt), then fail without retries.

    :param step_name: the exact logged name when the step exists (its attempts are then looked up in
        the instance's step log); None when it never ran.
    :param details: the instance's full details, when the check that failed already read them.
    """
    lines = (
        None if step_name is None else partial(step_failure_lines, step_name=step_name, step_type=step_type)
    )
    _log_remote_failure(hook, log, workflow_name, instance_id, account_id, message, lines, details)
    raise CloudflareWorkflowStepFailedError(message)


def _log_remote_failure(
    hook: CloudflareWorkflowsHook,
    log: logging.Logger | Any,
    workflow_name: str,
    instance_id: str,
    account_id: str | None,
    message: str,
    lines_from: Callable[[Mapping[str, Any]], list[str]] | None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """
    Log ``message``, then the lines ``lines_from`` reads from the instance's full details (read here
    unless given).
    """
    log.error("%s", message)
    if lines_from is None:
        return
    if details is None:
        try:
            details = hook.get_instance(workflow_name, instance_id, account_id=account_id)
        except CloudflareWorkflowsError as lookup_error:
            log.warning("Could not read the instance's step log: %s", lookup_error)
            return
    for line in lines_from(details):
        log.error("  %s", line)
