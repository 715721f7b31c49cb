"""Cloudflare Workflows REST API without I/O: build requests, parse responses, pace retries.

The sync (``requests``) and async (``httpx``) transports in the hook only move bytes; everything
about the API lives here, so both behave the same and the tests can check each shape directly.
Whether an error is worth a retry is a property of the error (see :mod:`.exceptions`).
"""

from __future__ import annotations

import difflib
import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any
from urllib.parse import quote, urlencode

from airflow_provider_cfworkflows.deadlines import current_deadline
from airflow_provider_cfworkflows.exceptions import (
    CloudflareErrorDetail,
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsResponseError,
    CloudflareWorkflowsResponseTooDeepError,
    CloudflareWorkflowsResponseTooLargeError,
    CloudflareWorkflowsServerError,
    CloudflareWorkflowsUnknownWorkflowError,
)
from airflow_provider_cfworkflows.models import (
    JSON_CONTENT_TYPE,
    OCTET_STREAM_CONTENT_TYPE,
    Envelope,
    RemoteError,
    StepOutput,
)
from airflow_provider_cfworkflows.remote_text import (
    MAX_API_ERROR_CHARS,
    MAX_API_ERRORS,
    MAX_NAME_CHARS,
    bounded,
    bounded_list,
)
from airflow_provider_cfworkflows.statuses import InstanceStatus, StatusAction, StepType
from airflow_provider_cfworkflows.validation import (
    DOT_SEGMENTS,
    MAX_BATCH_SIZE,
    encode_json,
    validate_event_payload,
    validate_event_type,
    validate_instance_id,
    validate_instance_retention,
    validate_instance_status,
    validate_location_hint,
    validate_new_instance_id,
    validate_per_page,
    validate_status_action,
    validate_step_attempt,
    validate_step_name,
    validate_version_id,
    validate_workflow_name,
)

# Waits between retries: exponential from BACKOFF_BASE_SECONDS, capped, with jitter (as the SDKs do).
BACKOFF_BASE_SECONDS = 0.5
BACKOFF_MAX_SECONDS = 30.0
# A Retry-After above this is capped: Cloudflare may block for 5 minutes, longer than a retry should
# hold a worker slot; the task's own retries take over after the last attempt.
RETRY_AFTER_MAX_SECONDS = 120.0
# Jitter added to a Retry-After wait (a fraction of it, at least the backoff base): many triggers told
# the same Retry-After would otherwise come back in the same instant and be refused together again.
RETRY_AFTER_JITTER_FRACTION = 0.25
# The smallest socket timeout an attempt gets when little time is left (a zero would mean "no timeout").
MIN_SOCKET_TIMEOUT_SECONDS = 0.05

# Step outputs are at most 1 MiB and every other answer is small: a larger JSON body is a fault (an
# endless answer would exhaust memory, in the triggerer every trigger's). Byte streams are not capped.
MAX_JSON_BODY_BYTES = 16 * 1024 * 1024

# Cloudflare's answers to missing, malformed, rejected or insufficient credentials, by error code. They
# come as HTTP 400 as well as 401/403: github.com/cloudflare/workers-sdk/issues/13656 (9106),
# github.com/jeessy2/ddns-go/issues/81 (6003 with error_chain 6111), github.com/jeessy2/ddns-go/issues/1341
# (9109), github.com/cloudflare/wrangler-legacy/issues/932 and /1105 (10000 under 400 and 403).
AUTH_ERROR_HINTS: dict[int, str] = {
    9106: (
        "Cloudflare received no credentials: set the connection's API Token (password field), or the "
        "'email' and 'api_key' extras for a legacy global API key"
    ),
    6003: (
        "Cloudflare could not read the credentials headers: check that the connection's API Token "
        "(password field) holds only the token, without 'Bearer ', quotes or other characters"
    ),
    9109: (
        "Cloudflare rejected the API token: check that it is the right token, not expired or revoked, "
        "and that its client IP address filtering allows this machine"
    ),
    10000: (
        "Cloudflare refused access to this account: check the account id (the connection's login or "
        "account_id=) and that the token has the Workflows permissions for that account (Workers "
        "Scripts Read; Workers Scripts Write to create instances, send events or change status)"
    ),
}
AUTH_ERROR_STATUS_CODES = frozenset({400, 401, 403})
# "workflows.api.error.workflow.not_found", seen in production by a third party (inferred for REST).
WORKFLOW_NOT_FOUND_ERROR_CODES = frozenset({10200})
WORKFLOW_NOT_FOUND_MESSAGE_FRAGMENT = "workflow.not_found"
# How many of the account's workflow names an unknown-workflow error lists.
MAX_LISTED_WORKFLOWS = 20
# Where a status change already stands when its 409 answer means "done already": a terminate or pause
# whose first answer was lost meets 409 on its retry (inferred: the API documents 409 only for restart).
ACTION_REACHED_STATUSES: dict[StatusAction, frozenset[str]] = {
    StatusAction.TERMINATE: frozenset({InstanceStatus.TERMINATED.value}),
    StatusAction.PAUSE: frozenset({InstanceStatus.PAUSED.value, InstanceStatus.WAITING_FOR_PAUSE.value}),
}
_MAX_ERROR_CHAIN_DEPTH = 5


class ParamsEncoding(StrEnum):
    """How create and batch create send an instance's ``params`` (connection extra ``params_encoding``).

    ``object`` sends the JSON value, as wrangler does; ``string`` sends it JSON-encoded into a string, as
    the newest API spec and SDKs type it (``params: str`` in the ``cloudflare`` Python SDK 5.9.0). Which
    one production requires is not documented (inferred): object is the default.
    """

    OBJECT = "object"
    STRING = "string"


@dataclass(frozen=True)
class ApiRequest:
    """
    One API call, ready for a transport.

    :param method: HTTP method.
    :param path: path below the base URL, every segment percent-encoded.
    :param query: query parameters, in order.
    :param body: JSON body bytes, or None.
    :param idempotent: whether repeating the call is safe (only those are retried).
    :param extra_headers: headers this request needs besides Content-Type and the connection's.
    :param params_encoding: for a create or batch create that sends ``params``, the encoding used
        (its 400 answers then name the ``params_encoding`` setting); None otherwise.
    :param account_id: the account the path names (for messages).
    :param workflow_name: the workflow the path names, if any (for messages: a 404 for it lists the
        account's workflows).
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    idempotent: bool = True
    extra_headers: tuple[tuple[str, str], ...] = ()
    params_encoding: ParamsEncoding | None = None
    account_id: str | None = None
    workflow_name: str | None = None

    def url(self, base_url: str) -> str:
        """Absolute URL (query values percent-encoded, spaces as ``%20``)."""
        query = f"?{urlencode(self.query, quote_via=quote)}" if self.query else ""
        return f"{base_url}{self.path}{query}"

    def headers(self) -> dict[str, str]:
        """Headers that depend on the request (auth headers come from the connection)."""
        headers = {"Content-Type": JSON_CONTENT_TYPE} if self.body is not None else {}
        return {**headers, **dict(self.extra_headers)}

    def describe(self) -> str:
        """``METHOD path`` for logs and errors."""
        return f"{self.method} {self.path}"


def encode_segment(value: str) -> str:
    """Percent-encode one path segment, including ``/``, ``*`` and spaces (cron instance ids have them)."""
    if value in DOT_SEGMENTS:  # every validator refuses them first, with the parameter's name
        raise CloudflareWorkflowsConfigurationError("'.' and '..' are not allowed as a name or id.")
    return quote(value, safe="")


def _workflows_path(account_id: str, *segments: str) -> str:
    return "/".join(["", "accounts", encode_segment(account_id), "workflows", *map(encode_segment, segments)])


def _workflow_request(
    method: str, account_id: str, workflow: str, *segments: str, **fields: Any
) -> ApiRequest:
    """A request to ``.../workflows/{workflow}/{segments}``, naming its account and (validated) workflow."""
    return ApiRequest(
        method,
        _workflows_path(account_id, workflow, *segments),
        account_id=account_id,
        workflow_name=workflow,
        **fields,
    )


def _instance_segments(workflow_name: str, instance_id: str) -> tuple[str, str, str]:
    """The validated path of an instance below ``.../workflows/``: its workflow, ``instances``, its id."""
    return validate_workflow_name(workflow_name), "instances", validate_instance_id(instance_id)


def _query(**values: Any) -> tuple[tuple[str, str], ...]:
    pairs = []
    for key, value in values.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        pairs.append((key, str(value)))
    return tuple(pairs)


def format_date_filter(value: datetime | str, what: str) -> str:
    """
    A ``date_start``/``date_end`` value as the API wants it: ISO 8601 in UTC, marked ``Z``.

    A timezone-aware datetime is converted to UTC. A naive datetime is refused: in Airflow it usually
    comes from ``datetime.now()`` (local time), and guessing its zone would shift the filter silently.
    A string must be ISO 8601 (a date, or a date and time); one without an offset is taken as UTC, as
    the API documents, one with an offset is converted. Milliseconds are kept when present.
    """
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise CloudflareWorkflowsConfigurationError(
                f"{what} must be an ISO 8601 date or date and time such as '2026-01-31T12:00:00Z', "
                f"got {value!r}."
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    elif isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise CloudflareWorkflowsConfigurationError(
                f"{what} is a naive datetime (no timezone): pass a timezone-aware datetime, e.g. "
                "datetime(2026, 1, 31, tzinfo=timezone.utc) or pendulum.now('UTC'), or an ISO 8601 string."
            )
        moment = value
    else:
        raise CloudflareWorkflowsConfigurationError(
            f"{what} must be a timezone-aware datetime or an ISO 8601 string, got {type(value).__name__}."
        )
    moment = moment.astimezone(UTC)
    if moment.microsecond:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# --- request builders --------------------------------------------------------------------------


def list_workflows_request(
    account_id: str, *, page: int = 1, per_page: int = 50, search: str | None = None
) -> ApiRequest:
    """``GET /accounts/{account_id}/workflows``."""
    return ApiRequest(
        "GET",
        _workflows_path(account_id),
        _query(page=page, per_page=validate_per_page(per_page), search=search),
        account_id=account_id,
    )


def get_workflow_request(account_id: str, workflow_name: str) -> ApiRequest:
    """``GET /accounts/{account_id}/workflows/{workflow_name}``."""
    return _workflow_request("GET", account_id, validate_workflow_name(workflow_name))


def list_instances_request(
    account_id: str,
    workflow_name: str,
    *,
    cursor: str | None = None,
    direction: str | None = None,
    status: str | None = None,
    date_start: datetime | str | None = None,
    date_end: datetime | str | None = None,
    per_page: int = 50,
) -> ApiRequest:
    """
    ``GET .../{workflow_name}/instances`` (cursor pagination).

    ``direction`` is sent only with a ``cursor``: the API reference says it "should only be used when
    cursor is used, defines a new direction for the cursor". The first page (no cursor) therefore comes
    in the server's default order, which the API reference does not document (inferred; the emulator
    returns oldest first, and wrangler sorts by creation time itself rather than rely on it).

    :param date_start: see :func:`format_date_filter`.
    :param date_end: see :func:`format_date_filter`.
    """
    if direction is not None and direction not in ("asc", "desc"):
        raise CloudflareWorkflowsConfigurationError(f"direction must be 'asc' or 'desc', got {direction!r}.")
    workflow = validate_workflow_name(workflow_name)
    return _workflow_request(
        "GET",
        account_id,
        workflow,
        "instances",
        query=_query(
            per_page=validate_per_page(per_page),
            cursor=cursor or None,
            direction=direction if cursor else None,
            status=validate_instance_status(status).value if status is not None else None,
            date_start=format_date_filter(date_start, "date_start") if date_start is not None else None,
            date_end=format_date_filter(date_end, "date_end") if date_end is not None else None,
        ),
    )


def get_instance_request(
    account_id: str, workflow_name: str, instance_id: str, *, simple: bool = False, order: str | None = None
) -> ApiRequest:
    """``GET .../instances/{instance_id}`` (``simple=true`` omits the steps)."""
    if order is not None and order not in ("asc", "desc"):
        raise CloudflareWorkflowsConfigurationError(f"order must be 'asc' or 'desc', got {order!r}.")
    instance = _instance_segments(workflow_name, instance_id)
    return _workflow_request("GET", account_id, *instance, query=_query(simple=simple, order=order))


def _new_instance_item(
    instance_id: str | None,
    params: Any,
    instance_retention: Mapping[str, Any] | None,
    params_encoding: ParamsEncoding,
    location_hint: str | None = None,
) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if instance_id is not None:
        item["instance_id"] = validate_new_instance_id(instance_id)
    if params is not None:
        encoded = encode_json(params, "instance_params").decode()
        item["params"] = encoded if params_encoding is ParamsEncoding.STRING else params
    retention = validate_instance_retention(instance_retention)
    if retention is not None:
        item["instance_retention"] = retention
    if location_hint is not None:
        item["location_hint"] = validate_location_hint(location_hint)
    return item


def _params_encoding(value: ParamsEncoding | str) -> ParamsEncoding:
    try:
        return ParamsEncoding(value)
    except ValueError:
        raise CloudflareWorkflowsConfigurationError(
            f"params_encoding must be 'object' or 'string', got {value!r}."
        ) from None


def create_instance_request(
    account_id: str,
    workflow_name: str,
    *,
    instance_id: str | None = None,
    params: Any = None,
    instance_retention: Mapping[str, Any] | None = None,
    params_encoding: ParamsEncoding | str = ParamsEncoding.OBJECT,
    location_hint: str | None = None,
) -> ApiRequest:
    """
    ``POST .../instances``; idempotent (so retried) only with an explicit ``instance_id``.

    :param params_encoding: ``object`` sends ``params`` as JSON, ``string`` JSON-encoded in a string
        (see :class:`ParamsEncoding`).
    :param location_hint: where to run the instance (see :data:`validation.LOCATION_HINTS`).
    """
    encoding = _params_encoding(params_encoding)
    item = _new_instance_item(instance_id, params, instance_retention, encoding, location_hint)
    return _workflow_request(
        "POST",
        account_id,
        validate_workflow_name(workflow_name),
        "instances",
        body=encode_json(item, "create-instance body"),
        idempotent=instance_id is not None,
        params_encoding=encoding if "params" in item else None,
    )


def create_instances_batch_request(
    account_id: str,
    workflow_name: str,
    instances: Sequence[Mapping[str, Any]],
    *,
    params_encoding: ParamsEncoding | str = ParamsEncoding.OBJECT,
) -> ApiRequest:
    """
    ``POST .../instances/batch`` with 1-100 items of
    ``{instance_id?, params?, instance_retention?, location_hint?}``.

    :param params_encoding: as for :func:`create_instance_request`, applied to every item.
    """
    if not 1 <= len(instances) <= MAX_BATCH_SIZE:
        raise CloudflareWorkflowsConfigurationError(
            f"A batch holds 1 to {MAX_BATCH_SIZE} instances, got {len(instances)}; split larger lists."
        )
    encoding = _params_encoding(params_encoding)
    items = [
        _new_instance_item(
            item.get("instance_id"),
            item.get("params"),
            item.get("instance_retention"),
            encoding,
            item.get("location_hint"),
        )
        for item in instances
    ]
    return _workflow_request(
        "POST",
        account_id,
        validate_workflow_name(workflow_name),
        "instances",
        "batch",
        body=encode_json(items, "batch body"),
        # Existing ids are skipped by the batch call, so a batch of explicit ids is safe to repeat.
        idempotent=all("instance_id" in item for item in items),
        params_encoding=encoding if any("params" in item for item in items) else None,
    )


def delete_instances_request(account_id: str, workflow_name: str, instance_ids: Sequence[str]) -> ApiRequest:
    """
    ``POST .../instances/batch/delete`` with ``{"instances": [1-100 ids]}`` (the endpoint wrangler's
    ``workflows instances delete`` uses; not in the API reference's operation list, inferred from it).

    Idempotent: deleting again only reports the ids that are gone (code 10400).
    """
    if isinstance(instance_ids, str) or not 1 <= len(instance_ids) <= MAX_BATCH_SIZE:
        raise CloudflareWorkflowsConfigurationError(
            f"A batch delete holds a list of 1 to {MAX_BATCH_SIZE} instance ids; split larger lists."
        )
    ids = [validate_instance_id(instance_id) for instance_id in instance_ids]
    workflow = validate_workflow_name(workflow_name)
    body = encode_json({"instances": ids}, "batch delete body")
    return _workflow_request("POST", account_id, workflow, "instances", "batch", "delete", body=body)


def change_instance_status_request(
    account_id: str,
    workflow_name: str,
    instance_id: str,
    action: str,
    *,
    rollback: bool | None = None,
    restart_from: Mapping[str, Any] | None = None,
) -> ApiRequest:
    """``PATCH .../instances/{instance_id}/status`` with ``{"status": action, ...}``."""
    status_action = validate_status_action(action)
    body: dict[str, Any] = {"status": status_action.value}
    if rollback is not None:
        if status_action is not StatusAction.TERMINATE:
            raise CloudflareWorkflowsConfigurationError("rollback applies only to action='terminate'.")
        body["rollback"] = bool(rollback)
    if restart_from is not None:
        if status_action is not StatusAction.RESTART:
            raise CloudflareWorkflowsConfigurationError("restart_from applies only to action='restart'.")
        body["from"] = dict(restart_from)
    return _workflow_request(
        "PATCH",
        account_id,
        *_instance_segments(workflow_name, instance_id),
        "status",
        body=encode_json(body, "status body"),
        idempotent=status_action is not StatusAction.RESTART,
    )


def send_event_request(
    account_id: str, workflow_name: str, instance_id: str, event_type: str, payload: Any = None
) -> ApiRequest:
    """``POST .../instances/{instance_id}/events/{event_type}``; the body is the payload. Never retried."""
    event = validate_event_type(event_type)
    instance = _instance_segments(workflow_name, instance_id)
    return _workflow_request(
        "POST", account_id, *instance, "events", event, body=validate_event_payload(payload), idempotent=False
    )


def list_versions_request(
    account_id: str, workflow_name: str, *, page: int = 1, per_page: int = 50
) -> ApiRequest:
    """``GET .../{workflow_name}/versions``."""
    workflow = validate_workflow_name(workflow_name)
    query = _query(page=page, per_page=validate_per_page(per_page))
    return _workflow_request("GET", account_id, workflow, "versions", query=query)


def get_version_graph_request(account_id: str, workflow_name: str, version_id: str) -> ApiRequest:
    """``GET .../{workflow_name}/versions/{version_id}/graph``: the steps the version's code declares."""
    workflow = validate_workflow_name(workflow_name)
    return _workflow_request(
        "GET", account_id, workflow, "versions", validate_version_id(version_id), "graph"
    )


def step_output_request(
    account_id: str,
    workflow_name: str,
    instance_id: str,
    step_name: str,
    step_type: str = StepType.STEP,
    attempt: int | None = None,
) -> ApiRequest:
    """
    ``GET .../instances/{instance_id}/step?name=&type=[&attempt=]``.

    Asks for ``Accept-Encoding: identity``: a stream output's ``Content-Length`` then counts the bytes
    the transport hands over, so a cut-short body can be told from a complete one.
    """
    kind, attempt = validate_step_attempt(step_type, attempt)
    return _workflow_request(
        "GET",
        account_id,
        *_instance_segments(workflow_name, instance_id),
        "step",
        query=_query(name=validate_step_name(step_name), type=kind.value, attempt=attempt),
        extra_headers=(("Accept-Encoding", "identity"),),
    )


# --- response parsing --------------------------------------------------------------------------


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Case-insensitive header lookup over any mapping."""
    value = headers.get(name)  # requests' and httpx's headers find any case at once
    if value is not None:
        return value
    return next((value for key, value in headers.items() if key.lower() == name.lower()), None)


def content_type_of(headers: Mapping[str, str]) -> str:
    """The media type of a response, without parameters (``application/json``)."""
    return (header(headers, "content-type") or "").split(";")[0].strip().lower()


def is_byte_stream(status_code: int, headers: Mapping[str, str]) -> bool:
    """
    Whether a response is a step's raw output (a ``ReadableStream``) rather than a JSON envelope.

    Only a success status with ``application/octet-stream`` is one; anything else (an error, whatever
    its content type) is read as a JSON envelope, so it becomes a typed error.
    """
    return 200 <= status_code < 300 and content_type_of(headers) == OCTET_STREAM_CONTENT_TYPE


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """
    ``Retry-After`` as whole seconds, rounded up (RFC 9110 allows only whole seconds: ``0.4`` must not
    become 0): a number of seconds or an HTTP date; None when absent or unreadable (``inf``, ``nan``).
    """
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - (time.time() if now is None else now)
    return float(math.ceil(max(0.0, seconds))) if math.isfinite(seconds) else None


def _error_message(item: Mapping[str, Any], depth: int = 0) -> str:
    """An error item's message, followed by its ``error_chain`` in brackets (nested chains too)."""
    message = bounded(item.get("message", ""), MAX_API_ERROR_CHARS)
    chain = item.get("error_chain")
    if not isinstance(chain, list) or depth >= _MAX_ERROR_CHAIN_DEPTH:
        return message
    causes = bounded_list(
        [cause for cause in chain if isinstance(cause, Mapping)],
        MAX_API_ERRORS,
        "causes",
        lambda cause: str(_error_detail(cause, depth + 1)),
    )
    return f"{message} ({'; '.join(causes)})" if causes else message


def _error_detail(item: Mapping[str, Any], depth: int = 0) -> CloudflareErrorDetail:
    code = item.get("code")
    return CloudflareErrorDetail(
        code if isinstance(code, int) and not isinstance(code, bool) else None,
        bounded(_error_message(item, depth), MAX_API_ERROR_CHARS),
    )


def _error_details(payload: Any) -> tuple[CloudflareErrorDetail, ...]:
    """
    The ``errors`` items, each rendered as ``code: message (chain code: chain message)``: at most
    ``MAX_API_ERRORS`` of them (then one saying how many more there were), each cut to
    ``MAX_API_ERROR_CHARS`` characters (see :mod:`.remote_text`).
    """
    items = payload.get("errors") if isinstance(payload, Mapping) else None
    if not isinstance(items, list):
        return ()
    details = []
    for item in items[:MAX_API_ERRORS]:
        if isinstance(item, Mapping):
            details.append(_error_detail(item))
        elif isinstance(item, str):  # 4xx envelopes have been seen with plain-string items
            details.append(CloudflareErrorDetail(None, bounded(item, MAX_API_ERROR_CHARS)))
    if len(items) > MAX_API_ERRORS:
        details.append(CloudflareErrorDetail(None, f"… and {len(items) - MAX_API_ERRORS} more errors cut"))
    return tuple(details)


def check_json_body_size(request: ApiRequest, size: int | None, *, http_status: int | None = None) -> None:
    """
    Refuse a JSON answer larger than ``MAX_JSON_BODY_BYTES``.

    Call it with the declared ``Content-Length`` (None when there is none) before reading, and with
    the running total while reading (a body without ``Content-Length`` can be endless).
    """
    if size is not None and size > MAX_JSON_BODY_BYTES:
        raise CloudflareWorkflowsResponseTooLargeError(
            f"Cloudflare's JSON answer is larger than {MAX_JSON_BODY_BYTES // (1024 * 1024)} MiB; no API "
            "answer is that large, so it was not read further",
            http_status=http_status,
            method=request.method,
            path=request.path,
        )


def _decode_json(body: bytes) -> Any:
    """The JSON value of ``body``, or None when it is not JSON; RecursionError when nested too deeply."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        return None


_STATUS_ERRORS: dict[int, tuple[type[CloudflareWorkflowsError], str]] = {
    401: (CloudflareWorkflowsAuthError, "Cloudflare rejected the credentials"),
    403: (
        CloudflareWorkflowsAuthError,
        "Cloudflare refused access (check the token's permissions and account)",
    ),
    404: (CloudflareWorkflowsNotFoundError, "Not found"),
    409: (CloudflareWorkflowsConflictError, "Conflict with the instance's current state"),
}


def _auth_hint(status_code: int, errors: Sequence[CloudflareErrorDetail]) -> str | None:
    if status_code not in AUTH_ERROR_STATUS_CODES:
        return None
    return next((AUTH_ERROR_HINTS[error.code] for error in errors if error.code in AUTH_ERROR_HINTS), None)


def _params_hint(
    request: ApiRequest, status_code: int, errors: Sequence[CloudflareErrorDetail]
) -> str | None:
    """For a create whose 400 answer mentions params: the ``params_encoding`` setting to try."""
    if request.params_encoding is None or status_code != 400:
        return None
    if not any("params" in error.message.lower() for error in errors):
        return None
    other = (
        ParamsEncoding.STRING if request.params_encoding is ParamsEncoding.OBJECT else ParamsEncoding.OBJECT
    )
    sent = request.params_encoding.value
    return (
        f"Cloudflare refused the instance params, sent with params_encoding={sent!r}: "
        f"if they are valid JSON, set the connection extra params_encoding to {other.value!r} (the API "
        "documents params both as a JSON object and as a JSON-encoded string)"
    )


def _response_context(request: ApiRequest, status_code: int, headers: Mapping[str, str]) -> dict[str, Any]:
    """What an error about a response says of it: its status, Cloudflare's ray id, the request."""
    return {
        "http_status": status_code,
        "cf_ray": header(headers, "cf-ray"),
        "method": request.method,
        "path": request.path,
    }


def error_for_response(
    request: ApiRequest, status_code: int, headers: Mapping[str, str], body: bytes
) -> CloudflareWorkflowsError:
    """The typed error for a non-2xx response."""
    try:
        payload = _decode_json(body)
    except RecursionError:  # its status says enough
        payload = None
    errors = _error_details(payload)
    context = {**_response_context(request, status_code, headers), "errors": errors}
    auth_hint = _auth_hint(status_code, errors)
    if auth_hint is not None:
        return CloudflareWorkflowsAuthError(auth_hint, **context)
    params_hint = _params_hint(request, status_code, errors)
    if params_hint is not None:
        return CloudflareWorkflowsError(params_hint, **context)
    if status_code == 429:
        return CloudflareWorkflowsRateLimitError(
            "Rate limited by Cloudflare",
            retry_after=parse_retry_after(header(headers, "retry-after")),
            **context,
        )
    if status_code in _STATUS_ERRORS:
        error_class, message = _STATUS_ERRORS[status_code]
        return error_class(message, **context)
    if status_code == 408 or status_code >= 500:
        return CloudflareWorkflowsServerError("Cloudflare server error", **context)
    return CloudflareWorkflowsError("Cloudflare API request failed", **context)


def parse_envelope(
    request: ApiRequest, status_code: int, headers: Mapping[str, str], body: bytes
) -> Envelope:
    """
    Check a JSON response and return its ``result``.

    Raises the typed error for HTTP errors, for ``success: false`` even with HTTP 200 (seen in
    production), and for a body that is not Cloudflare's JSON envelope.
    """
    if not 200 <= status_code < 300:
        raise error_for_response(request, status_code, headers, body)
    context = _response_context(request, status_code, headers)
    try:
        payload = _decode_json(body)
    except RecursionError:
        raise CloudflareWorkflowsResponseTooDeepError(
            "Cloudflare's JSON answer nests lists or objects too deeply for Python to read (about 1,000 "
            "levels: its recursion limit), so it cannot be used; a retry would get the same answer",
            **context,
        ) from None
    if not isinstance(payload, Mapping):
        snippet = body[:120].decode("utf-8", "replace")
        raise CloudflareWorkflowsResponseError(
            f"Cloudflare answered with a body that is not a JSON envelope (starts with {snippet!r})",
            **context,
        )
    if payload.get("success") is not True:
        raise CloudflareWorkflowsServerError(
            "Cloudflare answered success=false", errors=_error_details(payload), **context
        )
    result_info = payload.get("result_info")
    return Envelope(
        result=payload.get("result"), result_info=result_info if isinstance(result_info, Mapping) else {}
    )


def parse_step_output(result: Any) -> StepOutput:
    """The ``result`` of a JSON ``/step`` response."""
    if not isinstance(result, Mapping) or not isinstance(result.get("status"), str):
        raise CloudflareWorkflowsResponseError(f"Unexpected /step result (no status): {bounded(result, 200)}")
    event_type = result.get("event_type")
    return StepOutput(
        status=bounded(result["status"], MAX_NAME_CHARS),
        error=RemoteError.from_api(result.get("error")),
        output=result.get("output"),
        content_type=JSON_CONTENT_TYPE,
        event_type=bounded(event_type, MAX_NAME_CHARS) if isinstance(event_type, str) else None,
    )


def stream_step_status() -> StepOutput:
    """The status-shaped view of an ``application/octet-stream`` ``/step`` response: always complete."""
    return StepOutput(status="complete", error=None, output=None, content_type=OCTET_STREAM_CONTENT_TYPE)


def parse_content_length(headers: Mapping[str, str]) -> int | None:
    """``Content-Length`` as an int, or None."""
    value = header(headers, "content-length")
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def next_cursor(result_info: Mapping[str, Any]) -> str | None:
    """The cursor of the next page; None (or empty) ends the listing (as wrangler does)."""
    cursor = result_info.get("cursor")
    return cursor if isinstance(cursor, str) and cursor else None


def has_next_page(result_info: Mapping[str, Any], page: int, received: int, per_page: int) -> bool:
    """Page-numbered listings: whether another page exists after ``page``."""
    total_pages = result_info.get("total_pages")
    if isinstance(total_pages, int):
        return page < total_pages
    return received >= per_page


# --- retries -----------------------------------------------------------------------------------


def retry_delay(attempt_number: int, error: BaseException | None, *, jitter: float | None = None) -> float:
    """
    Seconds to wait before retry ``attempt_number`` (1 = first retry).

    Honours ``Retry-After`` (capped at ``RETRY_AFTER_MAX_SECONDS``) plus up to 25 % of it (at least
    ``BACKOFF_BASE_SECONDS``) of jitter, never less than asked; otherwise exponential backoff
    ``0.5 * 2^(n-1)`` capped at ``BACKOFF_MAX_SECONDS``, minus up to 25 % jitter.

    :param jitter: the random fraction in [0, 1) (for tests); drawn when None.
    """
    fraction = random.random() if jitter is None else jitter
    if isinstance(error, CloudflareWorkflowsRateLimitError) and error.retry_after is not None:
        asked = min(error.retry_after, RETRY_AFTER_MAX_SECONDS)
        return asked + fraction * max(RETRY_AFTER_JITTER_FRACTION * asked, BACKOFF_BASE_SECONDS)
    base = min(BACKOFF_BASE_SECONDS * 2 ** max(attempt_number - 1, 0), BACKOFF_MAX_SECONDS)
    return base * (1 - 0.25 * fraction)


def retry_fits_deadline(upcoming_sleep: float, *, now: float | None = None) -> bool:
    """Whether a retry after ``upcoming_sleep`` seconds still starts before the current deadline."""
    deadline = current_deadline()
    if deadline is None:
        return True
    return (time.time() if now is None else now) + upcoming_sleep < deadline


@dataclass
class AttemptClock:
    """
    The time one attempt of a call may take: the connection ``timeout`` for the whole attempt (connect,
    headers and the full JSON body, not each socket read), cut to the wait's deadline
    (:func:`deadlines.current_deadline`). Byte streams are bounded per read instead (no progress).

    :param timeout: the connection's timeout in seconds.
    """

    timeout: float
    ends_at: float = field(default=math.inf, init=False)

    def start(self, request: ApiRequest) -> float:
        """
        Start the attempt now; the socket timeout to connect and wait for the answer.

        Raises a (not-sent) timeout error when the deadline has already passed.
        """
        now = time.time()
        deadline = current_deadline()
        self.ends_at = now + self.timeout if deadline is None else min(now + self.timeout, deadline)
        if self.ends_at <= now:
            raise CloudflareWorkflowsConnectionError(
                "Request not sent: the wait's deadline had passed",
                request_sent=False,
                method=request.method,
                path=request.path,
            )
        return self.socket_timeout()

    def seconds_left(self) -> float:
        """Seconds left in the attempt (never negative)."""
        return max(0.0, self.ends_at - time.time())

    def socket_timeout(self) -> float:
        """The time left as a socket timeout (a small positive minimum: zero means "none" to some)."""
        return max(self.seconds_left(), MIN_SOCKET_TIMEOUT_SECONDS)

    def check(self, request: ApiRequest, received: int, *, http_status: int | None = None) -> None:
        """Raise :meth:`timeout_error` when the attempt has run out of time."""
        if time.time() >= self.ends_at:
            raise self.timeout_error(request, received, http_status=http_status)

    def timeout_error(
        self, request: ApiRequest, received: int | None = None, *, http_status: int | None = None
    ) -> CloudflareWorkflowsConnectionError:
        """
        The error of an attempt that ran out of time.

        :param received: bytes of the body that had arrived; None when the status line and headers had
            not all arrived.
        :param http_status: the response's status, when its status line and headers had arrived (the
            server answered, slowly).
        """
        if received is None:
            progress = "its status line and headers had not all arrived"
        else:
            progress = f"its status line and headers had arrived, then {received} bytes of its body"
        return CloudflareWorkflowsConnectionError(
            f"Request timed out: no complete answer within the attempt's {self.timeout:g} s (the connection "
            f"timeout, cut to the wait's deadline); {progress}",
            http_status=http_status,
            method=request.method,
            path=request.path,
        )


# --- errors that need a second look ------------------------------------------------------------


def is_workflow_not_found(request: ApiRequest, error: CloudflareWorkflowsError) -> bool:
    """Whether a 404 says the request's workflow does not exist (code 10200, or any 404 to the workflow)."""
    if not isinstance(error, CloudflareWorkflowsNotFoundError) or request.workflow_name is None:
        return False
    if any(code in WORKFLOW_NOT_FOUND_ERROR_CODES for code in error.error_codes):
        return True
    if any(WORKFLOW_NOT_FOUND_MESSAGE_FRAGMENT in detail.message.lower() for detail in error.errors):
        return True
    return request.path == _workflows_path(request.account_id or "", request.workflow_name)


def workflow_not_found_error(
    request: ApiRequest, error: CloudflareWorkflowsError, workflow_names: Sequence[str] | None
) -> CloudflareWorkflowsUnknownWorkflowError:
    """
    The 404 for an unknown workflow, naming it, the account, and the workflows the account has.

    :param workflow_names: the account's workflows (the first page), or None when they could not be listed.
    """
    name = request.workflow_name
    if workflow_names is None:
        listing = "its workflows could not be listed"
    elif not workflow_names:
        listing = "the account has no workflows (is the Worker that defines it deployed to this account?)"
    else:
        shown = sorted(workflow_names)[:MAX_LISTED_WORKFLOWS]
        more = len(workflow_names) - len(shown)
        listing = "the account has " + ", ".join(repr(bounded(known, MAX_NAME_CHARS)) for known in shown)
        if more > 0:
            listing += f" and {more} more"
        close = difflib.get_close_matches(name or "", workflow_names, n=1)
        if close:
            listing += f"; did you mean {bounded(close[0], MAX_NAME_CHARS)!r}?"
    return error.restated(
        f"Workflow {name!r} was not found in account {request.account_id}: {listing} "
        "(check workflow_name, and account_id or the connection's login)",
        CloudflareWorkflowsUnknownWorkflowError,
    )


def reached_status(action: StatusAction | str, status: Any) -> bool:
    """Whether an instance in ``status`` already is where ``action`` takes it (terminate and pause only)."""
    reached = ACTION_REACHED_STATUSES.get(StatusAction(action), frozenset())
    return isinstance(status, str) and status in reached
