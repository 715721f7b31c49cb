"""The step-output operator: the full output of one step, to XCom or to object storage."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow.sdk.exceptions import AirflowException

from airflow_provider_cfworkflows.base import CloudflareWorkflowsBaseOperator, annotate_outlet_events
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutputDeliveryError,
    CloudflareWorkflowOutputRejectedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepFailedError,
    CloudflareWorkflowStepNotFoundError,
    CloudflareWorkflowStepNotReadyError,
)
from airflow_provider_cfworkflows.instance_details import (
    describe_step,
    explain_missing_step,
    step_name_candidates,
)
from airflow_provider_cfworkflows.looks import get_instance_details
from airflow_provider_cfworkflows.models import (
    JSON_CONTENT_TYPE,
    OCTET_STREAM_CONTENT_TYPE,
    REDACTED_OUTPUT,
    StepOutput,
    StepOutputStream,
    end_sentence,
)
from airflow_provider_cfworkflows.output_storage import (
    WRITE_BLOCK_SIZE,
    OutputSizeMismatchError,
    WrittenObject,
    checked_output_target,
    owner_tag_for,
    remove_stale_temporaries,
    write_object,
)
from airflow_provider_cfworkflows.remote_text import (
    MAX_XCOM_DEPTH,
    escape_lone_surrogates,
    nested_deeper_than,
)
from airflow_provider_cfworkflows.statuses import InstanceStatus, StepType
from airflow_provider_cfworkflows.validation import (
    validate_instance_id,
    validate_step_attempt,
    validate_step_name,
    validate_workflow_name,
)

if TYPE_CHECKING:
    from airflow.sdk import Context, ObjectStoragePath

    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

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


@dataclass(frozen=True)
class _StepOutputQuery:
    """The rendered, checked arguments that name the step output."""

    workflow_name: str
    instance_id: str
    step_name: str
    step_type: StepType
    attempt: int | None

    @property
    def where(self) -> str:
        return f"instance {self.instance_id!r} of workflow {self.workflow_name!r}"


@dataclass(frozen=True)
class _Delivered:
    """What was written to ``output_path``, and as what."""

    written: WrittenObject
    content_type: str


class CloudflareWorkflowStepOutputOperator(CloudflareWorkflowsBaseOperator):
    """
    Fetch the full, untruncated output of one step of a Workflow instance (``GET .../step``).

    Where the output goes:

    - no ``output_path``: a JSON output of at most ``max_xcom_bytes`` is returned as the XCom
      ``return_value`` (plain JSON). A larger JSON output, one nested more than 150 levels deep, or a
      binary (``ReadableStream``) output, fails the task with a message naming ``output_path``: bytes
      never go to XCom.
    - ``output_path``: the output is written there (JSON as UTF-8 JSON, binary byte for byte, streamed
      with bounded memory) and the path is returned as a string; the XComs ``content_type``,
      ``size_bytes`` and ``sha256`` describe what was written. The write is atomic: a failed or
      interrupted transfer leaves nothing at ``output_path``, and a retry writes the whole object. A
      replaced file is a new file (its mode comes from the umask); a directory that appears at a local
      ``output_path`` during the transfer fails the task, a symlink is replaced, never followed.
      Asset ``outlets`` get the workflow, instance, step and path in their event's ``extra``.

    A lone UTF-16 surrogate in a JSON output (``"\\ud83d"``, a JavaScript string cut inside an emoji)
    has no UTF-8 form: a file gets its JSON escape, the text Cloudflare sent; XCom, which cannot store
    it, gets the six characters of that escape instead (with a warning in the log).

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
        query = self._validated_query()
        target = self._checked_target()
        owner_tag = self._clean_up_earlier_tries(context, target)
        account_id = self.persist_instance_link(context, query.workflow_name, query.instance_id)
        with ExitStack() as stack:
            name, stream = _open_step_output(stack, self.hook, query, account_id)
            what = f"{describe_step(name, query.step_type, query.attempt)} of {query.where}"
            _check_complete(stream.step, what, context, for_attempt=query.attempt is not None)
            if stream.step.is_stream:
                delivered = self._write_stream(stream, target, what, owner_tag)
            else:
                output = self._check_redacted(stream.step.output, what)
                if target is None:
                    return self._return_through_xcom(output, what)
                encoded = _encode_json(output)
                delivered = _Delivered(
                    _write(target, [encoded], len(encoded), what, owner_tag), JSON_CONTENT_TYPE
                )
        self._report_written(context, query, name, what, delivered)
        return delivered.written.path

    def _validated_query(self) -> _StepOutputQuery:
        """The rendered arguments, checked before any call."""
        step_type, attempt = validate_step_attempt(self.step_type, self.attempt)
        return _StepOutputQuery(
            workflow_name=validate_workflow_name(self.workflow_name),
            instance_id=validate_instance_id(self.instance_id),
            step_name=validate_step_name(self.step_name),
            step_type=step_type,
            attempt=attempt,
        )

    def _checked_target(self) -> ObjectStoragePath | None:
        """
        ``output_path``, checked before any call (scheme, bucket, directory): an unusable path fails the
        task without retry, since a retry would fetch the output again only to fail the same way.
        """
        if self.output_path is None:
            return None
        try:
            return checked_output_target(self.output_path)
        except CloudflareWorkflowsConfigurationError as error:
            raise CloudflareWorkflowOutputRejectedError(error.message) from error

    def _clean_up_earlier_tries(self, context: Context, target: ObjectStoragePath | None) -> str:
        """
        Remove the temporaries that killed earlier tries of this task left next to ``target``; return
        the tag this try's temporary carries. A failed clean-up only warns: the write stays atomic.
        """
        ti = context["ti"]
        map_index = ti.map_index if ti.map_index is not None else -1
        owner_tag = owner_tag_for(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=map_index)
        if target is not None:
            try:
                remove_stale_temporaries(target, owner_tag)  # it logs what it removed
            except Exception as error:
                self.log.warning(
                    "Could not look for temporaries left by earlier tries next to %s: %s", target, error
                )
        return owner_tag

    def _write_stream(
        self, stream: StepOutputStream, target: ObjectStoragePath | None, what: str, owner_tag: str
    ) -> _Delivered:
        """A binary output goes to ``output_path`` only: bytes never go to XCom."""
        if target is None:
            raise CloudflareWorkflowOutputRejectedError(
                f"The output of {what} is binary (application/octet-stream: the step returned a "
                f"ReadableStream{_size_note(stream.content_length)}). Binary outputs never go to XCom: set "
                "output_path (for example 's3://aws_conn@bucket/key.bin' or 'file:///data/out.bin') to "
                "write it to object storage."
            )
        return _Delivered(
            _write(target, stream.chunks, stream.content_length, what, owner_tag), OCTET_STREAM_CONTENT_TYPE
        )

    def _return_through_xcom(self, output: Any, what: str) -> Any:
        """
        A JSON output of at most ``max_xcom_bytes``, nested at most ``MAX_XCOM_DEPTH`` levels, is the
        task's return value; a lone surrogate in its strings goes as the characters of its escape.
        """
        if nested_deeper_than(output, MAX_XCOM_DEPTH):
            raise CloudflareWorkflowOutputRejectedError(
                f"The output of {what} nests lists and objects more than {MAX_XCOM_DEPTH} levels deep, "
                "deeper than Airflow's XCom can carry. Set output_path (for example "
                "'s3://aws_conn@bucket/key.json') to write it to object storage whole."
            )
        output, escaped = escape_lone_surrogates(output)
        if escaped:
            self.log.warning(
                "The output of %s holds %d lone UTF-16 surrogate(s) (a JavaScript string cut inside a "
                "character), which XCom cannot store: each is passed on as the six characters of its "
                "escape, e.g. '\\ud83d'. Set output_path to keep the exact JSON text.",
                what,
                escaped,
            )
        size = len(_encode_json(output))
        if size > self.max_xcom_bytes:
            raise CloudflareWorkflowOutputRejectedError(
                f"The output of {what} is {size} bytes as JSON, more than max_xcom_bytes="
                f"{self.max_xcom_bytes}. Set output_path (for example 's3://aws_conn@bucket/key.json') to "
                "write it to object storage and pass its path through XCom, or raise max_xcom_bytes if "
                "your metadata DB can take it."
            )
        self.log.info("Returning the output of %s (%d bytes of JSON) as XCom.", what, size)
        return output

    def _report_written(
        self, context: Context, query: _StepOutputQuery, step_name: str, what: str, delivered: _Delivered
    ) -> None:
        """Log what was written, push its description as XComs and attach it to asset events."""
        written, content_type = delivered.written, delivered.content_type
        self.log.info(
            "Wrote the output of %s to %s: %d bytes, %s, sha256 %s.",
            what,
            written.path,
            written.size_bytes,
            content_type,
            written.sha256,
        )
        self.cloudflare_lineage_outputs.append(written.path)
        ti = context["ti"]
        ti.xcom_push(key=XCOM_CONTENT_TYPE, value=content_type)
        ti.xcom_push(key=XCOM_SIZE_BYTES, value=written.size_bytes)
        ti.xcom_push(key=XCOM_SHA256, value=written.sha256)
        annotate_outlet_events(
            context,
            self,
            {
                "workflow_name": query.workflow_name,
                "instance_id": query.instance_id,
                "step_name": step_name,
                "output_path": written.path,
                "content_type": content_type,
                "size_bytes": written.size_bytes,
                "sha256": written.sha256,
            },
        )

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


def _open_step_output(
    stack: ExitStack, hook: CloudflareWorkflowsHook, query: _StepOutputQuery, account_id: str
) -> tuple[str, StepOutputStream]:
    """Open ``/step`` for the first candidate name that exists; the response stays open in ``stack``."""
    candidates = step_name_candidates(query.step_name)
    try:
        return stack.enter_context(
            hook.find_step_output(
                query.workflow_name,
                query.instance_id,
                candidates,
                query.step_type,
                query.attempt,
                account_id=account_id,
                chunk_size=WRITE_BLOCK_SIZE,  # reads of exactly one write block: no re-cutting
            )
        )
    except CloudflareWorkflowStepNotFoundError as not_found:
        raise _no_such_step(hook, query, account_id, candidates, not_found) from None


def _no_such_step(
    hook: CloudflareWorkflowsHook,
    query: _StepOutputQuery,
    account_id: str,
    candidates: tuple[str, ...],
    not_found: CloudflareWorkflowStepNotFoundError,
) -> AirflowException:
    """
    Why no candidate name answered, decided as the step sensor decides: the instance's details (one
    GET, only on this error) say whether the step has not started yet (retryable: put a sensor
    upstream) or never will run on a finished instance (a misspelled name or wrong step_type: fails
    without retry, listing the steps the instance has).
    """
    try:
        details = get_instance_details(
            hook, query.workflow_name, query.instance_id, simple=False, account_id=account_id
        )
    except CloudflareWorkflowsNotFoundError:
        raise
    except CloudflareWorkflowsError as error:
        what = describe_step(query.step_name, query.step_type, query.attempt)
        return CloudflareWorkflowStepNotReadyError(
            f"Found no {what} of {query.where}: the step has not started yet, or a name is wrong (the "
            f"instance could not be checked: {error}). {_SENSOR_HINT} Cloudflare said: {not_found}"
        )
    final, message = explain_missing_step(
        details,
        step_label=query.step_name,
        tried=candidates,
        step_type=query.step_type,
        instance_label=query.where,
        attempt=query.attempt,
    )
    if final:
        return CloudflareWorkflowStepFailedError(message)
    return CloudflareWorkflowStepNotReadyError(f"{message} {_SENSOR_HINT} Cloudflare said: {not_found}")


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
            f"{_capitalized(what)} {step.status}: {end_sentence(step.error or 'no error details')} {advice}"
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
    """
    Compact UTF-8 JSON. A lone UTF-16 surrogate (JavaScript strings may hold one, e.g. a string cut
    inside an emoji) has no UTF-8 form: it is written as its JSON escape ``\\ud800``, as Cloudflare sends
    it, so the text is valid UTF-8 and reads back to the same value.
    """
    return json.dumps(output, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "backslashreplace")


def _size_note(content_length: int | None) -> str:
    return f", {content_length} bytes" if content_length is not None else ""


def _write(
    target: ObjectStoragePath, chunks: Any, expected_size: int | None, what: str, owner_tag: str
) -> WrittenObject:
    """Write atomically; on failure say that nothing was left at the target."""
    try:
        return write_object(target, chunks, expected_size=expected_size, owner_tag=owner_tag)
    except (OSError, ValueError) as error:
        # Storage errors (and a short stream): retryable, the next try writes the whole object again.
        kind = "was cut short" if isinstance(error, OutputSizeMismatchError) else "failed"
        raise CloudflareWorkflowOutputDeliveryError(
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
