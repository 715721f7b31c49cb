"""Sensors that wait for a Cloudflare Workflow step, or a whole instance, to reach a final status."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
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
from airflow_provider_cfworkflows.models import RemoteError
from airflow_provider_cfworkflows.statuses import InstanceStatus, StepType
from airflow_provider_cfworkflows.triggers.workflows import (
    EVENT_ERROR,
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
    Verdict,
    check_states,
    evaluate_instance,
    evaluate_step,
    instance_failure_lines,
    small_output,
    step_failure_lines,
    step_name_candidates,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


def check_step(
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
    """
    Look at a step once: ``/step`` under each candidate name; the instance only when the step is
    missing (full details, to list its steps) or not final (``simple=true``, is the instance done?).
    A byte-stream output is never downloaded here.
    """
    step, exact = None, None
    for candidate in step_name_candidates(step_name):
        try:
            with hook.stream_step_output(
                workflow_name, instance_id, candidate, step_type, account_id=account_id
            ) as stream:
                step = stream.step
        except CloudflareWorkflowsNotFoundError:
            continue
        exact = candidate
        break
    details = None
    instance_status = None
    if step is None:
        details = hook.get_instance(workflow_name, instance_id, account_id=account_id)
        instance_status = details.get("status")
    elif step.status not in (*success_states, *failure_states):
        instance_status = hook.get_instance(
            workflow_name, instance_id, simple=True, account_id=account_id
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


def validated_event(event: Any, required: Sequence[str]) -> dict[str, Any]:
    """
    Check a trigger event's shape: it crosses the triggerer/worker boundary through the metadata DB.

    Timeouts and errors only need their message; success and failure need ``required``.
    """
    if not isinstance(event, dict):
        raise AirflowException(f"The trigger sent no usable event: {event!r}")
    if event.get("status") not in EVENT_STATUSES:
        raise AirflowException(f"The trigger sent an event with an unknown status: {event.get('status')!r}")
    if event["status"] == EVENT_TIMEOUT:
        raise AirflowSensorTimeout(f"Sensor timed out: {event.get('message')}")
    if event["status"] == EVENT_ERROR:
        raise AirflowException(event.get("message") or "The trigger failed.")
    missing = [key for key in required if key not in event]
    if missing:
        raise AirflowException(f"The trigger's event lacks {missing}: {event!r}")
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
    """Shared plumbing: connection, hook, deferral, event validation, the instance link."""

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

    @cached_property
    def hook(self) -> CloudflareWorkflowsHook:
        """The Cloudflare Workflows hook."""
        return CloudflareWorkflowsHook(self.cloudflare_conn_id)

    def _validate_templated(self) -> None:
        validate_workflow_name(self.workflow_name)
        validate_instance_id(self.instance_id)

    def _trigger(self) -> Any:
        raise NotImplementedError

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
        # Deferrable: poke once, and defer only if not done yet (a finished step costs no trigger).
        try:
            result = self.poke(context)
        except AirflowFailException as error:
            if self.soft_fail:
                raise AirflowSkipException(f"Skipping (soft_fail): {error}") from error
            raise
        if isinstance(result, PokeReturnValue) and result.is_done:
            return result.xcom_value
        self.defer(trigger=self._trigger(), method_name="execute_complete")
        return None  # pragma: no cover - defer() raises

    def _look(self, check: Callable[..., Check], *args: Any, **kwargs: Any) -> Check | None:
        """Run one check; a transient API error (after the hook's own retries) means "look again later"."""
        try:
            return check(*args, **kwargs)
        except CloudflareWorkflowsError as error:
            if not protocol.is_transient(error):
                raise
            self.log.warning("Cloudflare did not answer usably this time; looking again later: %s", error)
            return None

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


class CloudflareWorkflowStepSensor(_CloudflareWorkflowsSensor):
    """
    Wait for a step of a Workflow instance to reach a final status.

    Name the step as written in the Workflow code (``"fetch data"`` = its first run) or exactly as
    logged, with its counter suffix (``"fetch data-2"`` = its second run). A name ending in ``-<n>``
    is tried as given first, then as a name written that way in code (``"phase-2"`` is logged
    ``"phase-2-1"``). A step that has not started is "not yet"; if the instance finishes without
    running it, the sensor fails at once and lists the steps the instance has.

    On a failure state the remote error and failed attempts are logged and
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowStepFailedError` is raised (an
    ``AirflowFailException``: no retries; ``soft_fail=True`` skips). The XCom ``return_value`` is a
    small summary (workflow, instance, exact step name, type, status, error), never the output: use
    ``CloudflareWorkflowStepOutputOperator`` for that.

    :param workflow_name: the Workflow (templated).
    :param instance_id: the instance (templated).
    :param step_name: the step (templated), see above.
    :param step_type: ``"step"`` (``step.do``) or ``"waitForEvent"`` (templated).
    :param account_id: defaults to the connection's login (templated).
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows`` (templated).
    :param success_states: step statuses that end the wait successfully. Default ``("complete",)``;
        ``("waiting",)`` with ``step_type="waitForEvent"`` waits until the Workflow waits for its event.
    :param failure_states: step statuses that fail the task. Default ``("errored",)``. With
        ``failure_states=()`` and ``success_states=("complete", "errored")`` the sensor succeeds on
        either, and a downstream branch can read the status from the summary.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
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
        step_type: str = StepType.STEP,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        success_states: Sequence[str] = (InstanceStatus.COMPLETE,),
        failure_states: Sequence[str] = (InstanceStatus.ERRORED,),
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

    def _fail(self, message: str, step_name: str | None, error: RemoteError | None) -> None:
        """Log what went wrong remotely, readably, then fail without retries."""
        self.log.error("%s", message)
        try:
            details = self.hook.get_instance(self.workflow_name, self.instance_id, account_id=self.account_id)
        except CloudflareWorkflowsError as lookup_error:
            self.log.warning("Could not read the instance's step log: %s", lookup_error)
        else:
            for line in step_failure_lines(details, step_name, self.step_type):
                self.log.error("  %s", line)
        raise CloudflareWorkflowStepFailedError(message)

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check = self._look(
            check_step,
            self.hook,
            workflow_name=self.workflow_name,
            instance_id=self.instance_id,
            step_name=self.step_name,
            step_type=self.step_type,
            success_states=self.success_states,
            failure_states=self.failure_states,
            account_id=self.account_id,
        )
        if check is None:
            return False
        self.log.info("%s", check.message)
        if check.verdict is Verdict.PENDING:
            return False
        if check.verdict is Verdict.FAILURE:
            self._fail(check.message, check.step_name, check.error)
        assert check.step_name is not None
        error = check.error.to_dict() if check.error else None
        return PokeReturnValue(is_done=True, xcom_value=self._summary(check.step_name, check.status, error))

    def _trigger(self) -> CloudflareWorkflowStepTrigger:
        return CloudflareWorkflowStepTrigger(
            step_name=self.step_name, step_type=self.step_type, **self._trigger_kwargs()
        )

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then succeed or fail like a poke would."""
        event = validated_event(event, ("step_name", "remote_status", "error", "message"))
        if event["status"] == Verdict.FAILURE:
            self._fail(event["message"], event["step_name"], RemoteError.from_api(event["error"]))
        self.log.info("%s", event["message"])
        return self._summary(event["step_name"], event["remote_status"], event["error"])


class CloudflareWorkflowInstanceSensor(_CloudflareWorkflowsSensor):
    """
    Wait for a Workflow instance to reach a final status.

    On a failure state the instance error and its failed steps are logged and
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowInstanceFailedError` is raised
    (an ``AirflowFailException``: no retries; ``soft_fail=True`` skips). Returns
    ``{workflow_name, instance_id, status, error, output}``; ``output`` is the instance's output when
    it is JSON of at most 64 KiB, else None with ``output_omitted: true``.

    :param workflow_name: the Workflow (templated).
    :param instance_id: the instance (templated).
    :param account_id: defaults to the connection's login (templated).
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows`` (templated).
    :param success_states: instance statuses that end the wait successfully. Default ``("complete",)``.
    :param failure_states: instance statuses that fail the task. Default ``("errored", "terminated")``.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = ("workflow_name", "instance_id", "account_id", "cloudflare_conn_id")

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        success_states: Sequence[str] = (InstanceStatus.COMPLETE,),
        failure_states: Sequence[str] = (InstanceStatus.ERRORED, InstanceStatus.TERMINATED),
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

    def _fail(self, message: str) -> None:
        fail_instance(self.hook, self.log, self.workflow_name, self.instance_id, self.account_id, message)

    def _summary(self, status: str | None, error: dict[str, str] | None, output: Any) -> dict[str, Any]:
        kept, omitted = small_output(output)
        summary = {
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "status": status,
            "error": error,
            "output": kept,
        }
        if omitted:
            summary["output_omitted"] = True
        return summary

    def _check_instance(self) -> Check:
        details = self.hook.get_instance(
            self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
        )
        return evaluate_instance(
            details, success_states=self.success_states, failure_states=self.failure_states
        )

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check = self._look(self._check_instance)
        if check is None:
            return False
        self.log.info("%s", check.message)
        if check.verdict is Verdict.PENDING:
            return False
        if check.verdict is Verdict.FAILURE:
            self._fail(check.message)
        error = check.error.to_dict() if check.error else None
        return PokeReturnValue(is_done=True, xcom_value=self._summary(check.status, error, check.output))

    def _trigger(self) -> CloudflareWorkflowInstanceTrigger:
        return CloudflareWorkflowInstanceTrigger(**self._trigger_kwargs())

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event; on success read the output on the worker."""
        event = validated_event(event, ("remote_status", "error", "message"))
        if event["status"] == Verdict.FAILURE:
            self._fail(event["message"])
        # The event carries no output (events stay small): read it here.
        details = self.hook.get_instance(
            self.workflow_name, self.instance_id, simple=True, account_id=self.account_id
        )
        return self._summary(event["remote_status"], event["error"], details.get("output"))
