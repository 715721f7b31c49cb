"""What a wait on a Workflow step or instance decides, as plain functions shared by sensors and triggers.

The sensors (sync, on a worker) and the triggers (async, in the triggerer) fetch the same data with
different transports and hand it to these functions, so both paths always decide the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.statuses import (
    TERMINAL_INSTANCE_STATUSES,
    TERMINAL_STEP_STATUSES,
    StepType,
    is_known_status,
)
from airflow_provider_cfworkflows.validation import validate_states

# Instance outputs up to this size (serialized) are returned by the instance sensor; larger ones are
# left out of XCom (read them with CloudflareWorkflowStepOutputOperator or the hook).
MAX_SUMMARY_OUTPUT_BYTES = 64 * 1024
_COUNTER_SUFFIX = re.compile(r"-\d+$")
# Entries of the details' ``steps`` array and the /step ``type`` they answer to.
_ENTRY_TYPES = {StepType.STEP: ("step",), StepType.WAIT_FOR_EVENT: ("waitForEvent",)}


class Verdict(StrEnum):
    """Outcome of one check."""

    SUCCESS = "success"
    FAILURE = "failure"
    PENDING = "pending"


@dataclass(frozen=True)
class Check:
    """
    One look at a step or an instance.

    :param verdict: success, failure, or not yet.
    :param status: the remote status seen (None when the step has not started).
    :param message: what was seen, in words, for the task log.
    :param error: the remote error, if any.
    :param step_name: the exact logged step name, when one was found.
    :param output: the instance output (instance checks only).
    """

    verdict: Verdict
    status: str | None
    message: str
    error: RemoteError | None = None
    step_name: str | None = None
    output: Any = None


def step_name_candidates(step_name: str) -> tuple[str, ...]:
    """
    The logged names to try for ``step_name``, most likely first.

    Cloudflare logs every step as ``<name as written>-<n>`` (its n-th run) and ``/step`` wants that
    exact name. A name already ending in ``-<digits>`` is tried as given, then as a name written that
    way in code (``phase-2`` is logged ``phase-2-1``); any other name means its first run.
    """
    if _COUNTER_SUFFIX.search(step_name):
        return (step_name, f"{step_name}-1")
    return (f"{step_name}-1",)


def check_states(
    success_states: Iterable[str], failure_states: Iterable[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Validate success/failure states: known statuses, at least one success state, no overlap."""
    success = validate_states(success_states, "success_states")
    failure = validate_states(failure_states, "failure_states")
    if not success:
        raise CloudflareWorkflowsConfigurationError("success_states must name at least one status.")
    overlap = sorted(set(success) & set(failure))
    if overlap:
        raise CloudflareWorkflowsConfigurationError(
            f"success_states and failure_states overlap on {overlap}; a status can only be one of them."
        )
    return success, failure


def describe_steps(details: Mapping[str, Any]) -> str:
    """``'prepare-1' (step), 'approval-1' (waitForEvent)`` for the steps in instance details."""
    names = [
        f"{entry.get('name')!r} ({entry.get('type')})"
        for entry in details.get("steps") or []
        if isinstance(entry, Mapping) and entry.get("name")
    ]
    return ", ".join(names) if names else "none yet"


def evaluate_step(
    step: StepOutput | None,
    *,
    step_label: str,
    step_name: str | None,
    instance_status: str | None,
    instance_details: Mapping[str, Any] | None,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
) -> Check:
    """
    Decide on a step.

    :param step: the ``/step`` answer, or None when no candidate name was found (404).
    :param step_label: the step as the user named it, for messages.
    :param step_name: the exact logged name that answered, if any.
    :param instance_status: the instance's status, when it was looked up (needed when the step is
        missing or not finished: a finished instance means the step will never get there).
    :param instance_details: full instance details, when looked up (to list the steps it has).
    """
    if step is None:
        steps = describe_steps(instance_details or {})
        if instance_status in TERMINAL_INSTANCE_STATUSES:
            return Check(
                Verdict.FAILURE,
                None,
                f"Step {step_label!r} never ran: the instance is {instance_status} and will not run it. "
                f"Steps the instance has: {steps}. Check the name (as written in the Workflow code, or "
                "the logged name with its -N suffix) and the step_type.",
            )
        return Check(
            Verdict.PENDING, None, f"Step {step_label!r} has not started yet (steps so far: {steps})."
        )
    status = step.status
    if status in success_states:
        return Check(Verdict.SUCCESS, status, f"Step {step_name!r} is {status}.", step.error, step_name)
    if status in failure_states:
        return Check(
            Verdict.FAILURE, status, f"Step {step_name!r} is {status}: {step.error}.", step.error, step_name
        )
    if status in TERMINAL_STEP_STATUSES:
        return Check(
            Verdict.FAILURE,
            status,
            f"Step {step_name!r} is {status}, which is neither a success state {list(success_states)} nor "
            "a failure state; it will not change any more.",
            step.error,
            step_name,
        )
    if instance_status in TERMINAL_INSTANCE_STATUSES:
        return Check(
            Verdict.FAILURE,
            status,
            f"Step {step_name!r} is {status} but the instance is {instance_status}: the step cannot finish.",
            step.error,
            step_name,
        )
    if step.is_retrying:
        message = f"Step {step_name!r} is retrying after a failed attempt: {step.error}."
    elif not is_known_status(status):
        message = f"Step {step_name!r} has a status this provider does not know ({status!r}); still waiting."
    else:
        message = f"Step {step_name!r} is {status}; still waiting."
    return Check(Verdict.PENDING, status, message, step.error, step_name)


def evaluate_instance(
    details: Mapping[str, Any], *, success_states: tuple[str, ...], failure_states: tuple[str, ...]
) -> Check:
    """Decide on an instance from its details (``simple=true`` is enough)."""
    status = str(details.get("status"))
    error = RemoteError.from_api(details.get("error"))
    if status in success_states:
        return Check(
            Verdict.SUCCESS, status, f"The instance is {status}.", error, output=details.get("output")
        )
    if status in failure_states:
        return Check(
            Verdict.FAILURE, status, f"The instance is {status}: {error or 'no error given'}.", error
        )
    if status in TERMINAL_INSTANCE_STATUSES:
        return Check(
            Verdict.FAILURE,
            status,
            f"The instance is {status}, which is neither a success state {list(success_states)} nor a "
            "failure state; it will not change any more.",
            error,
        )
    if not is_known_status(status):
        return Check(
            Verdict.PENDING, status, f"The instance has a status this provider does not know ({status!r})."
        )
    return Check(Verdict.PENDING, status, f"The instance is {status}; still waiting.", error)


def step_failure_lines(details: Mapping[str, Any], step_name: str | None, step_type: str) -> list[str]:
    """Readable lines about a step's failed attempts, from full instance details."""
    lines = []
    for entry in details.get("steps") or []:
        if not isinstance(entry, Mapping) or entry.get("name") != step_name:
            continue
        if entry.get("type") not in _ENTRY_TYPES.get(StepType(step_type), ()):
            continue
        for number, attempt in enumerate(entry.get("attempts") or [], start=1):
            if isinstance(attempt, Mapping) and attempt.get("success") is False:
                lines.append(f"attempt {number}: {RemoteError.from_api(attempt.get('error')) or 'failed'}")
        if entry.get("error"):
            lines.append(f"error: {RemoteError.from_api(entry.get('error'))}")
    return lines


def instance_failure_lines(details: Mapping[str, Any]) -> list[str]:
    """Readable lines about the failed steps of an instance, from full instance details."""
    lines = []
    for entry in details.get("steps") or []:
        if not isinstance(entry, Mapping):
            continue
        failed = [
            a for a in entry.get("attempts") or [] if isinstance(a, Mapping) and a.get("success") is False
        ]
        if entry.get("success") is False or entry.get("error"):
            last = RemoteError.from_api(entry.get("error")) or (
                RemoteError.from_api(failed[-1].get("error")) if failed else None
            )
            lines.append(
                f"step {entry.get('name')!r} ({entry.get('type')}) failed: {last or 'no error given'}"
            )
        elif failed:
            lines.append(f"step {entry.get('name')!r}: {len(failed)} failed attempt(s), then went on")
    return lines


def small_output(output: Any) -> tuple[Any, bool]:
    """``(output, False)`` when it is JSON of at most ``MAX_SUMMARY_OUTPUT_BYTES``, else ``(None, True)``."""
    try:
        size = len(json.dumps(output).encode())
    except (TypeError, ValueError):
        return None, True
    return (output, False) if size <= MAX_SUMMARY_OUTPUT_BYTES else (None, True)
