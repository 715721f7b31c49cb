"""Sensors that wait for a Cloudflare Workflow step, or a whole instance, to reach a final status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
)

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.links.workflows import CloudflareWorkflowInstanceLink, persist_instance_link
from airflow_provider_cfworkflows.statuses import InstanceStatus, StepType
from airflow_provider_cfworkflows.triggers.workflows import (
    EVENT_ERROR,
    EVENT_FAILURE,
    EVENT_STATUSES,
    EVENT_TIMEOUT,
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)
from airflow_provider_cfworkflows.validation import (
    validate_instance_id,
    validate_step_name,
    validate_step_type,
    validate_workflow_name,
)
from airflow_provider_cfworkflows.waiting import (
    Check,
    StepQuery,
    Verdict,
    check_states,
    evaluate_instance,
    instance_failure_lines,
    instance_not_found_error,
    plan_step_check,
    step_failure_lines,
    summary_output,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

# Fields every success/failure event of each trigger carries (see the trigger docstrings).
STEP_EVENT_FIELDS = (
    "workflow_name",
    "instance_id",
    "step_name",
    "step_type",
    "step_status",
    "error",
    "message",
)
INSTANCE_EVENT_FIELDS = ("workflow_name", "instance_id", "instance_status", "error", "message")
# The task may stay deferred this much longer than the trigger's own deadline: the trigger's timeout
# event (which says what was last seen) normally ends the wait; the scheduler's only if it never comes.
DEFERRAL_GRACE_SECONDS = 60


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

    A byte-stream output is never downloaded here: only the response headers are read.
    """
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
                with hook.stream_step_output(
                    workflow_name, instance_id, query.step_name, step_type, account_id=account_id
                ) as stream:
                    answer = stream.step
            except CloudflareWorkflowsNotFoundError:
                answer = None  # not started yet, or no such step: the plan decides with the instance
        else:
            try:
                answer = hook.get_instance(
                    workflow_name, instance_id, simple=query.simple, account_id=account_id
                )
            except CloudflareWorkflowsNotFoundError as error:
                raise instance_not_found_error(error, workflow_name, instance_id) from None


def validated_event(event: Any, required: Sequence[str]) -> dict[str, Any]:
    """
    Check a trigger event's shape: it crosses the triggerer/worker boundary through the metadata DB.

    A timeout raises ``AirflowSensorTimeout`` (so ``soft_fail`` skips it), an error event an
    ``AirflowException`` with the trigger's message; success and failure events need ``required``.
    """
    if not isinstance(event, dict):
        raise AirflowException(f"The trigger sent no usable event: {event!r}")
    if event.get("status") not in EVENT_STATUSES:
        raise AirflowException(
            f"The trigger sent an event with an unknown status {event.get('status')!r}; expected one of "
            f"{sorted(EVENT_STATUSES)}."
        )
    if event["status"] == EVENT_TIMEOUT:
        raise AirflowSensorTimeout(f"Sensor timed out: {event.get('message')}")
    if event["status"] == EVENT_ERROR:
        raise AirflowException(event.get("message") or "The trigger failed without a message.")
    missing = [key for key in required if key not in event]
    if missing:
        raise AirflowException(f"The trigger's {event['status']} event lacks {missing}: {event!r}")
    error = event.get("error")
    if error is not None and not (isinstance(error, Mapping) and "name" in error and "message" in error):
        raise AirflowException(f"The trigger's event has an unreadable error {error!r}.")
    return event


def fail_instance(
    hook: CloudflareWorkflowsHook,
    log: Any,
    workflow_name: str,
    instance_id: str,
    account_id: str | None,
    message: str,
) -> NoReturn:
    """Log an instance's failure readably (its error and failed steps), then fail without retries."""
    log.error("%s", message)
    try:
        details = hook.get_instance(workflow_name, instance_id, account_id=account_id)
    except CloudflareWorkflowsError as lookup_error:
        log.warning("Could not read the instance's step log: %s", lookup_error)
    else:
        for line in instance_failure_lines(details):
            log.error("  %s", line)
    raise CloudflareWorkflowInstanceFailedError(message)


class _CloudflareWorkflowsSensor(BaseSensorOperator):
    """Shared plumbing: connection, hook, deferral, transient errors, progress logs, the instance link."""

    operator_extra_links = (CloudflareWorkflowInstanceLink(),)
    ui_color = "#f6821f"  # Cloudflare orange

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        account_id: str | None,
        cloudflare_conn_id: str,
        success_states: Sequence[str],
        failure_states: Sequence[str],
        deferrable: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id
        self.success_states, self.failure_states = check_states(success_states, failure_states)
        self.deferrable = deferrable
        self._logged: str | None = None

    @cached_property
    def hook(self) -> CloudflareWorkflowsHook:
        """The Cloudflare Workflows hook (built on first use, never in ``__init__``)."""
        return CloudflareWorkflowsHook(self.cloudflare_conn_id)

    def _validate_templated(self) -> None:
        """Check the templated arguments once they are rendered (before any call)."""
        validate_workflow_name(self.workflow_name)
        validate_instance_id(self.instance_id)

    def _trigger(self) -> CloudflareWorkflowStepTrigger | CloudflareWorkflowInstanceTrigger:
        raise NotImplementedError

    def _trigger_kwargs(self) -> dict[str, Any]:
        return {
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "success_states": list(self.success_states),
            "failure_states": list(self.failure_states),
            "end_time": time.time() + self.timeout,
            "poll_interval": self.poke_interval,
            "account_id": self.account_id,
            "cloudflare_conn_id": self.cloudflare_conn_id,
        }

    def execute(self, context: Context) -> Any:
        self._validate_templated()
        persist_instance_link(
            context,
            self.hook.settings.resolve_account_id(self.account_id),
            self.workflow_name,
            self.instance_id,
        )
        if not self.deferrable:
            return super().execute(context)
        # Poke once first and defer only if not done: a finished step needs no trigger (dbt, PR #30968).
        done, xcom_value = self._first_poke(context)
        if done:
            return xcom_value
        self.defer(
            trigger=self._trigger(),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    def _first_poke(self, context: Context) -> tuple[bool, Any]:
        """One poke, ending the task as ``BaseSensorOperator.execute`` would (soft/never/silent fail)."""
        try:
            result = self.poke(context)
        except (AirflowSensorTimeout, AirflowTaskTimeout, AirflowFailException) as error:
            if self.soft_fail or self.never_fail:
                raise AirflowSkipException(f"Skipping (soft_fail or never_fail is set): {error}") from error
            raise
        except AirflowSkipException:
            raise
        except Exception as error:
            if self.silent_fail:
                self.log.error("Sensor poke failed (silent_fail is set): %s", error)
                return False, None
            if self.never_fail:
                raise AirflowSkipException(f"Skipping (never_fail is set): {error}") from error
            raise
        if isinstance(result, PokeReturnValue):
            return bool(result.is_done), result.xcom_value
        return bool(result), None

    def _look(self, check: Callable[[], Check]) -> Check | None:
        """Run one check; a transient API error (after the hook's own retries) means "look again later"."""
        try:
            return check()
        except CloudflareWorkflowsError as error:
            if not protocol.is_transient(error):
                raise
            self.log.warning("Cloudflare did not answer usably this time; looking again later: %s", error)
            return None

    def _log_pending(self, check: Check) -> None:
        """Log progress when it changes (a retry, a new step, a new status); otherwise at debug level."""
        if check.message == self._logged:
            self.log.debug("%s", check.message)
            return
        self.log.log(logging.WARNING if check.error else logging.INFO, "%s", check.message)
        self._logged = check.message


class CloudflareWorkflowStepSensor(_CloudflareWorkflowsSensor):
    """
    Wait for a step of a Workflow instance to reach a final status.

    **Step names.** Cloudflare logs every step as ``<name as written>-<n>`` (its n-th run) and the API
    wants that exact name. Give either form: a name that does not end in ``-<digits>`` means its first
    run (``"fetch data"`` is looked up as ``"fetch data-1"``); a name that ends in ``-<digits>`` is tried
    as given (``"fetch data-2"``, the second run), then with ``-1`` appended, as a name written that way
    in code (``"phase-2"`` is logged ``"phase-2-1"``). A step that has not started is "not yet"; if the
    instance ends without running it, the sensor fails at once and lists the steps the instance has.

    A step that is not final while its instance is (terminated, errored or complete) fails at once. A
    retrying step (running with an error) logs the failed attempt's error and keeps waiting. On a
    failure state the remote error and each failed attempt are logged (``attempt 2: Error: upstream
    503``) and :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowStepFailedError` is
    raised: an ``AirflowFailException``, so the task is not retried and ``soft_fail=True`` skips it.

    Returns (XCom ``return_value``) a small summary, never the output: ``{"workflow_name",
    "instance_id", "step_name"`` (the exact logged name), ``"step_type", "status", "error": {"name",
    "message"} | None}``. Read the output with ``CloudflareWorkflowStepOutputOperator``.

    :param workflow_name: the Workflow (templated).
    :param instance_id: the instance (templated).
    :param step_name: the step (templated), as written in the Workflow code or as logged; see above.
    :param step_type: ``"step"`` (``step.do``) or ``"waitForEvent"`` (templated).
    :param account_id: defaults to the connection's login (templated).
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows`` (templated).
    :param success_states: step statuses that end the wait successfully. Default ``("complete",)``;
        ``("waiting",)`` with ``step_type="waitForEvent"`` waits until the Workflow waits for its event.
    :param failure_states: step statuses that fail the task. Default ``("errored",)``. With
        ``failure_states=()`` and ``success_states=("complete", "errored")`` the sensor succeeds on
        either, and a downstream branch can read the status from the summary.
    :param deferrable: wait in the triggerer instead of a worker slot (it pokes once first, and the
        trigger gets the deadline ``now + timeout``); defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "step_name",
        "step_type",
        "account_id",
        "cloudflare_conn_id",
    )

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        step_name: str,
        step_type: str = StepType.STEP.value,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        success_states: Sequence[str] = (InstanceStatus.COMPLETE.value,),
        failure_states: Sequence[str] = (InstanceStatus.ERRORED.value,),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            workflow_name=workflow_name,
            instance_id=instance_id,
            account_id=account_id,
            cloudflare_conn_id=cloudflare_conn_id,
            success_states=success_states,
            failure_states=failure_states,
            deferrable=deferrable,
            **kwargs,
        )
        self.step_name = step_name
        self.step_type = step_type
        self._known_name: str | None = None

    def _validate_templated(self) -> None:
        super()._validate_templated()
        validate_step_name(self.step_name)
        self.step_type = validate_step_type(self.step_type).value

    def _summary(self, step_name: str, status: str | None, error: dict[str, str] | None) -> dict[str, Any]:
        return {
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "step_name": step_name,
            "step_type": self.step_type,
            "status": status,
            "error": error,
        }

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
            known_name=self._known_name,
        )
        self._known_name = check.step_name or self._known_name
        return check

    def _fail(self, message: str, step_name: str | None) -> NoReturn:
        """Log what went wrong remotely (error, each failed attempt), then fail without retries."""
        self.log.error("%s", message)
        if step_name is not None:  # the step exists: its attempts are in the instance's step log
            try:
                details = self.hook.get_instance(
                    self.workflow_name, self.instance_id, account_id=self.account_id
                )
            except CloudflareWorkflowsError as lookup_error:
                self.log.warning("Could not read the instance's step log: %s", lookup_error)
            else:
                for line in step_failure_lines(details, step_name, self.step_type):
                    self.log.error("  %s", line)
        raise CloudflareWorkflowStepFailedError(message)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check = self._look(self._check)
        if check is None:
            return False
        if check.verdict is Verdict.PENDING:
            self._log_pending(check)
            return False
        if check.verdict is Verdict.FAILURE:
            self._fail(check.message, check.step_name if check.status is not None else None)
        self.log.info("%s", check.message)
        error = check.error.to_dict() if check.error else None
        return PokeReturnValue(
            is_done=True, xcom_value=self._summary(check.step_name or self.step_name, check.status, error)
        )

    def _trigger(self) -> CloudflareWorkflowStepTrigger:
        return CloudflareWorkflowStepTrigger(
            step_name=self.step_name, step_type=self.step_type, **self._trigger_kwargs()
        )

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then succeed or fail exactly as a poke would."""
        self._validate_templated()
        event = validated_event(event, STEP_EVENT_FIELDS)
        self.log.info("Resumed after deferral; the trigger reported %s.", event["status"])
        if event["status"] == EVENT_FAILURE:
            self._fail(event["message"], event["step_name"] if event["step_status"] is not None else None)
        self.log.info("%s", event["message"])
        return self._summary(event["step_name"], event["step_status"], event["error"])


class CloudflareWorkflowInstanceSensor(_CloudflareWorkflowsSensor):
    """
    Wait for a Workflow instance to reach a final status (``GET .../instances/{id}?simple=true``).

    On a failure state the instance error and its failed steps (with their last errors) are logged and
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowInstanceFailedError` is raised
    (an ``AirflowFailException``: no retries; ``soft_fail=True`` skips). Returns ``{"workflow_name",
    "instance_id", "status", "error", "output"}``: ``output`` is the instance's output when it is JSON
    of at most 64 KiB, else None with ``"output_truncated": true`` and ``"output_bytes"``.

    :param workflow_name: the Workflow (templated).
    :param instance_id: the instance (templated).
    :param account_id: defaults to the connection's login (templated).
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows`` (templated).
    :param success_states: instance statuses that end the wait successfully. Default ``("complete",)``.
    :param failure_states: instance statuses that fail the task. Default ``("errored", "terminated")``.
    :param deferrable: wait in the triggerer instead of a worker slot (it pokes once first); defaults
        to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("workflow_name", "instance_id", "account_id", "cloudflare_conn_id")

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        success_states: Sequence[str] = (InstanceStatus.COMPLETE.value,),
        failure_states: Sequence[str] = (InstanceStatus.ERRORED.value, InstanceStatus.TERMINATED.value),
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            workflow_name=workflow_name,
            instance_id=instance_id,
            account_id=account_id,
            cloudflare_conn_id=cloudflare_conn_id,
            success_states=success_states,
            failure_states=failure_states,
            deferrable=deferrable,
            **kwargs,
        )

    def _fail(self, message: str) -> NoReturn:
        fail_instance(self.hook, self.log, self.workflow_name, self.instance_id, self.account_id, message)

    def _summary(self, status: str | None, error: dict[str, str] | None, output: Any) -> dict[str, Any]:
        return {
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "status": status,
            "error": error,
            **summary_output(output),
        }

    def _details(self) -> dict[str, Any]:
        try:
            return self.hook.get_instance(
                self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
            )
        except CloudflareWorkflowsNotFoundError as error:
            raise instance_not_found_error(error, self.workflow_name, self.instance_id) from None

    def _check(self) -> Check:
        return evaluate_instance(
            self._details(), success_states=self.success_states, failure_states=self.failure_states
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check = self._look(self._check)
        if check is None:
            return False
        if check.verdict is Verdict.PENDING:
            self._log_pending(check)
            return False
        if check.verdict is Verdict.FAILURE:
            self._fail(check.message)
        self.log.info("%s", check.message)
        error = check.error.to_dict() if check.error else None
        return PokeReturnValue(is_done=True, xcom_value=self._summary(check.status, error, check.output))

    def _trigger(self) -> CloudflareWorkflowInstanceTrigger:
        return CloudflareWorkflowInstanceTrigger(**self._trigger_kwargs())

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event; on success read the output here, on the worker."""
        self._validate_templated()
        event = validated_event(event, INSTANCE_EVENT_FIELDS)
        self.log.info("Resumed after deferral; the trigger reported %s.", event["status"])
        if event["status"] == EVENT_FAILURE:
            self._fail(event["message"])
        self.log.info("%s", event["message"])
        # Trigger events stay small, so the output is read here.
        return self._summary(event["instance_status"], event["error"], self._details().get("output"))
