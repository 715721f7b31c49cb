"""Checks of user-facing parameters, with messages that say what was wrong and what is allowed.

Limits are Cloudflare's (API reference path parameters and product limits pages). Every check runs
before any HTTP call, so bad input never reaches the API and never half-runs a task. Every pattern
matches the whole string (``fullmatch``): ``$`` would also match before a trailing newline.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import timedelta
from enum import Enum
from typing import Any, TypeVar

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.statuses import InstanceStatus, StatusAction, StepType

MAX_WORKFLOW_NAME_LENGTH = 64
# User-created ids are <= 100 characters; ids of cron-triggered instances are longer (<= 271).
MAX_INSTANCE_ID_LENGTH = 100
MAX_ADDRESSABLE_INSTANCE_ID_LENGTH = 271
# A logged step name is "<base>-<n>": the base holds up to 256 characters, the counter comes on top
# (workers-sdk workflows-shared validators.ts and context.ts).
MAX_STEP_NAME_LENGTH = 256
MAX_STEP_COUNTER_DIGITS = 10
MAX_EVENT_TYPE_LENGTH = 100
# A version id is a UUID (API reference, versions); a little room in case Cloudflare changes the form.
MAX_VERSION_ID_LENGTH = 100
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024
MAX_BATCH_SIZE = 100
MAX_PER_PAGE = 100
# Where an instance may be asked to run (API reference, create instance; the TypeScript SDK lists nine,
# without apac-ne and apac-se).
LOCATION_HINTS = ("wnam", "weur", "enam", "eeur", "apac", "apac-ne", "apac-se", "oc", "sam", "afr", "me")
ID_PATTERN = re.compile(r"[a-zA-Z0-9_][a-zA-Z0-9_-]*")
# "The system reserves IDs that consist of the cf_ prefix and exactly 64 lowercase hex characters."
RESERVED_ID_PATTERN = re.compile(r"cf_[0-9a-f]{64}")
# Ids that would be read as API routes (.../instances/batch, .../instances/terminate). Only a newer
# workers-sdk binding source refuses them (inferred for REST), but the REST paths collide either way.
RESERVED_ROUTE_INSTANCE_IDS = frozenset({"batch", "terminate", "terminateAll"})
# What a missing XCom or an unset template variable renders to; never a meant instance id.
UNRENDERED_VALUES = frozenset({"None", "null"})
# "." and ".." are collapsed by HTTP libraries (RFC 3986 dot segments): get_instance("wf", ".") would
# list the instances. Refused for every name and id, even those sent as query parameters.
DOT_SEGMENTS = frozenset({".", ".."})
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
_STEP_COUNTER = re.compile(rf"(?P<base>.+)-[0-9]{{1,{MAX_STEP_COUNTER_DIGITS}}}", re.DOTALL)
_ASCII_DIGITS = re.compile(r"[0-9]+")
_Member = TypeVar("_Member", bound=Enum)
RETENTION_KEYS = ("error_retention", "success_retention")
# WorkflowRetentionDuration = `${number} ${"second"|"minute"|"hour"|"day"|"week"|"month"|"year"}${"s"|""}`
# | number (milliseconds), from @cloudflare/workers-types; the REST reference says "duration in
# milliseconds or as a string like '5 minutes'".
_RETENTION_DURATION = re.compile(
    r"(?P<amount>[0-9]+(?:\.[0-9]+)?) (?:second|minute|hour|day|week|month|year)s?"
)


def _config_error(message: str) -> CloudflareWorkflowsConfigurationError:
    return CloudflareWorkflowsConfigurationError(message)


def missing_value_hint(value: Any) -> str:
    """
    A sentence for a value that looks like what a template renders when the value is missing (None,
    ``'None'``, ``'null'``; e.g. the XCom of a task that has not run), else an empty string.
    """
    if value is not None and not (isinstance(value, str) and value in UNRENDERED_VALUES):
        return ""
    return (
        " It looks like a missing value rendered into a template (a missing XCom renders as None, 'None' "
        "or 'null'): is the task that pushes it upstream of this task, and did it push a value?"
    )


def require_text(value: Any, what: str, *, max_length: int) -> str:
    """A non-empty string of at most ``max_length`` characters."""
    if not isinstance(value, str) or not value:
        raise _config_error(f"{what} must be a non-empty string, got {value!r}.{missing_value_hint(value)}")
    if len(value) > max_length:
        raise _config_error(
            f"{what} must be at most {max_length} characters, got {len(value)}: {value[:40]!r}..."
        )
    return value


def require_name(value: Any, what: str, *, max_length: int) -> str:
    """:func:`require_text` that also refuses ``.``/``..`` and control characters (names and ids)."""
    require_text(value, what, max_length=max_length)
    if value in DOT_SEGMENTS:
        raise _config_error(f"{what} {value!r} is not allowed: '.' and '..' are path navigation, not names.")
    if _CONTROL_CHARACTERS.search(value):
        raise _config_error(f"{what} {value!r} must not contain control characters (newline, tab, ...).")
    return str(value)


def validate_workflow_name(value: Any) -> str:
    """A workflow name: 1-64 characters, no control characters, not ``.``/``..``."""
    # Lenient on purpose: workers-sdk also requires the instance-id pattern, but a name the API knows
    # is always addressable and a stricter check here could only refuse a real workflow.
    return require_name(value, "workflow_name", max_length=MAX_WORKFLOW_NAME_LENGTH)


def validate_instance_id(value: Any) -> str:
    """An id of an existing instance: 1-271 characters (cron-triggered ids hold spaces, ``*`` and ``/``)."""
    return require_name(value, "instance_id", max_length=MAX_ADDRESSABLE_INSTANCE_ID_LENGTH)


def validate_new_instance_id(value: Any) -> str:
    """
    An id for a new instance: 1-100 characters of ``[a-zA-Z0-9_-]``, not starting with ``-``.

    Also refused: Cloudflare's reserved ``cf_`` + 64 hex form, the route names ``batch``,
    ``terminate`` and ``terminateAll``, and ``None``/``null`` (a missing XCom rendered into a template).
    """
    require_text(value, "instance_id", max_length=MAX_INSTANCE_ID_LENGTH)
    if not ID_PATTERN.fullmatch(value):
        raise _config_error(
            f"instance_id {value!r} is not allowed: use 1-{MAX_INSTANCE_ID_LENGTH} characters of letters, "
            "digits, '_' and '-', not starting with '-'."
        )
    if RESERVED_ID_PATTERN.fullmatch(value):
        raise _config_error(
            f"instance_id {value!r} is reserved by Cloudflare ('cf_' followed by 64 hex characters)."
        )
    if value in RESERVED_ROUTE_INSTANCE_IDS:
        raise _config_error(
            f"instance_id {value!r} is not allowed: it is the name of an API route "
            f"(.../instances/{value}), so the instance could never be addressed. Choose another id."
        )
    if value in UNRENDERED_VALUES:
        raise _config_error(
            f"instance_id {value!r} is not allowed for a new instance.{missing_value_hint(value)}"
        )
    return str(value)


def validate_version_id(value: Any) -> str:
    """A Workflow version id (an instance's ``versionId``): 1-100 characters, no control characters."""
    return require_name(value, "version_id", max_length=MAX_VERSION_ID_LENGTH)


def validate_step_name(value: Any) -> str:
    """
    A step name: a base of 1-256 characters, optionally followed by the logged ``-<n>`` counter.

    No control characters, not ``.``/``..``. The counter does not count towards the 256 characters:
    ``"x" * 256 + "-1"`` is a valid logged name.
    """
    name = require_name(value, "step_name", max_length=MAX_STEP_NAME_LENGTH + 1 + MAX_STEP_COUNTER_DIGITS)
    counter = _STEP_COUNTER.fullmatch(name)
    base = counter["base"] if counter else name
    if len(base) > MAX_STEP_NAME_LENGTH:
        raise _config_error(
            f"step_name must be at most {MAX_STEP_NAME_LENGTH} characters (plus the '-<n>' counter of a "
            f"logged name), got {len(base)}: {base[:40]!r}..."
        )
    return name


def validate_step_type(value: Any) -> StepType:
    """``"step"`` or ``"waitForEvent"``."""
    return _member(StepType, value, "step_type")


def validate_attempt(value: Any) -> int | None:
    """
    None, or a whole number >= 1.

    A templated value arrives as a string: ``""`` and ``"None"`` mean None, ASCII digits a number.
    Other digits (Devanagari, Arabic-Indic...) are refused, although ``str.isdigit`` and ``int`` accept them.
    """
    if isinstance(value, str):
        text = value.strip()
        if text in ("", "None"):
            return None
        if _ASCII_DIGITS.fullmatch(text):
            value = int(text)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _config_error(f"attempt must be a whole number >= 1 (or None for the latest), got {value!r}.")
    return value


def validate_step_attempt(step_type: Any, attempt: Any) -> tuple[StepType, int | None]:
    """A step type and an attempt that go together: a ``waitForEvent`` step has no attempts."""
    kind, number = validate_step_type(step_type), validate_attempt(attempt)
    if number is not None and kind is StepType.WAIT_FOR_EVENT:
        raise _config_error(
            "attempt is not supported with step_type='waitForEvent' (an event has no attempts); "
            "leave attempt as None."
        )
    return kind, number


def validate_event_type(value: Any) -> str:
    """An event type: 1-100 characters of ``[a-zA-Z0-9_-]``, not starting with ``-``.

    A typo here is worse than an error: the Workflow would wait for an event that never comes.
    """
    require_text(value, "event_type", max_length=MAX_EVENT_TYPE_LENGTH)
    if not ID_PATTERN.fullmatch(value):
        raise _config_error(
            f"event_type {value!r} is not allowed: use letters, digits, '_' and '-' (no '.', spaces or "
            "other characters), not starting with '-', as in step.waitForEvent({type: ...})."
        )
    return str(value)


def validate_location_hint(value: Any) -> str:
    """One of Cloudflare's location hints (``LOCATION_HINTS``), e.g. ``"weur"`` for western Europe."""
    if value not in LOCATION_HINTS:
        raise _config_error(
            f"location_hint must be one of {', '.join(repr(hint) for hint in LOCATION_HINTS)}, got {value!r}."
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
    """
    A JSON-serializable event payload of at most 1 MiB; returns its encoded body.

    No payload (None) sends ``{}``, as wrangler does (``workflows instances send-event`` defaults its
    payload to ``{}``): how the API treats a literal ``null`` body is undocumented, and ``{}`` reaches
    the Workflow as an empty object, which ``event.payload.field`` reads without a TypeError.
    """
    body = encode_json({} if value is None else value, "payload")
    if len(body) > MAX_EVENT_PAYLOAD_BYTES:
        raise _config_error(
            f"payload is {len(body)} bytes as JSON; Cloudflare accepts at most {MAX_EVENT_PAYLOAD_BYTES} "
            "bytes (1 MiB) per event. Put large data in object storage and send its path instead."
        )
    return body


def validate_instance_status(value: Any) -> InstanceStatus:
    """One of the nine instance statuses."""
    return _member(InstanceStatus, value, "status")


def validate_status_action(value: Any) -> StatusAction:
    """``pause``, ``resume``, ``terminate`` or ``restart``."""
    return _member(StatusAction, value, "action")


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


def validate_positive_seconds(value: Any, what: str) -> float:
    """
    A finite number of seconds > 0 (a ``timedelta`` is converted), for timeouts and intervals.

    NaN and infinity are refused: a NaN deadline compares false with every time and never expires.
    """
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise _config_error(
            f"{what} must be a number of seconds (or a timedelta), got {type(value).__name__}."
        )
    if not math.isfinite(seconds) or seconds <= 0:
        raise _config_error(f"{what} must be a finite number of seconds greater than 0, got {value!r}.")
    return float(seconds)


def validate_instance_retention(value: Any) -> dict[str, int | float | str] | None:
    """
    None, or ``{"success_retention"?: d, "error_retention"?: d}``.

    Each duration ``d`` is a number of milliseconds > 0 or a string such as ``"5 minutes"`` or
    ``"30 days"`` (a number, a space, then second, minute, hour, day, week, month or year, optionally
    plural), as Cloudflare's ``WorkflowRetentionDuration`` type allows. Cloudflare caps retention by
    plan; that limit is left to the API.
    """
    if value is None:
        return None
    shape = (
        "{'success_retention': ..., 'error_retention': ...} with durations such as 86400000 (milliseconds) "
        "or '7 days'"
    )
    if not isinstance(value, Mapping):
        raise _config_error(
            f"instance_retention must be a dict {shape}, got {type(value).__name__} {value!r}."
        )
    if unknown := sorted(str(key) for key in value if key not in RETENTION_KEYS):
        raise _config_error(f"instance_retention has unknown keys {unknown}: it must be a dict {shape}.")
    for key, duration in value.items():
        if not _is_retention_duration(duration):
            raise _config_error(
                f"instance_retention[{key!r}] must be a number of milliseconds > 0 or a string such as "
                f"'5 minutes' or '30 days' (units: second, minute, hour, day, week, month, year), "
                f"got {duration!r}."
            )
    return dict(value)


def _is_retention_duration(value: Any) -> bool:
    if isinstance(value, str):
        match = _RETENTION_DURATION.fullmatch(value)
        return match is not None and float(match["amount"]) > 0
    return (
        not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value) and value > 0
    )


def _member(enum: type[_Member], value: Any, what: str) -> _Member:
    """The member of ``enum`` that ``value`` names, or an error listing the members."""
    try:
        return enum(value)
    except ValueError:
        choices = ", ".join(repr(str(member)) for member in enum)
        raise _config_error(f"{what} must be one of {choices}, got {value!r}.") from None
