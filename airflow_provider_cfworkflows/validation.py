"""Checks of user-facing parameters, with messages that say what was wrong and what is allowed.

Limits are Cloudflare's (API reference path parameters and product limits pages). Every check runs
before any HTTP call, so bad input never reaches the API and never half-runs a task.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.statuses import InstanceStatus, StatusAction, StepType

MAX_WORKFLOW_NAME_LENGTH = 64
# User-created ids are <= 100 characters; ids of cron-triggered instances are longer (<= 271).
MAX_INSTANCE_ID_LENGTH = 100
MAX_ADDRESSABLE_INSTANCE_ID_LENGTH = 271
MAX_STEP_NAME_LENGTH = 256
MAX_EVENT_TYPE_LENGTH = 100
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
MAX_BATCH_SIZE = 100
MAX_PER_PAGE = 100
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]*$")
# "The system reserves IDs that consist of the cf_ prefix and exactly 64 lowercase hex characters."
RESERVED_ID_PATTERN = re.compile(r"^cf_[0-9a-f]{64}$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _config_error(message: str) -> CloudflareWorkflowsConfigurationError:
    return CloudflareWorkflowsConfigurationError(message)


def require_text(value: Any, what: str, *, max_length: int) -> str:
    """A non-empty string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value:
        raise _config_error(f"{what} must be a non-empty string, got {value!r}.")
    if len(value) > max_length:
        raise _config_error(
            f"{what} must be at most {max_length} characters, got {len(value)}: {value[:40]!r}..."
        )
    return value


def validate_workflow_name(value: Any) -> str:
    """A workflow name: 1-64 characters."""
    return require_text(value, "workflow_name", max_length=MAX_WORKFLOW_NAME_LENGTH)


def validate_instance_id(value: Any) -> str:
    """An id of an existing instance: 1-271 characters (cron-triggered ids hold spaces, ``*`` and ``/``)."""
    return require_text(value, "instance_id", max_length=MAX_ADDRESSABLE_INSTANCE_ID_LENGTH)


def validate_new_instance_id(value: Any) -> str:
    """An id for a new instance: 1-100 characters of ``[a-zA-Z0-9_-]``, not starting with ``-``."""
    require_text(value, "instance_id", max_length=MAX_INSTANCE_ID_LENGTH)
    if not ID_PATTERN.match(value):
        raise _config_error(
            f"instance_id {value!r} is not allowed: use 1-{MAX_INSTANCE_ID_LENGTH} characters of letters, "
            "digits, '_' and '-', not starting with '-'."
        )
    if RESERVED_ID_PATTERN.match(value):
        raise _config_error(
            f"instance_id {value!r} is reserved by Cloudflare ('cf_' followed by 64 hex characters)."
        )
    return str(value)


def validate_step_name(value: Any) -> str:
    """A step name: 1-256 characters, no control characters."""
    require_text(value, "step_name", max_length=MAX_STEP_NAME_LENGTH)
    if _CONTROL_CHARACTERS.search(value):
        raise _config_error(f"step_name {value!r} must not contain control characters.")
    return str(value)


def validate_step_type(value: Any) -> StepType:
    """``"step"`` or ``"waitForEvent"``."""
    try:
        return StepType(value)
    except ValueError:
        raise _config_error(f"step_type must be one of {_choices(StepType)}, got {value!r}.") from None


def validate_attempt(value: Any) -> int | None:
    """None, or a whole number >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _config_error(f"attempt must be a whole number >= 1 (or None for the latest), got {value!r}.")
    return value


def validate_event_type(value: Any) -> str:
    """An event type: 1-100 characters of ``[a-zA-Z0-9_-]``, not starting with ``-``.

    A typo here is worse than an error: the Workflow would wait for an event that never comes.
    """
    require_text(value, "event_type", max_length=MAX_EVENT_TYPE_LENGTH)
    if not ID_PATTERN.match(value):
        raise _config_error(
            f"event_type {value!r} is not allowed: use letters, digits, '_' and '-' (no '.', spaces or "
            "other characters), not starting with '-', as in step.waitForEvent({type: ...})."
        )
    return str(value)


def encode_json(value: Any, what: str) -> bytes:
    """Serialize ``value`` to compact UTF-8 JSON, or say why it cannot be sent."""
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as error:
        raise _config_error(
            f"{what} must be JSON-serializable (dicts, lists, strings, numbers, booleans, None): {error}"
        ) from None


def validate_event_payload(value: Any) -> bytes:
    """A JSON-serializable event payload of at most 1 MiB; returns its encoded body."""
    body = encode_json(value, "payload")
    if len(body) > MAX_EVENT_PAYLOAD_BYTES:
        raise _config_error(
            f"payload is {len(body)} bytes as JSON; Cloudflare accepts at most {MAX_EVENT_PAYLOAD_BYTES} "
            "bytes (1 MiB) per event. Put large data in object storage and send its path instead."
        )
    return body


def validate_instance_status(value: Any) -> InstanceStatus:
    """One of the nine instance statuses."""
    try:
        return InstanceStatus(value)
    except ValueError:
        raise _config_error(f"status must be one of {_choices(InstanceStatus)}, got {value!r}.") from None


def validate_status_action(value: Any) -> StatusAction:
    """``pause``, ``resume``, ``terminate`` or ``restart``."""
    try:
        return StatusAction(value)
    except ValueError:
        raise _config_error(f"action must be one of {_choices(StatusAction)}, got {value!r}.") from None


def validate_states(value: Any, what: str) -> tuple[str, ...]:
    """A collection of instance/step statuses (a single string is a common mistake)."""
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise _config_error(
            f"{what} must be a list or tuple of statuses such as ('complete',), got {value!r}."
        )
    states = tuple(value)
    for state in states:
        validate_instance_status(state)
    return states


def validate_per_page(value: Any) -> int:
    """Page size: 1-100."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PER_PAGE:
        raise _config_error(f"per_page must be a whole number from 1 to {MAX_PER_PAGE}, got {value!r}.")
    return value


def _choices(enum: Iterable[Any]) -> str:
    return ", ".join(repr(str(member)) for member in enum)
