"""Typed results of Cloudflare Workflows API calls."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_cfworkflows.remote_text import MAX_NAME_CHARS, MAX_REMOTE_ERROR_CHARS, bounded
from airflow_provider_cfworkflows.statuses import InstanceStatus

JSON_CONTENT_TYPE = "application/json"
OCTET_STREAM_CONTENT_TYPE = "application/octet-stream"
# Shown instead of the output of a step declared sensitive (in instance details and in /step).
REDACTED_OUTPUT = "[REDACTED]"
# First characters of the JSON encodings that instance_output decodes: an object, an array, a string.
_DECODED_JSON_STARTS = ("{", "[", '"')


def instance_output(value: Any) -> Any:
    """
    The value a Workflow's ``run()`` returned, from the instance's ``output`` field.

    Cloudflare may send it as the JSON value itself, or JSON-encoded as a string: the API reference and
    both SDKs type it ``string | number``, while the emulator (and, inferred, wrangler's local
    development) return the raw value; which one production sends is not documented. Both forms give
    the same result for objects, arrays and strings:

    - a string holding a JSON object, array or string (``'{"rows": 42}'``, ``'[1, 2]'``,
      ``'"done"'``) is decoded;
    - any other value is returned as it is: objects, arrays, numbers, booleans, None, and strings that
      are not such JSON (``"done"``, and also ``"42"``, ``"true"``: a Workflow returning the text
      ``"42"`` would otherwise become the number 42, so JSON-encoded numbers and booleans stay text).

    :param value: the ``output`` field of the instance details.
    """
    if not isinstance(value, str) or not value.lstrip().startswith(_DECODED_JSON_STARTS):
        return value
    try:
        return json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested too deeply to read: the text as it is
        return value


@dataclass(frozen=True)
class RemoteError:
    """An error reported by the Workflow itself (``{name, message}``)."""

    name: str
    message: str

    @classmethod
    def from_api(cls, value: Any) -> RemoteError | None:
        """Parse the API's ``error`` field (an object or null); its texts are cut to their limits."""
        if not isinstance(value, Mapping):
            return None
        return cls(
            name=bounded(value.get("name") or "Error", MAX_NAME_CHARS),
            message=bounded(value.get("message") or "", MAX_REMOTE_ERROR_CHARS),
        )

    def to_dict(self) -> dict[str, str]:
        """Plain JSON form (for XCom and trigger events)."""
        return {"name": self.name, "message": self.message}

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


def end_sentence(text: object) -> str:
    """``text`` and a full stop, unless it already ends a sentence (as Cloudflare's messages often do)."""
    words = str(text)
    return words if words.rstrip().endswith((".", "!", "?")) else f"{words}."


@dataclass(frozen=True)
class StepOutput:
    """
    Result of ``GET .../instances/{id}/step``.

    :param status: step status (``running``, ``waiting``, ``complete``, ``errored``; kept as sent).
    :param error: the failed attempt's error, or None.
    :param output: the full output: any JSON value, ``bytes`` for a stream output read whole, or None
        (not complete yet, or a stream that has not been read).
    :param content_type: ``application/json`` or ``application/octet-stream``.
    :param event_type: for ``waitForEvent`` steps, the event type the step waits on.
    """

    status: str
    error: RemoteError | None
    output: Any
    content_type: str = JSON_CONTENT_TYPE
    event_type: str | None = None

    @property
    def is_retrying(self) -> bool:
        """Running with an error: an attempt failed and the step will be tried again."""
        return self.status == InstanceStatus.RUNNING and self.error is not None

    @property
    def is_stream(self) -> bool:
        """Whether the output is raw bytes (the step returned a ``ReadableStream``)."""
        return self.content_type == OCTET_STREAM_CONTENT_TYPE


@dataclass
class StepOutputStream:
    """
    An open ``/step`` response whose body is read chunk by chunk.

    :param step: status, error and content type; ``output`` holds the parsed value for a JSON response
        and None for a byte stream.
    :param content_length: the ``Content-Length`` header, if sent.
    :param chunks: iterator over the raw body of a byte stream (empty for JSON responses). It raises
        :class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowsConnectionError` when the
        connection drops or fewer bytes than ``content_length`` arrive.
    """

    step: StepOutput
    content_length: int | None
    chunks: Iterator[bytes] = field(default_factory=lambda: iter(()))


@dataclass(frozen=True)
class Envelope:
    """The parts of a successful Cloudflare response envelope the hook uses."""

    result: Any
    result_info: Mapping[str, Any]
