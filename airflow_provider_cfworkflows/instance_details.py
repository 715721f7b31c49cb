"""Reading the answer of ``GET .../instances/{id}``: its status and its step log.

Plain functions over the JSON the API returns, used by the hook (messages about missing steps), by the
checks (a step read from its log entry) and by failure reports. The step log is the ``steps`` array of
the full details (``simple=false``); see Cloudflare's API reference for the instance ``get`` method:
https://developers.cloudflare.com/api/resources/workflows/subresources/instances/methods/get/
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.remote_text import MAX_LISTED_ITEMS, MAX_NAME_CHARS, bounded, bounded_list
from airflow_provider_cfworkflows.statuses import TERMINAL_INSTANCE_STATUSES, InstanceStatus, StepType
from airflow_provider_cfworkflows.validation import MAX_STEP_NAME_LENGTH

_COUNTER_SUFFIX = re.compile(r"-[0-9]+\Z")
# Entries of the details' ``steps`` array that answer to each /step ``type``.
_ENTRY_TYPES = {StepType.STEP: ("step",), StepType.WAIT_FOR_EVENT: ("waitForEvent",)}


def step_name_candidates(step_name: str, *, known_name: str | None = None) -> tuple[str, ...]:
    """
    The logged names to try for ``step_name``, most likely first.

    Cloudflare logs every step as ``<name as written>-<n>`` (its n-th run) and ``/step`` wants that
    exact name. A name already ending in ``-<digits>`` is tried as given, then as a name written that
    way in code (``phase-2`` is logged ``phase-2-1``) if it is short enough to be one (at most
    ``MAX_STEP_NAME_LENGTH`` characters); any other name means its first run.

    :param known_name: the exact name an earlier look found; tried first when it is a candidate.
    """
    if not _COUNTER_SUFFIX.search(step_name):
        candidates: tuple[str, ...] = (f"{step_name}-1",)
    elif len(step_name) > MAX_STEP_NAME_LENGTH:
        candidates = (step_name,)
    else:
        candidates = (step_name, f"{step_name}-1")
    if known_name is not None and known_name in candidates:
        return (known_name, *(name for name in candidates if name != known_name))
    return candidates


def status_of(details: Any) -> str | None:
    """The ``status`` of instance details (cut to ``MAX_NAME_CHARS``), or None when the answer has none."""
    status = details.get("status") if isinstance(details, Mapping) else None
    return bounded(status, MAX_NAME_CHARS) if isinstance(status, str) else None


def step_entries(details: Any) -> list[Mapping[str, Any]]:
    """The entries of the step log (empty when the details have none)."""
    entries = details.get("steps") if isinstance(details, Mapping) else None
    return [entry for entry in entries or [] if isinstance(entry, Mapping)]


def describe_steps(details: Mapping[str, Any] | None) -> str:
    """
    ``'prepare-1' (step), 'approval-1' (waitForEvent)`` for the steps in instance details (the first
    ``MAX_LISTED_ITEMS``, then how many more).
    """
    named = [entry for entry in step_entries(details) if entry.get("name")]

    def describe(entry: Mapping[str, Any]) -> str:
        return (
            f"{bounded(entry.get('name'), MAX_NAME_CHARS)!r} ({bounded(entry.get('type'), MAX_NAME_CHARS)})"
        )

    return ", ".join(bounded_list(named, MAX_LISTED_ITEMS, "steps", describe)) if named else "none yet"


def entries_named(details: Any, name: str, step_type: str) -> list[Mapping[str, Any]]:
    """The step-log entries logged as ``name`` that answer to ``/step?type=step_type``."""
    entry_types = _ENTRY_TYPES[StepType(step_type)]
    return [
        entry
        for entry in step_entries(details)
        if entry.get("name") == name and entry.get("type") in entry_types
    ]


def attempts_of(details: Any, names: tuple[str, ...], step_type: str) -> int | None:
    """How many attempts the step log shows for the first of ``names`` it has, or None."""
    for name in names:
        for entry in entries_named(details, name, step_type):
            return len(entry.get("attempts") or [])
    return None


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
    (e.g. its timeout). The mapping mirrors ``/step`` as Cloudflare's API reference describes it
    (inferred for the retrying error, which ``/step`` documents and the details show only as attempts).

    Not settled (``/step`` decides): details without a ``steps`` list, several entries under one name,
    an entry whose state field is missing or not a boolean, or an ``errored`` step entry whose
    attempts carry no error.
    """
    if not isinstance(details, Mapping) or not isinstance(details.get("steps"), list):
        return StepReading(settled=False)
    for name in candidates:
        matches = entries_named(details, name, step_type)
        if len(matches) > 1:
            return StepReading(settled=False, name=name)
        if matches:
            step = _step_from_entry(matches[0], step_type)
            return StepReading(settled=step is not None, step=step, name=name)
    return StepReading(settled=True)


def _failed_attempts(entry: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    attempts = entry.get("attempts") or []
    return [
        attempt for attempt in attempts if isinstance(attempt, Mapping) and attempt.get("success") is False
    ]


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
    failed = _failed_attempts(entry)
    error = RemoteError.from_api(failed[-1].get("error")) if failed else None
    if success is False:
        return StepOutput(InstanceStatus.ERRORED.value, error, None) if error else None
    return StepOutput(InstanceStatus.RUNNING.value, error, None)


# The restart ``from.type`` of each step-log entry type (Cloudflare's API reference, instance status edit).
_RESTART_FROM_TYPES = {"step": "do", "sleep": "sleep", "waitForEvent": "waitForEvent"}


def _entry_failed(entry: Mapping[str, Any]) -> bool:
    """Whether a step-log entry ended in failure: a ``step.do`` with ``success`` false, a sleep or
    ``waitForEvent`` that finished with an error (e.g. its timeout)."""
    if entry.get("type") == "step":
        return entry.get("success") is False
    return entry.get("finished") is True and entry.get("error") is not None


def restart_point(details: Any) -> dict[str, Any] | None:
    """
    Where to restart an errored instance: ``{"name", "count", "type"}`` of the first failed entry of
    its step log (the body's ``from`` of a restart), or None when no step failed or the failed entry's
    logged name has no ``-<n>`` counter suffix to read the base name and count from.

    Restart ``from`` takes the name as written in the Workflow code and its 1-based count, not the
    logged name (``fetch data-2`` is ``{"name": "fetch data", "count": 2}``); see
    https://developers.cloudflare.com/api/resources/workflows/subresources/instances/subresources/status/methods/edit/
    The first failure in log order is chosen: restarting there re-runs every later step too.
    """
    for entry in step_entries(details):
        kind = _RESTART_FROM_TYPES.get(str(entry.get("type")))
        if kind is None or not _entry_failed(entry):
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not _COUNTER_SUFFIX.search(name):
            return None
        base, _, count = name.rpartition("-")
        return {"name": base, "count": int(count), "type": kind} if base else None
    return None


def received_event_count(details: Any, event_type: str) -> int | None:
    """
    How many ``waitForEvent`` steps for ``event_type`` have received their event (finished without an
    error), or None when the step log cannot tell (no ``steps`` list; or a ``waitForEvent`` entry
    without ``event_type``, which the API marks optional).
    """
    if not isinstance(details, Mapping) or not isinstance(details.get("steps"), list):
        return None
    count = 0
    for entry in step_entries(details):
        if entry.get("type") != StepType.WAIT_FOR_EVENT:
            continue
        if "event_type" not in entry:
            return None
        if entry["event_type"] == event_type and entry.get("finished") is True and not entry.get("error"):
            count += 1
    return count


def step_failure_lines(details: Mapping[str, Any], step_name: str | None, step_type: str) -> list[str]:
    """
    Readable lines about a step's failed attempts (``attempt 2: Error: upstream 503``); at most
    ``MAX_LISTED_ITEMS`` attempts, then how many more.
    """
    lines = []
    instance_error = RemoteError.from_api(details.get("error"))
    if instance_error:
        lines.append(f"instance {status_of(details)}: {instance_error}")
    failed: list[tuple[int, Mapping[str, Any]]] = []
    errors = []
    for entry in entries_named(details, step_name, step_type) if step_name is not None else []:
        attempts = enumerate(entry.get("attempts") or [], start=1)
        failed.extend(
            (number, attempt)
            for number, attempt in attempts
            if isinstance(attempt, Mapping) and attempt.get("success") is False
        )
        if entry.get("error"):
            errors.append(entry.get("error"))

    def attempt_line(numbered: tuple[int, Mapping[str, Any]]) -> str:
        return f"attempt {numbered[0]}: {RemoteError.from_api(numbered[1].get('error')) or 'failed'}"

    lines.extend(bounded_list(failed, MAX_LISTED_ITEMS, "failed attempts", attempt_line))
    lines.extend(
        bounded_list(
            errors, MAX_LISTED_ITEMS, "errors", lambda error: f"error: {RemoteError.from_api(error)}"
        )
    )
    return lines


def instance_failure_lines(details: Mapping[str, Any]) -> list[str]:
    """
    Readable lines about the failed steps of an instance (their last errors), from full details; at
    most ``MAX_LISTED_ITEMS``, then how many more.
    """
    with_failures = [
        (entry, failed)
        for entry in step_entries(details)
        if (failed := _failed_attempts(entry)) or entry.get("success") is False or entry.get("error")
    ]

    def line(item: tuple[Mapping[str, Any], list[Mapping[str, Any]]]) -> str:
        entry, failed = item
        name = bounded(entry.get("name"), MAX_NAME_CHARS)
        if entry.get("success") is False or entry.get("error"):
            last = RemoteError.from_api(entry.get("error")) or (
                RemoteError.from_api(failed[-1].get("error")) if failed else None
            )
            attempts = f" ({len(failed)} failed attempt(s))" if failed else ""
            kind = bounded(entry.get("type"), MAX_NAME_CHARS)
            return f"step {name!r} ({kind}) failed: {last or 'no error given'}{attempts}"
        return f"step {name!r}: {len(failed)} failed attempt(s), then went on"

    return bounded_list(with_failures, MAX_LISTED_ITEMS, "steps with failed attempts", line)


def describe_step(step_label: str, step_type: str, attempt: int | None = None) -> str:
    """``step 'x'``, ``waitForEvent step 'x'`` or ``attempt 2 of step 'x'``, for messages."""
    kind = "waitForEvent step" if step_type == StepType.WAIT_FOR_EVENT else "step"
    prefix = f"attempt {attempt} of " if attempt is not None else ""
    return f"{prefix}{kind} {step_label!r}"


def explain_missing_step(
    details: Mapping[str, Any],
    *,
    step_label: str,
    tried: tuple[str, ...],
    step_type: str,
    instance_label: str,
    attempt: int | None = None,
) -> tuple[bool, str]:
    """
    Why no logged name answered for a step (each of ``tried`` got a 404), from the instance's full
    details: ``(final, message)``. Final when the instance has ended (a misspelled name or a wrong
    ``step_type``; or an attempt past the last one), else the step has not started yet.

    :param step_label: the step as the user named it.
    :param tried: the logged names asked for.
    :param instance_label: ``instance 'i' of workflow 'wf'``.
    :param attempt: the attempt asked for, if any.
    """
    status = status_of(details)
    final = status in TERMINAL_INSTANCE_STATUSES
    what = describe_step(step_label, step_type, attempt)
    subject = f"The {what}" if what.startswith("waitForEvent") else what[:1].upper() + what[1:]
    subject = f"{subject} of {instance_label}"
    runs = attempts_of(details, tried, step_type) if attempt is not None else None
    if runs is not None:
        if final:
            return True, (
                f"{subject} does not exist: the step ran {runs} attempt(s) and the instance is {status}, so "
                f"there will never be an attempt {attempt}."
            )
        return False, f"{subject} has not started yet ({runs} attempt(s) so far; the instance is {status})."
    logged = " or ".join(repr(name) for name in tried)
    if final:
        return True, (
            f"{subject} never ran (no step is logged as {logged}): the instance is {status} and will not run "
            f"it. Steps the instance has: {describe_steps(details)}. Check the name (as written in the "
            "Workflow code, or the logged name with its -N suffix) and the step_type."
        )
    return False, (
        f"{subject} has not started yet (the instance is {status}; steps so far: {describe_steps(details)})."
    )
