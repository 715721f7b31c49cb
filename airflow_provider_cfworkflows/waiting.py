"""What a wait on a Workflow step or instance decides, as pure code shared by the sensors and triggers.

The sensors (sync, on a worker) and the triggers (async, in the triggerer) only move data: the step
check is a generator (:func:`plan_step_check`) that says which API call to make next and decides from
the answers, and each side drives it with its own transport. So both paths make the same calls and
always decide the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.statuses import (
    TERMINAL_INSTANCE_STATUSES,
    TERMINAL_STEP_STATUSES,
    StepType,
    is_known_status,
)
from airflow_provider_cfworkflows.validation import validate_states

# Instance outputs up to this size (serialized) are returned by the instance sensor; larger ones are
# left out of XCom (read them with the hook, or return less from the Workflow's run()).
MAX_SUMMARY_OUTPUT_BYTES = 64 * 1024
_COUNTER_SUFFIX = re.compile(r"-\d+$")
# Entries of the details' ``steps`` array that answer to each /step ``type``.
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
    :param error: the remote error, if any (for a pending step: the failed attempt it is retrying).
    :param step_name: the exact logged step name, when one was found.
    :param output: the instance output (successful instance checks only).
    """

    verdict: Verdict
    status: str | None
    message: str
    error: RemoteError | None = None
    step_name: str | None = None
    output: Any = None


@dataclass(frozen=True)
class StepQuery:
    """Next call: ``GET .../step?name=<step_name>``. Answer with the ``StepOutput``, or None for a 404."""

    step_name: str


@dataclass(frozen=True)
class InstanceQuery:
    """Next call: ``GET .../instances/{id}`` (``simple=true`` without steps). Answer with its result."""

    simple: bool


StepCheckPlan = Generator[StepQuery | InstanceQuery, Any, Check]


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


def status_of(details: Any) -> str | None:
    """The ``status`` of instance details, or None when the answer has none."""
    status = details.get("status") if isinstance(details, Mapping) else None
    return status if isinstance(status, str) else None


def instance_not_found_error(
    error: CloudflareWorkflowsNotFoundError, workflow_name: str, instance_id: str
) -> CloudflareWorkflowsNotFoundError:
    """The 404 of an instance lookup, saying what was looked for."""
    return CloudflareWorkflowsNotFoundError(
        f"Instance {instance_id!r} of workflow {workflow_name!r} was not found: check workflow_name, "
        "instance_id and the account (account_id or the connection's login)",
        http_status=error.http_status,
        errors=error.errors,
        cf_ray=error.cf_ray,
        method=error.method,
        path=error.path,
    )


def describe_steps(details: Mapping[str, Any] | None) -> str:
    """``'prepare-1' (step), 'approval-1' (waitForEvent)`` for the steps in instance details."""
    names = [
        f"{entry.get('name')!r} ({entry.get('type')})"
        for entry in (details or {}).get("steps") or []
        if isinstance(entry, Mapping) and entry.get("name")
    ]
    return ", ".join(names) if names else "none yet"


def plan_step_check(
    step_name: str,
    *,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    known_name: str | None = None,
) -> StepCheckPlan:
    """
    The calls that decide on a step, and the decision (the generator's return value).

    ``/step`` under each candidate name (see :func:`step_name_candidates`) until one answers; then the
    instance only when needed: full details when no name answered (its status says "not yet" or
    "never", its steps are listed in the message), ``simple=true`` when the step is not final yet
    (a finished instance means the step can never get there). A final step costs one call; when the
    instance turns out to be final, the step is read once more (it may have moved in between).

    :param known_name: the exact name an earlier check found; tried first to save a call.
    """
    candidates = step_name_candidates(step_name)
    if known_name in candidates:
        candidates = (known_name, *(name for name in candidates if name != known_name))

    def decide(
        step: StepOutput | None, exact: str | None, instance_status: str | None, details: Any
    ) -> Check:
        return evaluate_step(
            step,
            step_label=step_name,
            step_name=exact if step is not None else None,
            instance_status=instance_status,
            instance_details=details if step is None else None,
            success_states=success_states,
            failure_states=failure_states,
        )

    step, exact = yield from _find_step(candidates)
    if step is not None and step.status in (*success_states, *failure_states, *TERMINAL_STEP_STATUSES):
        return decide(step, exact, None, None)
    details = yield InstanceQuery(simple=step is not None)
    instance_status = status_of(details)
    if instance_status in TERMINAL_INSTANCE_STATUSES:
        # The step may have started or finished between the two calls. Once the instance is final its
        # steps are too, so one more look is authoritative (and "never ran" is never a race).
        if step is None:
            step, exact = yield from _find_step(candidates)
        else:
            step = (yield StepQuery(exact)) or step
    return decide(step, exact, instance_status, details)


def _find_step(
    candidates: tuple[str, ...],
) -> Generator[StepQuery, StepOutput | None, tuple[StepOutput | None, str]]:
    """Ask ``/step`` for each candidate until one answers: ``(step, its name)``, else ``(None, first)``."""
    for candidate in candidates:
        step = yield StepQuery(candidate)
        if step is not None:
            return step, candidate
    return None, candidates[0]


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
        missing or not final: a finished instance means the step will never get there).
    :param instance_details: full instance details, when looked up (to list the steps it has).
    :param success_states: step statuses that end the wait successfully.
    :param failure_states: step statuses that end it as a failure.
    """
    if step is None:
        steps = describe_steps(instance_details)
        if instance_status in TERMINAL_INSTANCE_STATUSES:
            return Check(
                Verdict.FAILURE,
                None,
                f"Step {step_label!r} never ran: the instance is {instance_status} and will not run it. "
                f"Steps the instance has: {steps}. Check the name (as written in the Workflow code, or "
                "the logged name with its -N suffix) and the step_type.",
            )
        return Check(
            Verdict.PENDING,
            None,
            f"Step {step_label!r} has not started yet (instance {instance_status}; steps so far: {steps}).",
        )
    status = step.status
    if status in success_states:
        return Check(Verdict.SUCCESS, status, f"Step {step_name!r} is {status}.", step.error, step_name)
    if status in failure_states:
        return Check(
            Verdict.FAILURE,
            status,
            f"Step {step_name!r} is {status}: {step.error or 'no error given'}.",
            step.error,
            step_name,
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
    status = status_of(details)
    error = RemoteError.from_api(details.get("error"))
    if status is None:
        return Check(Verdict.PENDING, None, "The instance details have no status; still waiting.")
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
            Verdict.PENDING,
            status,
            f"The instance has a status this provider does not know ({status!r}); still waiting.",
        )
    return Check(Verdict.PENDING, status, f"The instance is {status}; still waiting.", error)


def step_failure_lines(details: Mapping[str, Any], step_name: str | None, step_type: str) -> list[str]:
    """Readable lines about a step's failed attempts (``attempt 2: Error: upstream 503``)."""
    lines = []
    instance_error = RemoteError.from_api(details.get("error"))
    if instance_error:
        lines.append(f"instance {details.get('status')}: {instance_error}")
    entry_types = _ENTRY_TYPES.get(StepType(step_type), ())
    for entry in details.get("steps") or []:
        if not isinstance(entry, Mapping) or entry.get("name") != step_name:
            continue
        if entry.get("type") not in entry_types:
            continue
        for number, attempt in enumerate(entry.get("attempts") or [], start=1):
            if isinstance(attempt, Mapping) and attempt.get("success") is False:
                lines.append(f"attempt {number}: {RemoteError.from_api(attempt.get('error')) or 'failed'}")
        if entry.get("error"):
            lines.append(f"error: {RemoteError.from_api(entry.get('error'))}")
    return lines


def instance_failure_lines(details: Mapping[str, Any]) -> list[str]:
    """Readable lines about the failed steps of an instance (their last errors), from full details."""
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
            attempts = f" ({len(failed)} failed attempt(s))" if failed else ""
            name, kind = entry.get("name"), entry.get("type")
            lines.append(f"step {name!r} ({kind}) failed: {last or 'no error given'}{attempts}")
        elif failed:
            lines.append(f"step {entry.get('name')!r}: {len(failed)} failed attempt(s), then went on")
    return lines


def summary_output(output: Any) -> dict[str, Any]:
    """
    ``{"output": output}`` when it is JSON of at most ``MAX_SUMMARY_OUTPUT_BYTES``; otherwise
    ``{"output": None, "output_truncated": True, "output_bytes": <size or None>}``.
    """
    try:
        size = len(json.dumps(output, allow_nan=False).encode())
    except (TypeError, ValueError):
        return {"output": None, "output_truncated": True, "output_bytes": None}
    if size > MAX_SUMMARY_OUTPUT_BYTES:
        return {"output": None, "output_truncated": True, "output_bytes": size}
    return {"output": output}
