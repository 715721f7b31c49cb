"""A task's wait for a step or an instance: poke, wait, defer and resume, one class per thing waited for.

The sensors and the create-and-wait operator wait through :class:`StepWait` and :class:`InstanceWait`,
so they cannot drift apart: a transient API error means "look again later", each change is logged
once, a failure state logs the remote error and failed attempts and fails without retry, a timeout
raises ``AirflowSensorTimeout`` (no retry) on the worker and after a deferral alike, and a deferral
gets the same grace period.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import timedelta
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, NoReturn, TypeVar

from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowTaskTerminated

from airflow_provider_cfworkflows.checks import (
    Check,
    Verdict,
    describe_awaited_instance,
    describe_awaited_step,
)
from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowInstanceRestartableError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.instance_details import instance_failure_lines, step_failure_lines
from airflow_provider_cfworkflows.looks import (
    ProgressLog,
    brief_error,
    deadline_passed,
    get_instance_details,
    run_instance_check,
    run_step_check,
    timeout_message,
)
from airflow_provider_cfworkflows.models import instance_output
from airflow_provider_cfworkflows.transport import unreachable_message
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
    InstanceWaitEvent,
    StepWaitEvent,
    WaitEvent,
)

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.triggers.base import BaseTrigger

    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

# A deferred task may stay deferred this much longer than its trigger's own deadline: the trigger's
# timeout event (which says what was last seen) normally ends the wait; the scheduler's only if it never
# comes.
DEFERRAL_GRACE_SECONDS = 60

_Event = TypeVar("_Event", bound=WaitEvent)


class _TaskWait(Generic[_Event]):
    """
    What a step wait and an instance wait share: the looks and what a failed look means, progress,
    the wait loop, the timeout, deferral and resumption.

    A transient error (429, 5xx, no complete response, ...) after the hook's own retries means "look
    again later", logged as one short line with its cause in full. But when the API has not answered
    once in this task (no HTTP response at all: the host does not resolve, the connection is refused,
    nothing comes back), looking again cannot help a wrong host or a stopped server: the look raises
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowsConnectionError` naming the host
    and the cause, which fails the task at once (task ``retries`` still apply: the API may be down).

    The arguments are those :class:`InstanceWait` documents (its own two aside).
    """

    def __init__(
        self,
        *,
        hook: CloudflareWorkflowsHook,
        log: logging.Logger | Any,
        workflow_name: str,
        instance_id: str,
        account_id: str | None,
        cloudflare_conn_id: str,
        success_states: tuple[str, ...],
        failure_states: tuple[str, ...],
        deadline: float | None = None,
        answered: bool = True,
    ) -> None:
        self.hook = hook
        self.log = log
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id
        self.success_states = success_states
        self.failure_states = failure_states
        self.deadline = deadline
        self.answered = answered
        self.last_seen: Check | None = None
        self.last_error: CloudflareWorkflowsError | None = None
        self._progress = ProgressLog(log)

    # --- what the subclasses say -------------------------------------------------------------------

    def describe_awaited(self) -> str:
        """What the wait waits for, in messages."""
        raise NotImplementedError

    def _check(self) -> Check:
        """One look (its API calls) and the decision on it."""
        raise NotImplementedError

    def _succeeded(self, check: Check) -> Check:
        """The successful check as :meth:`poke` returns it."""
        return check

    def fail(self, message: str, check: Check | None = None) -> NoReturn:
        """Log the remote failure readably, then fail the task without retry."""
        raise NotImplementedError

    # The trigger a deferral hands the wait to, and its arguments beyond those all waits have.
    _trigger_type: Callable[..., BaseTrigger]

    def _trigger_arguments(self) -> dict[str, Any]:
        return {}

    def _event_from(self, event: Any) -> _Event:
        raise NotImplementedError

    # --- looking ------------------------------------------------------------------------------------

    def poke(self) -> Check | None:
        """
        Look once: the successful check when done, None when not yet (or when Cloudflare did not answer
        usably). A failure state raises after logging why; so does the deadline passing
        (``AirflowSensorTimeout``).
        """
        with calls_end_by(self.deadline):
            check = self._look()
            if (check is None or check.verdict is Verdict.PENDING) and deadline_passed():
                raise self.timeout_error()
            if check is None:
                return None
            if check.verdict is Verdict.PENDING:
                self._progress.report(check)
                return None
            if check.verdict is Verdict.FAILURE:
                self.fail(check.message, check)
        self.log.info("%s", check.message)
        return self._succeeded(check)

    def _look(self) -> Check | None:
        """Run one check: its result, or None when Cloudflare did not answer usably this time."""
        try:
            result = self._check()
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
        self.answered, self.last_error, self.last_seen = True, None, result
        return result

    def _unreachable(self, error: CloudflareWorkflowsConnectionError) -> CloudflareWorkflowsConnectionError:
        return CloudflareWorkflowsConnectionError(
            f"{unreachable_message(self.hook.settings.base_url, error)} No response to the first look of "
            f"this task: it fails now instead of waiting for {self.describe_awaited()} until its timeout.",
            request_sent=error.request_sent,
            method=error.method,
            path=error.path,
        )

    def timeout_error(self) -> AirflowSensorTimeout:
        """The wait's timeout (fails without retry), saying what was seen last."""
        message = timeout_message(self.describe_awaited(), self.last_seen, self.last_error)
        return AirflowSensorTimeout(f"Sensor timed out: {message}")

    def wait(self, *, timeout: float, poll_interval: float, stop: threading.Event | None = None) -> Check:
        """
        Poke every ``poll_interval`` seconds until done; ``AirflowSensorTimeout`` after ``timeout``.

        :param stop: set by ``on_kill``: the wait ends at once with ``AirflowTaskTerminated`` (Airflow
            calls ``on_kill`` from its SIGTERM handler and lets the task run on until it ends).
        """
        ends = time.monotonic() + timeout
        deadline = time.time() + timeout
        self.deadline = deadline if self.deadline is None else min(self.deadline, deadline)
        stop = stop or threading.Event()
        while True:
            check = self.poke()
            if check is not None:
                return check
            remaining = ends - time.monotonic()
            if remaining <= 0:
                raise self.timeout_error()
            if stop.wait(min(poll_interval, remaining)):
                raise AirflowTaskTerminated(
                    f"Stopped waiting for {self.describe_awaited()}: the task is being killed."
                )

    # --- deferring ------------------------------------------------------------------------------------

    def defer(self, task: BaseOperator, *, end_time: float, poll_interval: float) -> NoReturn:
        """
        Defer ``task`` to this wait's trigger until ``end_time``; it resumes in ``execute_complete``.
        The deferral's own timeout is ``end_time`` plus :data:`DEFERRAL_GRACE_SECONDS`.
        """
        remaining = max(end_time - time.time(), 0.0)
        trigger = self._trigger_type(
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            success_states=list(self.success_states),
            failure_states=list(self.failure_states),
            end_time=end_time,
            poll_interval=poll_interval,
            account_id=self.account_id,
            cloudflare_conn_id=self.cloudflare_conn_id,
            **self._trigger_arguments(),
        )
        task.defer(
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(seconds=remaining + DEFERRAL_GRACE_SECONDS),
        )
        raise AssertionError("unreachable: defer() raises TaskDeferred")  # pragma: no cover

    def resume(self, event: Any) -> _Event:
        """
        Act on the trigger's event once the task resumes: it is validated (a timeout or error event
        raises), a success is returned, a failure fails the task as a poke would.
        """
        resumed = self._event_from(event)
        self.log.info("Resumed after deferral; the trigger reported %s.", resumed.status)
        if not resumed.is_success:
            self.fail(resumed.message)
        self.log.info("%s", resumed.message)
        return resumed

    # --- failure reports ------------------------------------------------------------------------------

    def _log_failure(
        self,
        message: str,
        lines_from: Callable[[Mapping[str, Any]], list[str]] | None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        """Log ``message``, then the lines ``lines_from`` reads from the instance's full details."""
        self.log.error("%s", message)
        if lines_from is None:
            return
        if details is None:
            try:
                details = self.hook.get_instance(
                    self.workflow_name, self.instance_id, account_id=self.account_id
                )
            except CloudflareWorkflowsError as lookup_error:
                self.log.warning("Could not read the instance's step log: %s", lookup_error)
                return
        for line in lines_from(details):
            self.log.error("  %s", line)


class StepWait(_TaskWait[StepWaitEvent]):
    """
    One wait for one step to reach a success or failure state (or to become one it can never leave).

    :param step_name: the step, as written in the Workflow code or as logged (see the step sensor).
    :param step_type: ``"step"`` or ``"waitForEvent"``.
    :param kwargs: as :class:`InstanceWait` (hook, log, workflow, instance, account, connection, states,
        deadline, answered).
    """

    def __init__(self, *, step_name: str, step_type: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.step_name = step_name
        self.step_type = step_type
        # The exact logged name once a look found it: tried first from then on.
        self._known_name: str | None = None

    def describe_awaited(self) -> str:
        """``step 'x' (step) of instance 'i' of workflow 'wf'``."""
        return describe_awaited_step(self.workflow_name, self.instance_id, self.step_name, self.step_type)

    def _check(self) -> Check:
        check = run_step_check(
            self.hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            step_name=self.step_name,
            step_type=self.step_type,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
            instance_label=describe_awaited_instance(self.workflow_name, self.instance_id),
            known_name=self._known_name,
        )
        self._known_name = check.step_name or self._known_name
        return check

    def fail(self, message: str, check: Check | None = None) -> NoReturn:
        """
        Log the step's failure (the remote error, each failed attempt, read from the failing look's
        details, or read now after a deferral), then raise ``CloudflareWorkflowStepFailedError``.
        """
        step_name = check.step_name if check is not None else self._known_name
        lines = None
        if step_name is not None:
            lines = partial(step_failure_lines, step_name=step_name, step_type=self.step_type)
        self._log_failure(message, lines, check.details if check is not None else None)
        raise CloudflareWorkflowStepFailedError(message)

    def _event_from(self, event: Any) -> StepWaitEvent:
        resumed = StepWaitEvent.from_trigger(event)
        if resumed.step_status is not None:
            self._known_name = resumed.step_name  # the exact name the trigger found
        return resumed

    _trigger_type = CloudflareWorkflowStepTrigger

    def _trigger_arguments(self) -> dict[str, Any]:
        return {"step_name": self.step_name, "step_type": self.step_type}


class InstanceWait(_TaskWait[InstanceWaitEvent]):
    """
    One wait for one instance to reach a success or failure state.

    :param hook: the task's hook.
    :param log: the task's logger.
    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param account_id: the account (None: the connection's login).
    :param cloudflare_conn_id: the connection the trigger uses when the task defers.
    :param success_states: instance statuses that end the wait successfully.
    :param failure_states: instance statuses that fail it.
    :param deadline: when the wait times out (``time.time()`` seconds): every look's API calls end by
        then (:func:`~airflow_provider_cfworkflows.deadlines.calls_end_by`). None: :meth:`wait` sets it.
    :param answered: whether the API already answered in this task: True (default) for the
        create-and-wait operator, whose create call got an answer; the instance sensor passes False
        for its first look. Until the API has answered, a look that gets no response at all fails the
        task at once.
    :param terminate_on_kill: a deferred wait's trigger terminates the instance if a user kills the
        task (only for instances the task created).
    :param retry_on: failure states that fail the task *with* retry
        (:class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowInstanceRestartableError`):
        the create-and-wait operator's ``retry_from_failure``. Other failure states fail it without.
    """

    def __init__(
        self, *, terminate_on_kill: bool = False, retry_on: tuple[str, ...] = (), **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.terminate_on_kill = terminate_on_kill
        self.retry_on = retry_on
        self._resumed_status: str | None = None  # the status the trigger's event reported

    def describe_awaited(self) -> str:
        """``instance 'i' of workflow 'wf'``."""
        return describe_awaited_instance(self.workflow_name, self.instance_id)

    def _check(self) -> Check:
        return run_instance_check(
            self.hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
        )

    def _succeeded(self, check: Check) -> Check:
        """The check with its ``output`` decoded (:func:`.models.instance_output`)."""
        return replace(check, output=instance_output(check.output))

    def read_output(self) -> Any:
        """The instance's output, decoded as :meth:`poke` decodes it (one GET; after a deferral)."""
        details = get_instance_details(
            self.hook, self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
        )
        return instance_output(details.get("output"))

    def fail(self, message: str, check: Check | None = None) -> NoReturn:
        """
        Log the instance's failure readably (its error and failed steps), then fail: without retry,
        unless the instance's status is one of ``retry_on``.
        """
        self._log_failure(message, instance_failure_lines)
        status = check.status if check is not None else self._resumed_status
        if status in self.retry_on:
            raise CloudflareWorkflowInstanceRestartableError(
                f"{message} retry_from_failure: Airflow retries the task, and the retry restarts the "
                "instance from its failed step."
            )
        raise CloudflareWorkflowInstanceFailedError(message)

    def _event_from(self, event: Any) -> InstanceWaitEvent:
        resumed = InstanceWaitEvent.from_trigger(event)
        self._resumed_status = resumed.instance_status
        return resumed

    _trigger_type = CloudflareWorkflowInstanceTrigger

    def _trigger_arguments(self) -> dict[str, Any]:
        return {"terminate_on_kill": self.terminate_on_kill}
