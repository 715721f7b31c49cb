"""Text and JSON values from Cloudflare or a Workflow, made fit for logs, messages, events and XCom.

Remote text has no size limit of its own: an error message can be megabytes, an instance can have tens
of thousands of steps. Where remote text enters the provider's typed results (Cloudflare's errors, a
Workflow's errors, names and statuses, step lists in messages), it is cut to the limit of its kind,
saying how much was cut, so a log line, an exception or a trigger event stays small.

JavaScript strings may hold a lone UTF-16 surrogate (a string cut inside an emoji), which Python reads
from JSON (``"\\ud83d"``) but cannot encode as UTF-8, and which Airflow can therefore neither log as
UTF-8 nor store in XCom. In text it becomes the six characters of its JSON escape, ``\\ud83d``.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

# One item of Cloudflare's ``errors`` array (message and error chain), and how many items are kept.
MAX_API_ERROR_CHARS = 500
MAX_API_ERRORS = 5
# A Workflow's own error message (``{name, message}`` of a step or an instance).
MAX_REMOTE_ERROR_CHARS = 2_000
# A name or status sent by the API: a step name has up to 256 characters and its ``-<n>`` counter.
MAX_NAME_CHARS = 300
# Items listed in one message or log block: steps an instance has, failed steps, failed attempts.
MAX_LISTED_ITEMS = 20
# Levels of lists and objects an output may nest to go to XCom: Airflow's Execution API reads XCom values
# with pydantic, whose JSON parser stops at 200 levels (its own envelope included).
MAX_XCOM_DEPTH = 150

T = TypeVar("T")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = _REPR.maxother = MAX_REMOTE_ERROR_CHARS


def bounded(value: Any, limit: int) -> str:
    """
    ``value`` as text of at most ``limit`` characters, then ``… (N more characters cut)``; a lone
    surrogate as its escape. A value that is not a string is shown as a short ``repr``.
    """
    text = value if isinstance(value, str) else _REPR.repr(value)
    cut = len(text) - limit
    if cut > 0:
        text = f"{text[:limit]}… ({cut} more characters cut)"
    return escape_surrogates_in_text(text)


def bounded_list(items: Sequence[T], limit: int, what: str, render: Callable[[T], str] = str) -> list[str]:
    """The first ``limit`` of ``items`` (each rendered), then ``… and N more <what>`` if there are more."""
    shown = [render(item) for item in items[:limit]]
    if len(items) > limit:
        shown.append(f"… and {len(items) - limit} more {what}")
    return shown


def escape_surrogates_in_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by the six characters of its escape (``\\ud83d``)."""
    if LONE_SURROGATE.search(text) is None:
        return text
    return LONE_SURROGATE.sub(lambda match: f"\\u{ord(match[0]):04x}", text)


def escape_lone_surrogates(value: Any) -> tuple[Any, int]:
    """
    A JSON value whose strings (keys too) hold no lone surrogate: each is replaced by the six characters
    of its escape (``"cut \\ud83d"`` becomes ``"cut \\\\ud83d"``); and how many were replaced.

    :param value: a JSON value as ``json.loads`` returns it.
    """
    text = json.dumps(value, ensure_ascii=False)
    count = len(LONE_SURROGATE.findall(text))
    if not count:
        return value, 0
    # In JSON text a surrogate can only be inside a string: an escaped backslash before it makes the
    # string hold the escape's characters instead.
    return json.loads(LONE_SURROGATE.sub(lambda match: f"\\\\u{ord(match[0]):04x}", text)), count


def nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether a JSON value nests lists and objects more than ``limit`` levels deep (``[]`` is 1 level)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:  # one level at a time, without recursion
        depth += 1
        if depth > limit:
            return True
        level = [
            child
            for item in level
            for child in (item.values() if isinstance(item, dict) else item)
            if isinstance(child, dict | list)
        ]
    return False
