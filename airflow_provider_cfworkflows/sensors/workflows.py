"""Sensors that wait for a Cloudflare Workflow step, or a whole instance, to reach a final status."""

from __future__ import annotations

import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import PokeReturnValue, conf
from airflow.sdk.exceptions import (
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    AirflowTaskTimeout,
)

from airflow_provider_cfworkflows.base import CloudflareWorkflowsBaseSensor
from airflow_provider_cfworkflows.checks import Check, check_states, summary_output
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.statuses import (
    DEFAULT_INSTANCE_FAILURE_STATES,
    DEFAULT_INSTANCE_SUCCESS_STATES,
    DEFAULT_STEP_FAILURE_STATES,
    DEFAULT_STEP_SUCCESS_STATES,
    StepType,
)
from airflow_provider_cfworkflows.task_waits import DEFERRAL_GRACE_SECONDS, InstanceWait, StepWait
from airflow_provider_cfworkflows.triggers.workflows import InstanceWaitEvent, StepWaitEvent
from airflow_provider_cfworkflows.validation import (
    validate_instance_id,
    validate_positive_seconds,
    validate_step_name,
    validate_step_type,
    validate_workflow_name,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "DEFERRAL_GRACE_SECONDS",
    "CloudflareWorkflowInstanceSensor",
    "CloudflareWorkflowStepSensor",
]


class _CloudflareWorkflowsSensor(CloudflareWorkflowsBaseSensor):
    """
    Shared plumbing: the wait's deadline and looks, deferral after a first poke, the instance link,
    templated-argument checks.
    """

    # The defaults are the instance sensor's, whose arguments these are (the step sensor adds its own).
    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        success_states: Sequence[str] = DEFAULT_INSTANCE_SUCCESS_STATES,
        failure_states: Sequence[str] = DEFAULT_INSTANCE_FAILURE_STATES,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        # Airflow takes 0 and True, and fails on infinity with a bare OverflowError. Values from
        # default_args (the task's and the DAG's, merged by Airflow's metaclass) reach
        # BaseSensorOperator without passing here by name: they are in kwargs["default_args"].
        default_args = kwargs.get("default_args") or {}
        for seconds in ("poke_interval", "timeout"):
            value = kwargs.get(seconds, default_args.get(seconds))
            if value is not None:
                validate_positive_seconds(value, seconds)
        super().__init__(account_id=account_id, cloudflare_conn_id=cloudflare_conn_id, **kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.success_states, self.failure_states = check_states(success_states, failure_states)
        self.deferrable = deferrable
        # Set by execute (a poke called on its own has no deadline and no earlier answer).
        self._deadline: float | None = None
        self._answered_before = False

    def _validate_templated(self) -> None:
        """Check the templated arguments once they are rendered (before any call)."""
        validate_workflow_name(self.workflow_name)
        validate_instance_id(self.instance_id)

    @cached_property
    def _wait(self) -> StepWait | InstanceWait:
        """The wait (shared with the operators that wait), made at the first poke."""
        raise NotImplementedError

    def _wait_arguments(self) -> dict[str, Any]:
        return {
            "hook": self.hook,
            "log": self.log,
            "workflow_name": self.workflow_name,
            "instance_id": self.instance_id,
            "account_id": self.account_id,
            "cloudflare_conn_id": self.cloudflare_conn_id,
            "success_states": self.success_states,
            "failure_states": self.failure_states,
            "deadline": self._deadline,
            "answered": self._answered_before,
        }

    def _summary(self, check: Check) -> dict[str, Any]:
        """The XCom of a successful poke."""
        raise NotImplementedError

    def _resumed_summary(self, event: Any) -> dict[str, Any]:
        """The XCom after a successful deferral."""
        raise NotImplementedError

    def _xcom(self, **fields: Any) -> dict[str, Any]:
        """The start of either summary: the Workflow and the instance, then ``fields``."""
        return {"workflow_name": self.workflow_name, "instance_id": self.instance_id, **fields}

    def poke(self, context: Context) -> PokeReturnValue | bool:
        check = self._wait.poke()
        if check is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._summary(check))

    def execute_complete(self, context: Context, event: Any = None) -> dict[str, Any]:
        """Resume after the trigger: validate its event, then succeed or fail exactly as a poke would."""
        self._validate_templated()
        return self._resumed_summary(self._wait.resume(event))

    def execute(self, context: Context) -> Any:
        rescheduled = self.reschedule and context.get("task_reschedule_count", 0) > 0
        # The wait started as BaseSensorOperator.execute counts its timeout: in reschedule mode at the
        # first poke of the first try, otherwise now.
        first = context["ti"].get_first_reschedule_date(context) if rescheduled else None
        self._deadline = (time.time() if first is None else first.timestamp()) + self.timeout
        # In reschedule mode an earlier poke of this try got an answer (else the task had failed).
        self._answered_before = rescheduled
        self._validate_templated()
        self.persist_instance_link(context, self.workflow_name, self.instance_id)
        if not self.deferrable:
            return super().execute(context)
        # Poke once first and defer only if not done: a finished step needs no trigger (dbt, PR #30968).
        done, xcom_value = self._first_poke(context)
        if done:
            return xcom_value
        # The trigger gets the first poke's deadline.
        self._wait.defer(self, end_time=self._deadline, poll_interval=self.poke_interval)

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
        success_states: Sequence[str] = DEFAULT_STEP_SUCCESS_STATES,
        failure_states: Sequence[str] = DEFAULT_STEP_FAILURE_STATES,
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

    @cached_property
    def _wait(self) -> StepWait:
        return StepWait(step_name=self.step_name, step_type=self.step_type, **self._wait_arguments())

    def _validate_templated(self) -> None:
        super()._validate_templated()
        validate_step_name(self.step_name)
        self.step_type = validate_step_type(self.step_type).value

    def _step_summary(
        self, step_name: str, status: str | None, error: dict[str, str] | None
    ) -> dict[str, Any]:
        return self._xcom(step_name=step_name, step_type=self.step_type, status=status, error=error)

    def _summary(self, check: Check) -> dict[str, Any]:
        error = check.error.to_dict() if check.error else None
        return self._step_summary(check.step_name or self.step_name, check.status, error)

    def _resumed_summary(self, event: StepWaitEvent) -> dict[str, Any]:
        return self._step_summary(event.step_name, event.step_status, event.error)


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

    @cached_property
    def _wait(self) -> InstanceWait:
        return InstanceWait(**self._wait_arguments())

    def _instance_summary(
        self, status: str | None, error: dict[str, str] | None, output: Any
    ) -> dict[str, Any]:
        return self._xcom(status=status, error=error, **summary_output(output))

    def _summary(self, check: Check) -> dict[str, Any]:
        error = check.error.to_dict() if check.error else None
        return self._instance_summary(check.status, error, check.output)

    def _resumed_summary(self, event: InstanceWaitEvent) -> dict[str, Any]:
        # Trigger events stay small, so the output is read here, on the worker.
        return self._instance_summary(event.instance_status, event.error, self._wait.read_output())
