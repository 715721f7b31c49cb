"""What a look at a Workflow step or instance decides: pure code, shared by sensors, operators and triggers.

The sensors and operators (sync, on a worker) and the triggers (async, in the triggerer) only move
data: the step check is a generator (:func:`plan_step_check`) that says which API call to make next and
decides from the answers; :mod:`.looks` drives it with each transport. So both paths make the same
calls and always decide the same way.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsUnknownWorkflowError,
)
from airflow_provider_cfworkflows.instance_details import (
    explain_missing_step,
    read_step_entry,
    status_of,
    step_name_candidates,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput, end_sentence
from airflow_provider_cfworkflows.remote_text import (
    MAX_XCOM_DEPTH,
    escape_lone_surrogates,
    nested_deeper_than,
)
from airflow_provider_cfworkflows.statuses import (
    TERMINAL_INSTANCE_STATUSES,
    TERMINAL_STEP_STATUSES,
    is_known_status,
)
from airflow_provider_cfworkflows.validation import missing_value_hint, validate_states

# Instance outputs up to this size (serialized) are returned by the instance sensor; larger ones are
# left out of XCom (read them with the hook, or return less from the Workflow's run()).
MAX_SUMMARY_OUTPUT_BYTES = 64 * 1024


class Verdict(StrEnum):
    """Outcome of one check."""

    SUCCESS = "success"
    FAILURE = "failure"
    PENDING = "pending"


@dataclass(frozen=True)
class Check:
    """
    The decision on one look at a step or an instance.

    :param verdict: success, failure, or not yet.
    :param status: the remote status seen (None when the step has not started).
    :param message: what was seen, in words, for the task log.
    :param error: the remote error, if any (for a pending step: the failed attempt it is retrying).
    :param step_name: the exact logged step name, when one was found.
    :param output: the instance output (successful instance checks only).
    :param details: the full instance details the check was decided on (step checks), so a failure
        report needs no second read of them.
    """

    verdict: Verdict
    status: str | None
    message: str
    error: RemoteError | None = None
    step_name: str | None = None
    output: Any = None
    details: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class InstanceQuery:
    """Next call: ``GET .../instances/{id}`` with its steps. Answer with its result."""


@dataclass(frozen=True)
class StepQuery:
    """
    Next call: ``GET .../step`` for each of ``candidates`` in turn until one exists. Answer with
    ``(the name that answered, its StepOutput)``, or None when each got a 404.
    """

    candidates: tuple[str, ...]


StepCheckPlan = Generator[InstanceQuery | StepQuery, Any, Check]


def describe_awaited_instance(workflow_name: str, instance_id: str) -> str:
    """``instance 'i' of workflow 'wf'``: what an instance wait waits for, in messages."""
    return f"instance {instance_id!r} of workflow {workflow_name!r}"


def describe_awaited_step(workflow_name: str, instance_id: str, step_name: str, step_type: str) -> str:
    """``step 'x' (step) of instance 'i' of workflow 'wf'``: what a step wait waits for, in messages."""
    return f"step {step_name!r} ({step_type}) of {describe_awaited_instance(workflow_name, instance_id)}"


def check_states(
    success_states: Iterable[str], failure_states: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate success/failure states: known statuses, at least one success state, no overlap."""
    success = tuple(str(state) for state in validate_states(success_states, "success_states"))
    failure = tuple(str(state) for state in validate_states(failure_states, "failure_states"))
    if not success:
        raise CloudflareWorkflowsConfigurationError("success_states must name at least one status.")
    overlap = sorted(set(success) & set(failure))
    if overlap:
        raise CloudflareWorkflowsConfigurationError(
            f"success_states and failure_states overlap on {overlap}; a status can only be one of them."
        )
    return success, failure


def instance_not_found_error(
    error: CloudflareWorkflowsNotFoundError, workflow_name: str, instance_id: str
) -> CloudflareWorkflowsNotFoundError:
    """The 404 of an instance lookup, saying what was looked for (an unknown workflow already says so)."""
    if isinstance(error, CloudflareWorkflowsUnknownWorkflowError):
        return error
    return error.restated(
        f"Instance {instance_id!r} of workflow {workflow_name!r} was not found: check workflow_name, "
        "instance_id and the account (account_id or the connection's login)."
        + missing_value_hint(instance_id)
    )


def plan_step_check(
    step_name: str,
    *,
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    instance_label: str,
    known_name: str | None = None,
) -> StepCheckPlan:
    """
    The calls that decide on a step, and the decision (the generator's return value).

    Details first: one ``GET .../instances/{id}`` (full) lists every step the instance has run, so it
    answers on its own whether the step has not started, is running or retrying (with the failed
    attempt's error), waits for its event, or has finished, and whether the instance can still get
    there. ``/step`` is asked only where the details cannot answer (see
    :func:`~airflow_provider_cfworkflows.instance_details.read_step_entry`).

    Requests per look: 1 whatever the step's state (asking ``/step`` first would cost 2 for a step
    not yet final and 3 when the instance had just ended). A finished entry already says ``complete``
    or ``errored`` and carries the failed attempt's error, so it is not confirmed with ``/step``: that
    would add 1 request per completed wait, and 1,000 step waits over 100 instances finishing within 5
    minutes would then need 300 requests a minute, past the 240 a minute of Cloudflare's 1,200 per 5
    minutes. The details are one snapshot: a step absent while the instance is final never ran.

    :param step_type: ``"step"`` or ``"waitForEvent"`` (the kind of entry to read).
    :param instance_label: ``instance 'i' of workflow 'wf'``, for messages.
    :param known_name: the exact name an earlier check found; tried first.
    """
    candidates = step_name_candidates(step_name, known_name=known_name)
    details = yield InstanceQuery()
    reading = read_step_entry(details, candidates, step_type)
    step, exact = reading.step, reading.name
    if not reading.settled:
        # The details cannot answer: ask /step, under the entry's name first when there is one.
        found = yield StepQuery(step_name_candidates(step_name, known_name=reading.name or known_name))
        step, exact = (found[1], found[0]) if found is not None else (None, None)
    if step is None:
        final, message = explain_missing_step(
            details,
            step_label=step_name,
            tried=candidates,
            step_type=step_type,
            instance_label=instance_label,
        )
        check = Check(Verdict.FAILURE if final else Verdict.PENDING, None, message)
    else:
        check = evaluate_step(
            step,
            step_name=exact or step_name,
            instance_label=instance_label,
            instance_status=status_of(details),
            success_states=success_states,
            failure_states=failure_states,
        )
    return replace(check, details=details)


def evaluate_step(
    step: StepOutput,
    *,
    step_name: str,
    instance_label: str,
    instance_status: str | None,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
) -> Check:
    """
    Decide on a step that exists.

    :param step: its status and error (from ``/step`` or its step-log entry).
    :param step_name: the exact logged name.
    :param instance_label: ``instance 'i' of workflow 'wf'``, for messages.
    :param instance_status: the instance's status (a finished instance means a step that is not
        final will never get there).
    :param success_states: step statuses that end the wait successfully.
    :param failure_states: step statuses that end it as a failure.
    """
    status = step.status
    subject = f"Step {step_name!r} of {instance_label}"

    def decided(verdict: Verdict, message: str) -> Check:
        return Check(verdict, status, message, step.error, step_name)

    if status in success_states:
        return decided(Verdict.SUCCESS, f"{subject} is {status}.")
    if status in failure_states:
        return decided(
            Verdict.FAILURE, f"{subject} is {status}: {end_sentence(step.error or 'no error given')}"
        )
    if status in TERMINAL_STEP_STATUSES:
        return decided(
            Verdict.FAILURE,
            f"{subject} is {status}, which is neither a success state {list(success_states)} nor a failure "
            "state; it will not change any more.",
        )
    if instance_status in TERMINAL_INSTANCE_STATUSES:
        return decided(
            Verdict.FAILURE,
            f"{subject} is {status} but the instance is {instance_status}: the step cannot finish.",
        )
    if step.is_retrying:
        return decided(
            Verdict.PENDING, f"{subject} is retrying after a failed attempt: {end_sentence(step.error)}"
        )
    if not is_known_status(status):
        return decided(
            Verdict.PENDING,
            f"{subject} has a status this provider does not know ({status!r}); still waiting.",
        )
    return decided(Verdict.PENDING, f"{subject} is {status}; still waiting.")


def evaluate_instance(
    details: Mapping[str, Any], *, success_states: tuple[str, ...], failure_states: tuple[str, ...]
) -> Check:
    """Decide on an instance from its details (``simple=true`` is enough)."""
    status = status_of(details)
    error = RemoteError.from_api(details.get("error"))
    if status is None:
        return Check(Verdict.PENDING, None, "The instance details have no status; still waiting.")

    def decided(verdict: Verdict, message: str, output: Any = None) -> Check:
        return Check(verdict, status, message, error, output=output)

    if status in success_states:
        return decided(Verdict.SUCCESS, f"The instance is {status}.", details.get("output"))
    if status in failure_states:
        return decided(
            Verdict.FAILURE, f"The instance is {status}: {end_sentence(error or 'no error given')}"
        )
    if status in TERMINAL_INSTANCE_STATUSES:
        return decided(
            Verdict.FAILURE,
            f"The instance is {status}, which is neither a success state {list(success_states)} nor a "
            "failure state; it will not change any more.",
        )
    if not is_known_status(status):
        return Check(
            Verdict.PENDING,
            status,
            f"The instance has a status this provider does not know ({status!r}); still waiting.",
        )
    return decided(Verdict.PENDING, f"The instance is {status}; still waiting.")


def summary_output(output: Any) -> dict[str, Any]:
    """
    ``{"output": output}`` when it is JSON of at most ``MAX_SUMMARY_OUTPUT_BYTES`` nested at most
    ``remote_text.MAX_XCOM_DEPTH`` levels (a lone surrogate in its strings as its escape, see
    :func:`.remote_text.escape_lone_surrogates`); otherwise ``{"output": None, "output_truncated": True,
    "output_bytes": <size or None>}``.
    """
    left_out: dict[str, Any] = {"output": None, "output_truncated": True, "output_bytes": None}
    if nested_deeper_than(output, MAX_XCOM_DEPTH):
        return left_out
    try:
        size = len(json.dumps(output, allow_nan=False).encode())
    except (TypeError, ValueError):
        return left_out
    if size > MAX_SUMMARY_OUTPUT_BYTES:
        return {**left_out, "output_bytes": size}
    return {"output": escape_lone_surrogates(output)[0]}
