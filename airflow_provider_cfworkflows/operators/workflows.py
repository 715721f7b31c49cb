"""Operators for Cloudflare Workflows."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, conf
from airflow.sdk.exceptions import AirflowException

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutputError,
    CloudflareWorkflowOutputRejectedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepFailedError,
    CloudflareWorkflowStepNotReadyError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_ids import derive_instance_id
from airflow_provider_cfworkflows.links.workflows import CloudflareWorkflowInstanceLink, persist_instance_link
from airflow_provider_cfworkflows.models import (
    JSON_CONTENT_TYPE,
    OCTET_STREAM_CONTENT_TYPE,
    REDACTED_OUTPUT,
    StepOutput,
    StepOutputStream,
)
from airflow_provider_cfworkflows.output_storage import (
    WRITE_BLOCK_SIZE,
    OutputSizeMismatchError,
    WrittenObject,
    to_object_storage_path,
    write_object,
)
from airflow_provider_cfworkflows.sensors.workflows import fail_instance, validated_event
from airflow_provider_cfworkflows.statuses import InstanceStatus, StatusAction, StepType
from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowInstanceTrigger
from airflow_provider_cfworkflows.validation import (
    MAX_BATCH_SIZE,
    encode_json,
    validate_attempt,
    validate_event_payload,
    validate_event_type,
    validate_instance_id,
    validate_new_instance_id,
    validate_status_action,
    validate_step_name,
    validate_step_type,
    validate_workflow_name,
)
from airflow_provider_cfworkflows.waiting import Verdict, evaluate_instance, step_name_candidates

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

DEFAULT_WAIT_TIMEOUT_SECONDS = 7 * 24 * 3600.0
_SUCCESS = (InstanceStatus.COMPLETE.value,)
_FAILURE = (InstanceStatus.ERRORED.value, InstanceStatus.TERMINATED.value)

# XCom values live in the metadata DB and travel through the Execution API on every push and pull
# (and the UI renders them), so only small outputs belong there. 64 KiB holds any summary-like
# output, matches Airflow's own default for small per-task values ([state_store]
# max_value_storage_bytes = 65535) and is far below the 1 MiB Cloudflare allows for a step's JSON output.
DEFAULT_MAX_XCOM_BYTES = 64 * 1024
ON_REDACTED_CHOICES = ("fail", "warn")
# XCom keys pushed next to ``return_value`` when the output goes to object storage.
XCOM_CONTENT_TYPE = "content_type"
XCOM_SIZE_BYTES = "size_bytes"
XCOM_SHA256 = "sha256"
XCOM_STEP_ERROR = "error"

_SENSOR_HINT = (
    "Put a CloudflareWorkflowStepSensor for this step upstream of this task, so it runs only once the "
    "step is complete."
)


def annotate_outlet_events(context: Context, operator: BaseOperator, extra: Mapping[str, Any]) -> None:
    """Attach ``extra`` to the asset event of every ``Asset`` outlet, so downstream DAGs find the result."""
    from airflow.sdk import Asset

    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    for outlet in operator.outlets or ():
        if isinstance(outlet, Asset):
            outlet_events[outlet].extra.update(extra)


class _WorkflowsOperator(BaseOperator):
    """
    Shared plumbing of the operators: the connection, the hook, the account id.

    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    ui_color = "#f6821f"  # Cloudflare orange

    def __init__(
        self, *, account_id: str | None = None, cloudflare_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id

    @cached_property
    def hook(self) -> CloudflareWorkflowsHook:
        """The Cloudflare Workflows hook."""
        return CloudflareWorkflowsHook(self.cloudflare_conn_id)

    def resolve_account_id(self) -> str:
        """The task's ``account_id``, else the connection's login."""
        return self.hook.settings.resolve_account_id(self.account_id)


class CloudflareWorkflowStepOutputOperator(_WorkflowsOperator):
    """
    Fetch the full, untruncated output of one step of a Workflow instance (``GET .../step``).

    Where the output goes:

    - no ``output_path``: a JSON output of at most ``max_xcom_bytes`` is returned as the XCom
      ``return_value`` (plain JSON). A larger JSON output, or a binary (``ReadableStream``) output,
      fails the task with a message naming ``output_path``: bytes never go to XCom.
    - ``output_path``: the output is written there (JSON as UTF-8 JSON, binary byte for byte, streamed
      with bounded memory) and the path is returned as a string; the XComs ``content_type``,
      ``size_bytes`` and ``sha256`` describe what was written. The write is atomic: a failed or
      interrupted transfer leaves nothing at ``output_path``, and a retry writes the whole object.
      Asset ``outlets`` get the workflow, instance, step and path in their event's ``extra``.

    A step that is still running, waiting, retrying or not started yet raises
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowStepNotReadyError` (put a
    ``CloudflareWorkflowStepSensor`` upstream); an errored step pushes its error as the XCom ``error``
    and raises :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowStepFailedError`
    (no retry). Outputs that can never be delivered as configured raise
    :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowOutputRejectedError` (no retry).

    :param workflow_name: name of the Workflow. Templated.
    :param instance_id: id of the instance. Templated.
    :param step_name: the step's name as written in the Workflow code (``"fetch data"`` means its first
        run, ``"fetch data-1"``) or as logged with its counter (``"fetch data-2"``); a name ending in
        ``-<digits>`` is tried as given, then with ``-1`` appended. Templated.
    :param step_type: ``"step"`` (``step.do``) or ``"waitForEvent"`` (the output is the event payload).
        Templated.
    :param attempt: fetch this attempt (>= 1) of a ``step``: if it failed, the task fails with that
        attempt's error (also pushed as the XCom ``error``); if it succeeded, the step's output is
        delivered. None (default) for the step's final result. Templated.
    :param account_id: Cloudflare account id; defaults to the connection's login. Templated.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``. Templated.
    :param output_path: where to write the output: a URL such as ``s3://aws_conn@bucket/key.json``
        (R2 through an ``aws`` connection with ``endpoint_url``), ``file:///data/out.bin``, or an
        ``ObjectStoragePath``. An existing object is replaced. None (default) returns small JSON
        outputs through XCom. Templated.
    :param max_xcom_bytes: largest JSON output (UTF-8 bytes, compact encoding) returned through XCom
        when there is no ``output_path``; default 64 KiB, because XComs are stored in the metadata DB.
    :param on_redacted: what to do when the step is marked sensitive and Cloudflare returns
        ``"[REDACTED]"``: ``"fail"`` (default) or ``"warn"`` (log and deliver the marker as the output).
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "step_name",
        "step_type",
        "attempt",
        "account_id",
        "cloudflare_conn_id",
        "output_path",
    )
    operator_extra_links = (CloudflareWorkflowInstanceLink(),)

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        step_name: str,
        step_type: str = StepType.STEP.value,
        attempt: int | str | None = None,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        output_path: str | ObjectStoragePath | None = None,
        max_xcom_bytes: int = DEFAULT_MAX_XCOM_BYTES,
        on_redacted: str = "fail",
        **kwargs: Any,
    ) -> None:
        super().__init__(account_id=account_id, cloudflare_conn_id=cloudflare_conn_id, **kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.step_name = step_name
        self.step_type = step_type
        self.attempt = attempt
        self.output_path = output_path
        self.max_xcom_bytes = _validate_max_xcom_bytes(max_xcom_bytes)
        self.on_redacted = _validate_on_redacted(on_redacted)

    def execute(self, context: Context) -> Any:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id = validate_instance_id(self.instance_id)
        step_name = validate_step_name(self.step_name)
        step_type = validate_step_type(self.step_type)
        attempt = validate_attempt(_coerce_attempt(self.attempt))
        if attempt is not None and step_type is StepType.WAIT_FOR_EVENT:
            raise CloudflareWorkflowsConfigurationError(
                "attempt is not supported with step_type='waitForEvent' (an event has no attempts)."
            )
        target = None if self.output_path is None else to_object_storage_path(self.output_path)
        account_id = self.resolve_account_id()
        persist_instance_link(context, account_id, workflow_name, instance_id)

        where = f"instance {instance_id!r} of workflow {workflow_name!r}"
        with ExitStack() as stack:
            name, stream = _open_step_output(
                stack,
                self.hook,
                workflow_name=workflow_name,
                instance_id=instance_id,
                step_name=step_name,
                step_type=step_type,
                attempt=attempt,
                account_id=account_id,
                where=where,
            )
            what = f"{_describe_step(repr(name), step_type, attempt)} of {where}"
            step = stream.step
            _check_complete(step, what, context, for_attempt=attempt is not None)
            if step.is_stream:
                if target is None:
                    raise CloudflareWorkflowOutputRejectedError(
                        f"The output of {what} is binary (application/octet-stream: the step returned a "
                        f"ReadableStream{_size_note(stream.content_length)}). Binary outputs never go to "
                        "XCom: set output_path (for example 's3://aws_conn@bucket/key.bin' or "
                        "'file:///data/out.bin') to write it to object storage."
                    )
                written = _write(target, stream.chunks, stream.content_length, what)
                content_type = OCTET_STREAM_CONTENT_TYPE
            else:
                output = self._check_redacted(step.output, what)
                encoded = _encode_json(output)
                if target is None:
                    if len(encoded) > self.max_xcom_bytes:
                        raise CloudflareWorkflowOutputRejectedError(
                            f"The output of {what} is {len(encoded)} bytes as JSON, more than "
                            f"max_xcom_bytes={self.max_xcom_bytes}. Set output_path (for example "
                            "'s3://aws_conn@bucket/key.json') to write it to object storage and pass its "
                            "path through XCom, or raise max_xcom_bytes if your metadata DB can take it."
                        )
                    self.log.info(
                        "Returning the output of %s (%d bytes of JSON) as XCom.", what, len(encoded)
                    )
                    return output
                written = _write(target, [encoded], len(encoded), what)
                content_type = JSON_CONTENT_TYPE

        self.log.info(
            "Wrote the output of %s to %s: %d bytes, %s, sha256 %s.",
            what,
            written.path,
            written.size_bytes,
            content_type,
            written.sha256,
        )
        ti = context["ti"]
        ti.xcom_push(key=XCOM_CONTENT_TYPE, value=content_type)
        ti.xcom_push(key=XCOM_SIZE_BYTES, value=written.size_bytes)
        ti.xcom_push(key=XCOM_SHA256, value=written.sha256)
        annotate_outlet_events(
            context,
            self,
            {
                "workflow_name": workflow_name,
                "instance_id": instance_id,
                "step_name": name,
                "output_path": written.path,
                "content_type": content_type,
                "size_bytes": written.size_bytes,
                "sha256": written.sha256,
            },
        )
        return written.path

    def _check_redacted(self, output: Any, what: str) -> Any:
        if output != REDACTED_OUTPUT:
            return output
        message = (
            f"The output of {what} is {REDACTED_OUTPUT!r}: the step is marked sensitive in the Workflow "
            "(step.do with config sensitive), so Cloudflare never returns its real value."
        )
        if self.on_redacted == "fail":
            raise CloudflareWorkflowOutputRejectedError(
                f"{message} Remove the sensitive flag from the step, or set on_redacted='warn' to pass the "
                "marker on instead of failing."
            )
        self.log.warning("%s Passing the marker on (on_redacted='warn').", message)
        return output


# --- helpers of CloudflareWorkflowStepOutputOperator ------------------------------------------------


def _validate_on_redacted(value: Any) -> str:
    if value not in ON_REDACTED_CHOICES:
        raise CloudflareWorkflowsConfigurationError(
            f"on_redacted must be one of {', '.join(map(repr, ON_REDACTED_CHOICES))}, got {value!r}."
        )
    return str(value)


def _validate_max_xcom_bytes(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CloudflareWorkflowsConfigurationError(
            f"max_xcom_bytes must be a whole number of bytes >= 0, got {value!r}."
        )
    return value


def _coerce_attempt(value: Any) -> Any:
    """A templated ``attempt`` renders as a string: ``"3"`` means 3, ``""``/``"None"`` mean None."""
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            return None
        if text.isdigit():
            return int(text)
    return value


def _open_step_output(
    stack: ExitStack,
    hook: CloudflareWorkflowsHook,
    *,
    workflow_name: str,
    instance_id: str,
    step_name: str,
    step_type: StepType,
    attempt: int | None,
    account_id: str,
    where: str,
) -> tuple[str, StepOutputStream]:
    """Open ``/step`` for the first candidate name that exists; the response stays open in ``stack``."""
    candidates = step_name_candidates(step_name)
    not_found: CloudflareWorkflowsNotFoundError | None = None
    for name in candidates:
        try:
            stream = stack.enter_context(
                hook.stream_step_output(
                    workflow_name,
                    instance_id,
                    name,
                    step_type,
                    attempt,
                    account_id=account_id,
                    chunk_size=WRITE_BLOCK_SIZE,  # reads of exactly one write block: no re-cutting
                )
            )
        except CloudflareWorkflowsNotFoundError as error:
            not_found = error
            continue
        return name, stream
    tried = " or ".join(repr(name) for name in candidates)
    raise CloudflareWorkflowStepNotReadyError(
        f"Found no {_describe_step(tried, step_type, attempt)} on {where}: the step has not started yet "
        f"(or the step, instance or workflow name is wrong). {_SENSOR_HINT} Cloudflare said: {not_found}"
    )


def _describe_step(quoted_name: str, step_type: StepType, attempt: int | None) -> str:
    kind = "waitForEvent step" if step_type is StepType.WAIT_FOR_EVENT else "step"
    prefix = f"attempt {attempt} of " if attempt is not None else ""
    return f"{prefix}{kind} {quoted_name}"


def _check_complete(step: StepOutput, what: str, context: Context, *, for_attempt: bool) -> None:
    """Raise unless the step (or the asked attempt) is complete: failed for good, or not finished yet."""
    if step.status == InstanceStatus.COMPLETE:
        return
    if step.status in (InstanceStatus.ERRORED, InstanceStatus.TERMINATED):
        error = step.error.to_dict() if step.error else {"name": step.status, "message": ""}
        context["ti"].xcom_push(key=XCOM_STEP_ERROR, value=error)
        advice = (
            "A later attempt may have succeeded; without attempt, the operator fetches the final result."
            if for_attempt
            else "Its output will never be available; fix the Workflow or restart the instance."
        )
        raise CloudflareWorkflowStepFailedError(
            f"{_capitalized(what)} {step.status}: {step.error or 'no error details'}. {advice}"
        )
    if step.is_retrying:
        state = f"is retrying after an attempt failed with {step.error}"
    elif step.status == InstanceStatus.WAITING:
        event = f" {step.event_type!r}" if step.event_type else ""
        state = f"is still waiting for its event{event}"
    else:
        state = f"is not complete yet (status {step.status!r})"
    raise CloudflareWorkflowStepNotReadyError(
        f"{_capitalized(what)} {state}, so its output is not available. {_SENSOR_HINT}"
    )


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def _encode_json(output: Any) -> bytes:
    return json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _size_note(content_length: int | None) -> str:
    return f", {content_length} bytes" if content_length is not None else ""


def _write(target: ObjectStoragePath, chunks: Any, expected_size: int | None, what: str) -> WrittenObject:
    """Write atomically; on failure say that nothing was left at the target."""
    try:
        return write_object(target, chunks, expected_size=expected_size)
    except (OSError, ValueError) as error:
        # Storage errors (and a short stream): retryable, the next try writes the whole object again.
        kind = "was cut short" if isinstance(error, OutputSizeMismatchError) else "failed"
        raise CloudflareWorkflowOutputError(
            f"Writing the output of {what} to {target} {kind}: {type(error).__name__}: {error}. "
            "output_path was left untouched (no partial object); a retry of the task writes the whole "
            "object."
        ) from error
    except Exception as error:
        # Hook errors (a connection cut mid-stream, ...) keep their type for retry policies.
        error.add_note(
            f"output_path {target} was left untouched (no partial object); a retry of the task writes "
            "the whole object."
        )
        raise


# --- starting instances, events and status changes ------------------------------------------------


def _map_index(ti: Any) -> int:
    return ti.map_index if ti.map_index is not None else -1


class CloudflareWorkflowCreateInstanceOperator(_WorkflowsOperator):
    """
    Start a Workflow instance; idempotent across task retries.

    Without ``instance_id`` the id is derived from the dag id, run id, task id and map index, so a
    retried task finds the instance its earlier try created instead of starting a duplicate. An
    "already exists" answer for that id is success.

    :param workflow_name: the Workflow to run.
    :param instance_id: explicit id (1-100 of ``[a-zA-Z0-9_-]``); derived when None.
    :param instance_params: JSON-serializable value given to the Workflow as ``event.payload``.
    :param instance_retention: ``{"success_retention": ..., "error_retention": ...}``.
    :param wait_for_completion: wait until the instance is ``complete``; fail with the remote error when
        it ends ``errored`` or ``terminated``.
    :param deferrable: wait in the triggerer instead of a worker slot; defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param timeout: seconds to wait at most (default 7 days).
    :param account_id: defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "instance_params",
        "account_id",
        "cloudflare_conn_id",
    )
    template_fields_renderers = {"instance_params": "json"}
    operator_extra_links = (CloudflareWorkflowInstanceLink(),)

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str | None = None,
        instance_params: Any = None,
        instance_retention: Mapping[str, Any] | None = None,
        wait_for_completion: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = 10.0,
        timeout: float = DEFAULT_WAIT_TIMEOUT_SECONDS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if poll_interval <= 0 or timeout <= 0:
            raise CloudflareWorkflowsConfigurationError("poll_interval and timeout must be positive seconds.")
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.instance_params = instance_params
        self.instance_retention = instance_retention
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout

    def execute(self, context: Context) -> str:
        workflow_name = validate_workflow_name(self.workflow_name)
        ti = context["ti"]
        instance_id = (
            validate_new_instance_id(self.instance_id)
            if self.instance_id
            else derive_instance_id(ti.dag_id, ti.run_id, ti.task_id, _map_index(ti))
        )
        encode_json(self.instance_params, "instance_params")
        account_id = self.resolve_account_id()
        persist_instance_link(context, account_id, workflow_name, instance_id)
        try:
            created = self.hook.create_instance(
                workflow_name,
                instance_id=instance_id,
                params=self.instance_params,
                instance_retention=self.instance_retention,
                account_id=account_id,
            )
            self.log.info(
                "Started instance %r of workflow %r (status %s).",
                instance_id,
                workflow_name,
                created.get("status"),
            )
        except CloudflareWorkflowsConflictError as error:
            if not protocol.is_already_exists(error):
                raise
            existing = self.hook.get_instance(workflow_name, instance_id, simple=True, account_id=account_id)
            self.log.info(
                "Instance %r already exists (an earlier try of this task created it); status %s.",
                instance_id,
                existing.get("status"),
            )
        annotate_outlet_events(
            context,
            self,
            {"workflow_name": workflow_name, "instance_id": instance_id, "account_id": account_id},
        )
        if self.wait_for_completion:
            self._wait(context, workflow_name, instance_id, account_id)
        return instance_id

    def _wait(self, context: Context, workflow_name: str, instance_id: str, account_id: str) -> None:
        deadline = time.time() + self.timeout
        while True:
            details = self.hook.get_instance(workflow_name, instance_id, simple=True, account_id=account_id)
            check = evaluate_instance(details, success_states=_SUCCESS, failure_states=_FAILURE)
            self.log.info("%s", check.message)
            if check.verdict is Verdict.FAILURE:
                fail_instance(self.hook, self.log, workflow_name, instance_id, account_id, check.message)
            if check.verdict is Verdict.SUCCESS:
                return
            if self.deferrable:
                self.defer(
                    trigger=CloudflareWorkflowInstanceTrigger(
                        workflow_name=workflow_name,
                        instance_id=instance_id,
                        success_states=list(_SUCCESS),
                        failure_states=list(_FAILURE),
                        end_time=deadline,
                        poll_interval=self.poll_interval,
                        account_id=account_id,
                        cloudflare_conn_id=self.cloudflare_conn_id,
                    ),
                    method_name="execute_complete",
                )
            if time.time() + self.poll_interval > deadline:
                raise AirflowException(
                    f"Instance {instance_id!r} did not finish within {self.timeout:.0f} s."
                )
            time.sleep(self.poll_interval)

    def execute_complete(self, context: Context, event: Any = None) -> str:
        """Resume after the trigger: validate its event; fail with the remote error, or return the id."""
        event = validated_event(event, ("instance_id", "instance_status", "error", "message"))
        instance_id = str(event["instance_id"])
        if event["status"] == Verdict.FAILURE:
            fail_instance(
                self.hook,
                self.log,
                self.workflow_name,
                instance_id,
                self.resolve_account_id(),
                event["message"],
            )
        self.log.info("%s", event["message"])
        return instance_id


class CloudflareWorkflowSendEventOperator(_WorkflowsOperator):
    """
    Send an event to a Workflow instance, letting a ``step.waitForEvent`` with that type go on.

    The event type and payload are checked before any call: a typo in the type would otherwise leave
    the Workflow waiting until its timeout.

    :param workflow_name: the Workflow.
    :param instance_id: the instance to send to.
    :param event_type: the ``type`` of the ``step.waitForEvent`` (letters, digits, ``_``, ``-``; <= 100).
    :param payload: JSON-serializable value, at most 1 MiB encoded.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "event_type",
        "payload",
        "account_id",
        "cloudflare_conn_id",
    )
    template_fields_renderers = {"payload": "json"}
    operator_extra_links = (CloudflareWorkflowInstanceLink(),)

    def __init__(
        self, *, workflow_name: str, instance_id: str, event_type: str, payload: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.event_type = event_type
        self.payload = payload

    def execute(self, context: Context) -> dict[str, str]:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id = validate_instance_id(self.instance_id)
        event_type = validate_event_type(self.event_type)
        size = len(validate_event_payload(self.payload))
        account_id = self.resolve_account_id()
        persist_instance_link(context, account_id, workflow_name, instance_id)
        self.hook.send_event(workflow_name, instance_id, event_type, self.payload, account_id=account_id)
        self.log.info(
            "Sent event %r (%d bytes) to instance %r of %r.", event_type, size, instance_id, workflow_name
        )
        return {"workflow_name": workflow_name, "instance_id": instance_id, "event_type": event_type}


class CloudflareWorkflowChangeInstanceStatusOperator(_WorkflowsOperator):
    """
    Pause, resume, terminate or restart a Workflow instance.

    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param action: ``"pause"``, ``"resume"``, ``"terminate"`` or ``"restart"``.
    :param rollback: with ``terminate``: run the Workflow's rollback handlers first.
    :param restart_from: with ``restart``: ``{"name": <step name as written in code>, "count"?: n,
        "type"?: "do" | "sleep" | "waitForEvent"}`` to restart from that step instead of the start.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "action",
        "account_id",
        "cloudflare_conn_id",
    )
    operator_extra_links = (CloudflareWorkflowInstanceLink(),)

    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        action: str,
        rollback: bool | None = None,
        restart_from: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.action = action
        self.rollback = rollback
        self.restart_from = restart_from

    def execute(self, context: Context) -> dict[str, Any]:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id = validate_instance_id(self.instance_id)
        action = validate_status_action(self.action)
        account_id = self.resolve_account_id()
        persist_instance_link(context, account_id, workflow_name, instance_id)
        try:
            result = self.hook.change_instance_status(
                workflow_name,
                instance_id,
                action,
                rollback=self.rollback,
                restart_from=self.restart_from,
                account_id=account_id,
            )
        except CloudflareWorkflowsConflictError as error:
            raise CloudflareWorkflowsError(
                f"Cannot {action} instance {instance_id!r} of {workflow_name!r} in its current state "
                f"({'not in a restartable state' if action is StatusAction.RESTART else 'state conflict'}); "
                f"Cloudflare said: {error}"
            ) from error
        self.log.info("Asked instance %r to %s; status now %s.", instance_id, action, result.get("status"))
        return {"workflow_name": workflow_name, "instance_id": instance_id, "action": str(action), **result}


class CloudflareWorkflowCreateInstancesOperator(_WorkflowsOperator):
    """
    Start many instances of a Workflow, 100 per API call, idempotent across task retries.

    :param workflow_name: the Workflow.
    :param instances: one item per instance: ``{"instance_id"?: ..., "params"?: ...,
        "instance_retention"?: ...}``. Items without an id get one derived from the task and the item's
        position, so a retried task finds them instead of starting duplicates.
    """

    template_fields: Sequence[str] = ("workflow_name", "instances", "account_id", "cloudflare_conn_id")
    template_fields_renderers = {"instances": "json"}

    def __init__(self, *, workflow_name: str, instances: Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instances = instances

    def _items(self, context: Context) -> list[dict[str, Any]]:
        if isinstance(self.instances, str | bytes) or not isinstance(self.instances, Sequence):
            raise CloudflareWorkflowsConfigurationError(
                "instances must be a list of dicts like {'params': {...}}, "
                f"got {type(self.instances).__name__}."
            )
        ti = context["ti"]
        items = []
        for position, item in enumerate(self.instances):
            if not isinstance(item, Mapping):
                raise CloudflareWorkflowsConfigurationError(
                    f"instances[{position}] must be a dict with optional 'instance_id', 'params', "
                    f"'instance_retention', got {item!r}."
                )
            unknown = set(item) - {"instance_id", "params", "instance_retention"}
            if unknown:
                raise CloudflareWorkflowsConfigurationError(
                    f"instances[{position}] has unknown keys {sorted(unknown)}; "
                    "allowed: 'instance_id', 'params', 'instance_retention'."
                )
            instance_id = item.get("instance_id") or derive_instance_id(
                ti.dag_id, ti.run_id, ti.task_id, _map_index(ti), item=position
            )
            encode_json(item.get("params"), f"instances[{position}].params")
            items.append({**item, "instance_id": validate_new_instance_id(instance_id)})
        ids = [item["instance_id"] for item in items]
        if len(set(ids)) != len(ids):
            raise CloudflareWorkflowsConfigurationError(
                "instances contains the same instance_id more than once."
            )
        return items

    def execute(self, context: Context) -> list[str]:
        workflow_name = validate_workflow_name(self.workflow_name)
        items = self._items(context)
        account_id = self.resolve_account_id()
        for start in range(0, len(items), MAX_BATCH_SIZE):
            chunk = items[start : start + MAX_BATCH_SIZE]
            created = {
                item.get("id")
                for item in self.hook.create_instances_batch(workflow_name, chunk, account_id=account_id)
            }
            # Cloudflare skips ids that already exist; they were created by an earlier try of this task.
            skipped = [item["instance_id"] for item in chunk if item["instance_id"] not in created]
            for instance_id in skipped:
                self.hook.get_instance(workflow_name, instance_id, simple=True, account_id=account_id)
            self.log.info(
                "Batch %d: started %d instance(s), %d already existed.",
                start // MAX_BATCH_SIZE + 1,
                len(chunk) - len(skipped),
                len(skipped),
            )
        ids = [item["instance_id"] for item in items]
        annotate_outlet_events(context, self, {"workflow_name": workflow_name, "instance_ids": ids})
        return ids
