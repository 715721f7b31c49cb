"""The emulator's HTTP layer: raw-path routing, Cloudflare auth, the rate limit, faults, the request log.

Requests are routed on the raw (still percent-encoded) path, ``scope["raw_path"]``, split on ``/``
and decoded segment by segment: ids of cron-triggered instances contain ``/`` (sent as ``%2F``),
which a router working on the decoded path would take for a separator. FastAPI only provides one
catch-all route.

* ``/client/v4/accounts/{account_id}/workflows/...``: the emulated API (see ``api``). Every request
  is logged (never with credential values), then authenticated (``auth``), counted against the rate
  limit (``ratelimit``), and may get an injected fault (``faults``). Every answer carries a ``cf-ray``
  header, and the ``Ratelimit`` / ``Ratelimit-Policy`` headers while a rate limit with headers is on.
  Unknown paths answer 400, 7000 "No route for that URI".
* ``/__emulator/...``: the control API for tests (see ``control``); no auth, not logged.

The order of checks: credentials presented -> rate limit (429, 971) -> credentials valid (400 9106 /
400 6003 / 403 10000) -> route (400 7000) -> account (403 10000) -> fault -> the endpoint.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from . import control, errors
from .api import Reply, WorkflowsApi, route
from .auth import authenticate
from .clock import Clock
from .errors import ApiError
from .faults import NO_EFFECT_KINDS, Fault
from .responses import (
    JSON_TYPE,
    OCTET_STREAM_TYPE,
    PLAIN,
    TRANSPORT_SCOPE_KEY,
    EmulatedDisconnect,
    Wire,
    WireResponse,
    accepts_gzip,
    dump_json,
    endless_json,
    envelope,
    error_envelope,
    html_error_page,
    is_emulated_disconnect,
    json_response,
    new_cf_ray,
)
from .scenario import Scenario
from .state import EmulatorState
from .streams import BLOCK_SIZE, iter_stream_bytes

API_PREFIX = ("client", "v4", "accounts")
CONTROL_PREFIX = "__emulator"
MAX_REQUEST_BODY = 16 * 1024 * 1024  # bigger bodies get 413 (no endpoint takes more than ~1 MiB)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]  # all answered with the envelope

log = logging.getLogger(__name__)


class _QuietEmulatedDisconnects(logging.Filter):
    """Keeps uvicorn from logging a traceback for each connection the emulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_emulated_disconnect(record.exc_info[1]))


logging.getLogger("uvicorn.error").addFilter(_QuietEmulatedDisconnects())


class EmulatorApp(FastAPI):
    """FastAPI, plus the server's transport in the scope, so that a fault can drop a connection unanswered."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # uvicorn's `send` is a method of the request cycle, which holds the connection's transport.
            scope[TRANSPORT_SCOPE_KEY] = getattr(getattr(send, "__self__", None), "transport", None)
        await super().__call__(scope, receive, send)


# --- responses ---------------------------------------------------------------------------------


def error_response(error: ApiError, wire: Wire = PLAIN) -> Response:
    return json_response(error_envelope(error), error.status, wire=wire)


def reply_response(reply: Reply, fault: Fault | None, wire: Wire) -> Response:
    """The HTTP response for a handler's reply, with a body-level fault applied."""
    if reply.stream is not None:
        spec = reply.stream
        chunks = iter_stream_bytes(spec.size, spec.seed, BLOCK_SIZE, spec.text)
        # success_false / malformed_json only change JSON bodies; a stream is sent whole (inferred).
        return faulty_response(chunks, spec.size, 200, OCTET_STREAM_TYPE, fault, wire)
    return json_fault_response(envelope(reply.result, result_info=reply.result_info), 200, fault, wire)


def json_fault_response(body: dict[str, Any], status: int, fault: Fault | None, wire: Wire) -> Response:
    """A JSON envelope answer, possibly broken by a fault."""
    kind = fault.kind if fault is not None else None
    if kind == "success_false" and body["success"]:
        # As seen in production: HTTP 200, success false, internal_server error, the real result.
        body = {**body, "success": False, "errors": [ApiError(500, errors.INTERNAL).as_error()]}
    if kind == "success_false":
        status = 200
    payload = dump_json(body)
    if kind == "malformed_json":
        payload, status = payload[: max(1, len(payload) // 2)], 200
    return faulty_response([payload], len(payload), status, JSON_TYPE, fault, wire)


def faulty_response(
    chunks: Any, size: int, status: int, media_type: str, fault: Fault | None, wire: Wire
) -> Response:
    """A body sent as ``wire`` says, changed by a wire-level fault (drop, drip, truncation, endless)."""
    kind = fault.kind if fault is not None else None
    if fault is not None and kind in ("drop_connection", "truncated_chunked"):
        after = fault.after_bytes if fault.after_bytes is not None else size // 2
        clean = kind == "truncated_chunked"
        wire = dataclasses.replace(wire, cut_after=after, clean_end=clean, content_length=not clean)
    elif fault is not None and kind == "drip":
        wire = dataclasses.replace(wire, drip_interval=fault.interval)
    elif fault is not None and kind == "header_drip":
        wire = dataclasses.replace(wire, header_drip_interval=fault.interval)
    elif kind == "endless_json":
        return WireResponse(endless_json(), None, wire=dataclasses.replace(wire, content_length=False))
    return WireResponse(chunks, size, status=status, media_type=media_type, wire=wire)


# --- requests ----------------------------------------------------------------------------------


def raw_path_of(scope: Scope) -> str:
    """The request path exactly as sent (percent-encoding kept)."""
    raw = scope.get("raw_path")
    path = raw.decode("latin-1") if isinstance(raw, bytes | bytearray) else str(scope.get("path", "/"))
    return path.split("?", 1)[0]


def path_segments(raw_path: str) -> list[str]:
    """Split on ``/`` first, then percent-decode each segment (so ``%2F`` stays inside its segment)."""
    trimmed = raw_path.strip("/")
    return [unquote(part) for part in trimmed.split("/")] if trimmed else []


def parse_query(query_string: str) -> dict[str, str]:
    """Query parameters (the last value wins), percent-decoded."""
    return dict(parse_qsl(query_string, keep_blank_values=True))


def is_api_path(segments: list[str]) -> bool:
    """Whether a path is below ``/client/v4/accounts/{account_id}/workflows``."""
    return tuple(segments[:3]) == API_PREFIX and len(segments) >= 5 and segments[4] == "workflows"


def endpoint_of(method: str, segments: list[str]) -> str | None:
    """The endpoint name (``create``, ``send_event``, ...) of an API request, for the request log."""
    if not is_api_path(segments):
        return None
    found = route(method, segments[5:])
    return found.endpoint if found is not None else None


def create_app(scenario: Scenario, *, clock: Clock | None = None) -> FastAPI:
    """The emulator as an ASGI app serving ``scenario`` (state in ``app.state.emulator``)."""
    state = EmulatorState.from_scenario(scenario, clock)
    api = WorkflowsApi(state)
    app = EmulatorApp(title="Cloudflare Workflows emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state

    @app.api_route("/{_path:path}", methods=METHODS, include_in_schema=False)
    async def dispatch(request: Request) -> Response:
        raw_path = raw_path_of(request.scope)
        segments = path_segments(raw_path)
        query_string = request.scope.get("query_string", b"").decode("latin-1")
        query = parse_query(query_string)
        raw_body = await _read_body(request)
        body, body_ok = _parse_body(raw_body)
        if segments[:1] == [CONTROL_PREFIX]:
            if not body_ok:
                return json_response({"error": "the body is not valid JSON"}, 400)
            status, content = await control.handle(state, request.method, segments[1:], query, body)
            return json_response(content, status)
        entry: dict[str, Any] = {
            "time": time.time(),
            "method": request.method,
            "raw_path": raw_path,
            "query": query_string,
            "endpoint": endpoint_of(request.method, segments),
            "auth": "none",
            "credential": None,
            "body": body if body_ok else None,
            "fault": None,
            "status": None,
        }
        state.request_log.append(entry)
        wire = Wire(gzip=state.options.gzip and accepts_gzip(request.headers.get("accept-encoding")))
        credentials = authenticate(state.scenario, request.headers)
        entry["auth"], entry["credential"] = credentials.scheme, credentials.label
        verdict = state.limiter.admit(credentials.label) if credentials.label is not None else None
        if verdict is not None and not verdict.allowed:
            response = error_response(ApiError(429, errors.RATE_LIMITED), wire)
        else:
            response = await _answer(
                state, api, request, segments, query, body, body_ok, raw_body, entry, credentials.error, wire
            )
        if verdict is not None:
            response.headers.update(verdict.headers())
        response.headers["cf-ray"] = new_cf_ray()
        entry["status"] = response.status_code
        return response

    return app


async def _read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            break
        chunks.append(chunk)
    return b"".join(chunks) if size <= MAX_REQUEST_BODY else b"\0" * (MAX_REQUEST_BODY + 1)


def _parse_body(raw_body: bytes) -> tuple[Any, bool]:
    if not raw_body.strip():
        return None, True
    try:
        return json.loads(raw_body), True
    except (ValueError, UnicodeDecodeError, RecursionError):  # nested too deeply for Python: a 400, not a 500
        return None, False


def _drop_unanswered(request: Request) -> None:
    """Close the connection before any byte of the answer is sent (the ``lost_answer`` fault)."""
    transport = request.scope.get(TRANSPORT_SCOPE_KEY)
    if transport is not None:
        transport.abort()  # uvicorn then writes nothing more to it
    raise EmulatedDisconnect("lost_answer fault: the request took effect; its answer is never sent")


async def _answer(
    state: EmulatorState,
    api: WorkflowsApi,
    request: Request,
    segments: list[str],
    query: Mapping[str, str],
    body: Any,
    body_ok: bool,
    raw_body: bytes,
    entry: dict[str, Any],
    auth_error: ApiError | None,
    wire: Wire,
) -> Response:
    if auth_error is not None:
        return error_response(auth_error, wire)
    if not is_api_path(segments):
        return error_response(ApiError(400, errors.NO_ROUTE), wire)
    if segments[3] != state.scenario.account_id:
        # Valid credentials, but not for this account: Cloudflare answers 403 Authentication error.
        return error_response(ApiError(403, errors.AUTH_FAILED), wire)
    fault = state.faults.take(request.method, entry["raw_path"])
    if fault is not None:
        entry["fault"] = fault.kind
        if fault.kind == "delay":
            await anyio.sleep(fault.seconds)
        elif fault.kind in NO_EFFECT_KINDS:
            return _no_effect_fault(fault, wire)
    if len(raw_body) > MAX_REQUEST_BODY:
        too_big = ApiError(413, errors.VALIDATION, "Request body too large")
        return json_fault_response(error_envelope(too_big), 413, fault, wire)
    if not body_ok and request.method in ("POST", "PUT", "PATCH"):
        return json_fault_response(error_envelope(ApiError(400, errors.MALFORMED_JSON)), 400, fault, wire)
    stream_wire = dataclasses.replace(wire, content_length=state.options.stream_content_length)
    try:
        with state.lock:
            reply = api.handle(request.method, segments[5:], query, body, raw_body)
        response = reply_response(reply, fault, stream_wire if reply.stream is not None else wire)
    except ApiError as error:
        response = json_fault_response(error_envelope(error), error.status, fault, wire)
    if fault is not None and fault.kind == "lost_answer":
        _drop_unanswered(request)  # the request took effect (or failed) on the emulated side
    return response


def _no_effect_fault(fault: Fault, wire: Wire) -> Response:
    """A fault answered instead of the API (the request never reaches it)."""
    if fault.kind == "rate_limit":
        response = error_response(ApiError(429, errors.RATE_LIMITED), wire)
        response.headers["Retry-After"] = fault.retry_after
        return response
    if fault.kind == "html":
        return html_error_page(fault.status)
    chain = tuple(errors.ErrorCode(link["code"], link["message"]) for link in fault.error_chain or ())
    return error_response(ApiError(fault.status, errors.INTERNAL, chain=chain), wire)
