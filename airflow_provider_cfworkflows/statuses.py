"""Status values of Cloudflare Workflows instances and steps, and which of them are terminal.

Source: the REST enum in Cloudflare's API reference and SDKs (9 values, ``rollingBack`` added in
June 2026). Which statuses are terminal is our reading of the product docs (inferred, not stated by
Cloudflare): ``complete``, ``errored`` and ``terminated``. Anything we do not recognise (a status added
after this release, or the legacy ``unknown``) is treated as "not yet", never as an error.
"""

from __future__ import annotations

from enum import StrEnum


class InstanceStatus(StrEnum):
    """Status of a Workflow instance (also reused by the ``/step`` endpoint)."""

    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    ERRORED = "errored"
    TERMINATED = "terminated"
    COMPLETE = "complete"
    WAITING_FOR_PAUSE = "waitingForPause"
    WAITING = "waiting"
    ROLLING_BACK = "rollingBack"


TERMINAL_INSTANCE_STATUSES = frozenset(
    {InstanceStatus.COMPLETE, InstanceStatus.ERRORED, InstanceStatus.TERMINATED}
)

# Statuses in which an instance takes no more events: the terminal ones, and rollingBack (its rollback
# handlers run, then it ends terminated). Inferred: the binding "throws if the Workflow is not running or
# is in an errored state"; the REST answer is not documented.
ENDED_FOR_EVENTS_STATUSES = TERMINAL_INSTANCE_STATUSES | {InstanceStatus.ROLLING_BACK}

# The /step endpoint documents a step as running | waiting | complete | errored (reusing this enum).
TERMINAL_STEP_STATUSES = frozenset({InstanceStatus.COMPLETE, InstanceStatus.ERRORED})


# What a wait waits for unless told otherwise (the sensors' and the create-and-wait operator's defaults).
DEFAULT_STEP_SUCCESS_STATES = (InstanceStatus.COMPLETE.value,)
DEFAULT_STEP_FAILURE_STATES = (InstanceStatus.ERRORED.value,)
DEFAULT_INSTANCE_SUCCESS_STATES = (InstanceStatus.COMPLETE.value,)
DEFAULT_INSTANCE_FAILURE_STATES = (InstanceStatus.ERRORED.value, InstanceStatus.TERMINATED.value)


class StepType(StrEnum):
    """The ``type`` query parameter of the ``/step`` endpoint."""

    STEP = "step"
    WAIT_FOR_EVENT = "waitForEvent"


class StatusAction(StrEnum):
    """Actions of ``PATCH .../instances/{id}/status``."""

    PAUSE = "pause"
    RESUME = "resume"
    TERMINATE = "terminate"
    RESTART = "restart"


def is_known_status(value: str) -> bool:
    """Whether ``value`` is one of the documented instance statuses."""
    return value in InstanceStatus._value2member_map_
