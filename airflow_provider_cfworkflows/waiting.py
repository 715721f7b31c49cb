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
    CloudflareWorkflowsUnknownWorkflowError,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.statuses import (
    TERMINAL_INSTANCE_STATUSES,
    TERMINAL_STEP_STATUSES,
    InstanceStatus,
    StepType,
    is_known_status,
)
from airflow_provider_cfworkflows.validation import validate_states

# Instance outputs up to this size (serialized) are returned by the instance sensor; larger ones are
# left out of XCom (read them with the hook, or return less from the Workflow's run()).
MAX_SUMMARY_OUTPUT_BYTES = 64 * 1024
_COUNTER_SUFFIX = re.compile(r"-[0-9]+\Z")
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
    """The 404 of an instance lookup, saying what was looked for (an unknown workflow already says so)."""
    if isinstance(error, CloudflareWorkflowsUnknownWorkflowError):
        return error
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
    step_type: str,
    success_states: tuple[str, ...],
    failure_states: tuple[str, ...],
    known_name: str | None = None,
) -> StepCheckPlan:
    """
    The calls that decide on a step, and the decision (the generator's return value).

    Details first: one ``GET .../instances/{id}`` (full) lists every step the instance has run, so it
    answers on its own whether the step has not started, is running or retrying (with the failed
    attempt's error), waits for its event, or has finished, and whether the instance can still get
    there. ``/step`` is asked only where the details cannot answer (see :func:`read_step_entry`).

    Requests per look (the arithmetic behind this order): details first costs 1 whatever the step's
    state; the earlier ``/step``-first order cost 2 for a step not yet final (``/step``, then the
    instance) and 3 when the instance had just ended. Confirming each completion with ``/step`` would
    add 1 per completed wait: 1,000 step waits over 100 instances finishing within 5 minutes would add
    200 requests per minute to the 100 looks per minute (at 60 s), 300 in all, past the 240 per minute
    that Cloudflare's 1,200 per 5 minutes allow. A finished entry already says ``complete`` or
    ``errored`` and carries the failed attempt's error, so it is not confirmed. The details are one
    snapshot: a step absent while the instance is final never ran, with no second look.

    :param step_type: ``"step"`` or ``"waitForEvent"`` (the kind of entry to read).
    :param known_name: the exact name an earlier check found; tried first.
    """
    candidates = step_name_candidates(step_name)
    if known_name in candidates:
        candidates = (known_name, *(name for name in candidates if name != known_name))
    details = yield InstanceQuery(simple=False)
    reading = read_step_entry(details, candidates, step_type)
    if reading.settled:
        step, exact = reading.step, reading.name
    else:
        # The details cannot answer: ask /step, under the entry's name first when there is one.
        ordered = (
            candidates
            if reading.name is None
            else (reading.name, *(c for c in candidates if c != reading.name))
        )
        step, exact = yield from _find_step(ordered)
    return evaluate_step(
        step,
        step_label=step_name,
        step_name=exact if step is not None else None,
        instance_status=status_of(details),
        instance_details=details if step is None else None,
        success_states=success_states,
        failure_states=failure_states,
    )


@dataclass(frozen=True)
class StepReading:
    """
    What instance details say about one step.

    :param settled: True when the details answer on their own (``step`` is then the step as ``/step``
        would report it, or None when it has not started); False when ``/step`` must be asked.
    :param step: the step's status and error, read from its entry.
    :param name: the exact logged name of the entry found, if any.
    """

    settled: bool
    step: StepOutput | None = None
    name: str | None = None


def read_step_entry(details: Any, candidates: tuple[str, ...], step_type: str) -> StepReading:
    """
    Read a step from full instance details, as ``/step`` would report it.

    A ``step`` entry: ``success`` null = ``running`` (a failed earlier attempt's error means retrying),
    true = ``complete``, false = ``errored`` with the last failed attempt's error. A ``waitForEvent``
    entry: ``finished`` false = ``waiting``, true = ``complete``, or ``errored`` with its ``error``
    (e.g. its timeout). The mapping mirrors ``/step`` (reference §5.2; inferred for the retrying
    error, which ``/step`` documents and the details show only as attempts).

    Not settled (``/step`` decides): details without a ``steps`` list, several entries under one name,
    an entry whose state field is missing or not a boolean, or an ``errored`` step entry whose
    attempts carry no error.
    """
    entries = details.get("steps") if isinstance(details, Mapping) else None
    if not isinstance(entries, list):
        return StepReading(settled=False)
    entry_types = _ENTRY_TYPES[StepType(step_type)]
    for name in candidates:
        matches = [
            entry
            for entry in entries
            if isinstance(entry, Mapping) and entry.get("name") == name and entry.get("type") in entry_types
        ]
        if len(matches) > 1:
            return StepReading(settled=False, name=name)
        if matches:
            step = _step_from_entry(matches[0], step_type)
            return StepReading(settled=step is not None, step=step, name=name)
    return StepReading(settled=True)


def _step_from_entry(entry: Mapping[str, Any], step_type: str) -> StepOutput | None:
    """The step of one details entry as ``/step`` reports it, or None when the entry cannot say."""
    if step_type == StepType.WAIT_FOR_EVENT:
        finished, error = entry.get("finished"), RemoteError.from_api(entry.get("error"))
        if not isinstance(finished, bool):
            return None
        if not finished:
            return StepOutput(InstanceStatus.WAITING.value, None, None)
        status = InstanceStatus.ERRORED if error else InstanceStatus.COMPLETE
        return StepOutput(status.value, error, None)
    success = entry.get("success")
    if "success" not in entry or not (success is None or isinstance(success, bool)):
        return None
    if success is True:
        return StepOutput(InstanceStatus.COMPLETE.value, None, None)
    failed = [
        attempt
        for attempt in entry.get("attempts") or []
        if isinstance(attempt, Mapping) and attempt.get("success") is False
    ]
    error = RemoteError.from_api(failed[-1].get("error")) if failed else None
    if success is False:
        return StepOutput(InstanceStatus.ERRORED.value, error, None) if error else None
    return StepOutput(InstanceStatus.RUNNING.value, error, None)


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
