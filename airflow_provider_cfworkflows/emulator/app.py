"""The emulator's HTTP layer: raw-path routing, Cloudflare auth and envelope, faults, the request log.

Requests are routed on the raw (still percent-encoded) path, ``scope["raw_path"]``, split on ``/``
and decoded segment by segment: ids of cron-triggered instances contain ``/`` (sent as ``%2F``),
which a router working on the decoded path would take for a separator. FastAPI only provides one
catch-all route.

* ``/client/v4/accounts/{account_id}/workflows/...``: the emulated API (see ``api``). Every request
  is logged (never with credential values), then authenticated, then may get an injected fault.
* ``/__emulator/...``: the control API for tests (see ``control``); no auth, not logged.
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import Response
from starlette.types import Receive, Scope, Send

from . import control, errors
from .api import Reply, WorkflowsApi
from .clock import Clock
from .errors import ApiError
from .faults import Fault
from .scenario import Scenario
from .state import EmulatorState
from .streams import BLOCK_SIZE, iter_stream_bytes

API_PREFIX = ("client", "v4", "accounts")
CONTROL_PREFIX = "__emulator"
JSON_TYPE = "application/json"
OCTET_STREAM_TYPE = "application/octet-stream"
MAX_REQUEST_BODY = 16 * 1024 * 1024  # bigger bodies get 413 (no endpoint takes more than ~1 MiB)
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]  # all answered with the envelope

log = logging.getLogger(__name__)


class EmulatedDisconnect(ConnectionAbortedError):
    """Raised after part of a body was sent, to cut the connection on purpose (``drop_connection``)."""


def _is_emulated_disconnect(error: BaseException | None) -> bool:
    while error is not None:
        if isinstance(error, EmulatedDisconnect):
            return True
        if isinstance(error, BaseExceptionGroup):
            return any(_is_emulated_disconnect(inner) for inner in error.exceptions)
        error = error.__cause__ or error.__context__
    return False


class _QuietEmulatedDisconnects(logging.Filter):
    """Keeps uvicorn from logging a traceback for each connection the emulator drops on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and _is_emulated_disconnect(record.exc_info[1]))


logging.getLogger("uvicorn.error").addFilter(_QuietEmulatedDisconnects())


# --- responses ---------------------------------------------------------------------------------


def dump_json(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


def envelope(
    result: Any = None, *, errors_: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    """Cloudflare's response envelope."""
    body = {"success": not errors_, "errors": errors_ or [], "messages": [], "result": result}
    body.update({key: value for key, value in extra.items() if value is not None})
    return body


def json_response(content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(dump_json(content), status_code=status, media_type=JSON_TYPE, headers=dict(headers or {}))


def error_response(error: ApiError, headers: Mapping[str, str] | None = None) -> Response:
    return json_response(envelope(None, errors_=[error.as_error()]), error.status, headers)


class PartialResponse(Response):
    """The headers with the full ``Content-Length``, only ``after`` bytes of the body, a cut connection."""

    def __init__(self, body: bytes, after: int | None, status: int, media_type: str) -> None:
        super().__init__(b"", status_code=status, media_type=media_type)
        self.full_body = body
        self.after = len(body) // 2 if after is None else min(after, max(len(body) - 1, 0))
        self.headers["content-length"] = str(len(body))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        await send({"type": "http.response.body", "body": self.full_body[: self.after], "more_body": True})
        raise EmulatedDisconnect("drop_connection fault: connection closed on purpose")


class StreamOutputResponse(Response):
    """
    A ``ReadableStream`` step output: ``application/octet-stream``, ``Content-Length``, no envelope.

    Sent in 1 MiB blocks straight to the ASGI server (constant memory, no per-byte Python work);
    with ``drop_after``, the connection is cut after that many bytes.
    """

    def __init__(self, size: int, seed: int, drop_after: int | None = None) -> None:
        super().__init__(b"", media_type=OCTET_STREAM_TYPE)
        self.size, self.seed = size, seed
        self.drop_after = None if drop_after is None else min(drop_after, max(size - 1, 0))
        self.headers["content-length"] = str(size)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        sent = 0
        for chunk in iter_stream_bytes(self.size, self.seed, BLOCK_SIZE):
            if self.drop_after is not None and sent + len(chunk) > self.drop_after:
                await send(
                    {"type": "http.response.body", "body": chunk[: self.drop_after - sent], "more_body": True}
                )
                raise EmulatedDisconnect("drop_connection fault: connection closed on purpose")
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
        await send({"type": "http.response.body", "body": b"", "more_body": False})


def reply_response(reply: Reply, fault: Fault | None) -> Response:
    """The HTTP response for a handler's reply, with a body-level fault applied."""
    if reply.stream is not None:
        size, seed = reply.stream
        if fault is not None and fault.kind == "drop_connection":
            after = fault.after_bytes if fault.after_bytes is not None else size // 2
            return StreamOutputResponse(size, seed, drop_after=after)
        # Inferred: success_false / malformed_json only change JSON bodies; a stream is sent whole.
        return StreamOutputResponse(size, seed)
    return body_fault_response(envelope(reply.result, result_info=reply.result_info), 200, fault)


def body_fault_response(body: dict[str, Any], status: int, fault: Fault | None) -> Response:
    """A JSON envelope answer, possibly broken by a ``success_false``, ``malformed_json`` or drop fault."""
    if fault is None or fault.kind in ("rate_limit", "server_error", "delay"):
        return json_response(body, status)
    if fault.kind == "success_false":
        # As seen in production: HTTP 200, success false, internal_server error, the real result.
        if body["success"]:
            body = {**body, "success": False, "errors": [errors.ApiError(500, errors.INTERNAL).as_error()]}
        return json_response(body, 200)
    payload = dump_json(body)
    if fault.kind == "malformed_json":
        return Response(payload[: max(1, len(payload) // 2)], status_code=200, media_type=JSON_TYPE)
    return PartialResponse(payload, fault.after_bytes, status, JSON_TYPE)  # drop_connection


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


def authenticate(scenario: Scenario, headers: Mapping[str, str]) -> tuple[str, bool | None]:
    """``(scheme, valid)``: scheme ``bearer``, ``legacy`` or ``none``; valid None = credentials missing."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        valid = scheme.lower() == "bearer" and _same(token.strip(), scenario.api_token)
        return "bearer", valid
    email, key = headers.get("x-auth-email"), headers.get("x-auth-key")
    if email is None and key is None:
        return "none", None
    if email is None or key is None:
        return "legacy", None
    return "legacy", _same(email.strip(), scenario.email) and _same(key.strip(), scenario.api_key)


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def create_app(scenario: Scenario, *, clock: Clock | None = None) -> FastAPI:
    """The emulator as an ASGI app serving ``scenario`` (state in ``app.state.emulator``)."""
    state = EmulatorState.from_scenario(scenario, clock)
    api = WorkflowsApi(state)
    app = FastAPI(title="Cloudflare Workflows emulator", docs_url=None, redoc_url=None, openapi_url=None)
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
            "method": request.method,
            "raw_path": raw_path,
            "query": query_string,
            "auth": "none",
            "body": body if body_ok else None,
            "fault": None,
            "status": None,
        }
        state.request_log.append(entry)
        response = await _serve_api(state, api, request, segments, query, body, body_ok, raw_body, entry)
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
    except (ValueError, UnicodeDecodeError):
        return None, False


async def _serve_api(
    state: EmulatorState,
    api: WorkflowsApi,
    request: Request,
    segments: list[str],
    query: dict[str, str],
    body: Any,
    body_ok: bool,
    raw_body: bytes,
    entry: dict[str, Any],
) -> Response:
    scheme, valid = authenticate(state.scenario, request.headers)
    entry["auth"] = scheme
    if valid is None:
        return error_response(ApiError(401, errors.MISSING_AUTH))
    if not valid:
        return error_response(ApiError(403, errors.AUTH_FAILED))
    if tuple(segments[:3]) != API_PREFIX or len(segments) < 5 or segments[4] != "workflows":
        return error_response(ApiError(404, errors.NO_ROUTE))
    if segments[3] != state.scenario.account_id:
        # Valid credentials, but not for this account: Cloudflare answers 403 Authentication error.
        return error_response(ApiError(403, errors.AUTH_FAILED))
    fault = state.faults.take(request.method, entry["raw_path"])
    if fault is not None:
        entry["fault"] = fault.kind
        if fault.kind == "delay":
            await anyio.sleep(fault.seconds)
        elif fault.kind == "rate_limit":
            return error_response(ApiError(429, errors.RATE_LIMITED), {"Retry-After": fault.retry_after})
        elif fault.kind == "server_error":
            return error_response(ApiError(fault.status, errors.INTERNAL))
    if len(raw_body) > MAX_REQUEST_BODY:
        return body_fault_response(
            _error_body(ApiError(413, errors.VALIDATION, "Request body too large")), 413, fault
        )
    if not body_ok and request.method in ("POST", "PUT", "PATCH"):
        return body_fault_response(_error_body(ApiError(400, errors.MALFORMED_JSON)), 400, fault)
    try:
        with state.lock:
            reply = api.handle(request.method, segments[5:], query, body, raw_body)
    except ApiError as error:
        return body_fault_response(_error_body(error), error.status, fault)
    return reply_response(reply, fault)


def _error_body(error: ApiError) -> dict[str, Any]:
    return envelope(None, errors_=[error.as_error()])
