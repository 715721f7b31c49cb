"""The emulator's HTTP API: Cloudflare's Workflows REST paths, envelope and errors, plus a control API.

Requests are routed on the raw (still percent-encoded) path, split into segments that are decoded
one by one: instance ids of cron-triggered instances contain ``/``, which a router working on the
decoded path would take for a separator.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import re
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, unquote

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from . import engine
from .clock import Clock
from .faults import Fault, FaultBook
from .scenario import Scenario, ScenarioError, WorkflowSpec, parse_workflow
from .streams import iter_stream_bytes, stream_digest

API_PREFIX = ("client", "v4", "accounts")
CONTROL_PREFIX = "__emulator"
PREVIEW_LIMIT = 1024  # instance details show the first 1024 characters (workers-sdk PR #14822)
TRUNCATED = "[truncated output]"
REDACTED = "[REDACTED]"
MAX_EVENT_BYTES = 1024 * 1024
MAX_BATCH = 100
ID_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$")
RESERVED_ID = re.compile(r"^cf_[0-9a-f]{64}$")

# Error codes. 10001/10200/10400 are seen in production; the others are not documented by Cloudflare
# and are our choice (inferred), kept here so they are easy to change.
CODE_INTERNAL = (10001, "workflows.api.error.internal_server")
CODE_WORKFLOW_NOT_FOUND = (10200, "workflows.api.error.workflow.not_found")
CODE_INSTANCE_NOT_FOUND = (10400, "workflows.api.error.instance.not_found")
CODE_ALREADY_EXISTS = (10405, "workflows.api.error.instance.already_exists")  # third-party guess
CODE_DUPLICATE_IN_BATCH = (10415, "workflows.api.error.instance.duplicate_in_batch")  # third-party guess
CODE_STEP_NOT_FOUND = (10404, "workflows.api.error.instance.step_not_found")  # inferred
CODE_INVALID = (10021, "Input Validation Error")  # inferred code; message from the spec
CODE_INVALID_EVENT_TYPE = (10022, "workflow.invalid_event_type")  # inferred code; message from the docs
CODE_NOT_RESTARTABLE = (10409, "Instance not in a restartable state.")  # inferred code; message from the spec
CODE_BAD_STATE = (10410, "Instance is not in a state that allows this action.")  # inferred
CODE_MISSING_AUTH = (9106, "Missing X-Auth-Key, X-Auth-Email or Authorization headers")
CODE_AUTH = (10000, "Authentication error")
CODE_RATE_LIMIT = (971, "Please wait and consider throttling your request speed")  # inferred

log = logging.getLogger(__name__)


class EmulatedDisconnect(ConnectionAbortedError):
    """Raised inside a response body to cut the connection on purpose (the ``drop_connection`` fault)."""


class _QuietDisconnects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], EmulatedDisconnect))


logging.getLogger("uvicorn.error").addFilter(_QuietDisconnects())


def iso(moment: float | None) -> str | None:
    """Cloudflare's timestamp format (ISO 8601, milliseconds, ``Z``)."""
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(
    result: Any = None, *, errors: list[dict[str, Any]] | None = None, **extra: Any
) -> dict[str, Any]:
    return {"success": not errors, "errors": errors or [], "messages": [], "result": result, **extra}


class ApiError(Exception):
    """An error answer: HTTP status plus one ``{code, message}``."""

    def __init__(self, status: int, code: tuple[int, str], message: str | None = None) -> None:
        super().__init__(message or code[1])
        self.status = status
        self.error = {"code": code[0], "message": message or code[1]}


@dataclass
class Reply:
    """A successful answer before faults are applied: JSON result, or a byte stream."""

    result: Any = None
    result_info: dict[str, Any] | None = None
    stream: tuple[int, int] | None = None  # (size, seed)


@dataclass
class EmulatorState:
    """Everything the emulator knows; guarded by one lock."""

    scenario: Scenario
    clock: Clock
    workflows: dict[str, WorkflowSpec] = field(default_factory=dict)
    instances: dict[str, dict[str, engine.Instance]] = field(default_factory=dict)
    faults: FaultBook = field(default_factory=FaultBook)
    request_log: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    def reset(self) -> None:
        with self.lock:
            self.instances = {name: {} for name in self.workflows}
            self.faults.clear()
            self.request_log.clear()


def _uuid_for(kind: str, name: str) -> str:
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"cfworkflows-emulator:{kind}:{name}"))


# --- serializers -------------------------------------------------------------------------------


def _preview(step: engine.StepRun) -> Any:
    if step.success is not True:
        return None
    if step.spec.sensitive:
        return REDACTED
    if step.spec.stream is not None:
        return f"[ReadableStream (binary): {step.spec.stream.size} bytes]"
    value = step.output
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text[:PREVIEW_LIMIT] + TRUNCATED if len(text) > PREVIEW_LIMIT else text


def _step_entry(step: engine.StepRun) -> dict[str, Any]:
    spec = step.spec
    base = {"name": step.logged_name, "start": iso(step.start), "end": iso(step.end)}
    if spec.kind == "do":
        config: dict[str, Any] = {
            "retries": {
                "limit": spec.retries.limit,
                "delay": int(spec.retries.delay * 1000),
                "backoff": spec.retries.backoff,
            },
            "timeout": "10 minutes",
        }
        if spec.sensitive:
            config["sensitive"] = "output"
        return {
            "type": "step",
            **base,
            "success": step.success,
            "output": _preview(step),
            "attempts": [
                {"start": iso(a.start), "end": iso(a.end), "success": a.success, "error": a.error}
                for a in step.attempts
            ],
            "config": config,
        }
    planned_end = step.end if step.end is not None else step.planned_end
    base["end"] = iso(planned_end if planned_end is not None and planned_end != float("inf") else step.start)
    entry = {"type": step.entry_type, **base, "finished": step.success is not None, "error": step.error}
    if spec.kind == "waitForEvent":
        entry["event_type"] = spec.event_type
        entry["output"] = _preview(step)
    return entry


def _instance_details(
    instance: engine.Instance, snapshot: engine.Snapshot, *, simple: bool, order: str
) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [_step_entry(step) for step in snapshot.steps]
    if snapshot.status == engine.TERMINATED:
        steps.append({"type": "termination", "trigger": {"source": "api"}})
    if order == "desc":
        steps.reverse()
    details: dict[str, Any] = {
        "status": snapshot.status,
        "params": instance.params,
        "trigger": {"source": instance.trigger_source},
        "versionId": instance.version_id,
        "queued": iso(snapshot.queued),
        "start": iso(snapshot.start),
        "end": iso(snapshot.end),
        "success": None if snapshot.status not in engine.TERMINAL else snapshot.status == engine.COMPLETE,
        "error": snapshot.error,
        "output": snapshot.output,
        "rollback": None,
        "step_count": len(steps),
        "steps": [] if simple else steps,
    }
    if instance.trigger_source == "cron":
        details["schedule"] = {
            "cron": instance.id.rsplit("-", 1)[0],
            "scheduledTime": int(instance.created_at * 1000),
        }
    return details


def _list_item(instance: engine.Instance, snapshot: engine.Snapshot) -> dict[str, Any]:
    return {
        "id": instance.id,
        "created_on": iso(instance.created_at),
        "modified_on": iso(snapshot.end or snapshot.start or instance.created_at),
        "started_on": iso(snapshot.start),
        "ended_on": iso(snapshot.end),
        "status": snapshot.status,
        "version_id": instance.version_id,
        "workflow_id": _uuid_for("workflow", instance.workflow.name),
        "trigger_source": instance.trigger_source,
    }


# --- the emulated API --------------------------------------------------------------------------


class WorkflowsApi:
    """Handlers for ``/accounts/{account_id}/workflows/...`` (after auth and account checks)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def workflow(self, name: str) -> WorkflowSpec:
        spec = self.state.workflows.get(name)
        if spec is None:
            raise ApiError(404, CODE_WORKFLOW_NOT_FOUND, f"Workflow not found: {name}")
        return spec

    def instance(self, workflow: str, instance_id: str) -> engine.Instance:
        self.workflow(workflow)
        instance = self.state.instances.get(workflow, {}).get(instance_id)
        if instance is None:
            raise ApiError(404, CODE_INSTANCE_NOT_FOUND, f"Instance not found: {instance_id}")
        return instance

    def workflow_dict(self, spec: WorkflowSpec) -> dict[str, Any]:
        now = self.state.clock.now()
        counts: dict[str, int] = {}
        for instance in self.state.instances.get(spec.name, {}).values():
            status = engine.simulate(instance, now).status
            counts[status] = counts.get(status, 0) + 1
        created = iso(self.state.clock.now())
        return {
            "id": _uuid_for("workflow", spec.name),
            "name": spec.name,
            "class_name": spec.class_name,
            "script_name": spec.script_name,
            "created_on": created,
            "modified_on": created,
            "triggered_on": None,
            "instances": counts,
        }

    def handle(
        self, method: str, segments: list[str], query: Mapping[str, str], body: Any, raw_body: bytes
    ) -> Reply:
        now = self.state.clock.now()
        match (method, segments):
            case ("GET", []):
                return self.list_workflows(query)
            case ("GET", [name]):
                return Reply(self.workflow_dict(self.workflow(name)))
            case ("GET", [name, "instances"]):
                return self.list_instances(name, query, now)
            case ("POST", [name, "instances"]):
                return Reply(self.create(name, body, now))
            case ("POST", [name, "instances", "batch"]):
                return Reply(self.batch(name, body, now))
            case ("GET", [name, "instances", instance_id]):
                instance = self.instance(name, instance_id)
                simple = query.get("simple", "false") == "true"
                order = query.get("order", "asc")
                return Reply(
                    _instance_details(instance, engine.simulate(instance, now), simple=simple, order=order)
                )
            case ("GET", [name, "instances", instance_id, "step"]):
                return self.step(self.instance(name, instance_id), query, now)
            case ("PATCH", [name, "instances", instance_id, "status"]):
                return Reply(self.change_status(self.instance(name, instance_id), body, now))
            case ("POST", [name, "instances", instance_id, "events", event_type]):
                return Reply(
                    self.send_event(self.instance(name, instance_id), event_type, body, raw_body, now)
                )
            case ("GET", [name, "versions"]):
                return Reply(
                    [self.version(self.workflow(name))],
                    {"page": 1, "per_page": 50, "count": 1, "total_count": 1, "total_pages": 1},
                )
            case ("GET", [name, "versions", version_id]):
                version = self.version(self.workflow(name))
                if version["id"] != version_id:
                    raise ApiError(404, CODE_INVALID, "Version not found.")
                return Reply(version)
        raise ApiError(404, (7000, "No route for that URI"))

    def version(self, spec: WorkflowSpec) -> dict[str, Any]:
        created = iso(self.state.clock.now())
        return {
            "id": _uuid_for("version", spec.name),
            "workflow_id": _uuid_for("workflow", spec.name),
            "class_name": spec.class_name,
            "created_on": created,
            "modified_on": created,
            "has_dag": False,
            "language": "javascript",
        }

    def list_workflows(self, query: Mapping[str, str]) -> Reply:
        page, per_page = _int_param(query, "page", 1, 1, 10**6), _int_param(query, "per_page", 10, 1, 100)
        search = query.get("search", "")
        names = sorted(name for name in self.state.workflows if search in name)
        chosen = names[(page - 1) * per_page : page * per_page]
        total_pages = max(1, -(-len(names) // per_page))
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chosen),
            "total_count": len(names),
            "total_pages": total_pages,
        }
        return Reply([self.workflow_dict(self.state.workflows[name]) for name in chosen], info)

    def list_instances(self, name: str, query: Mapping[str, str], now: float) -> Reply:
        self.workflow(name)
        per_page = _int_param(query, "per_page", 50, 1, 100)
        direction = query.get("direction", "asc")
        if direction not in ("asc", "desc"):
            raise ApiError(400, CODE_INVALID, "direction must be asc or desc")
        status = query.get("status")
        if status is not None and status not in _ALL_STATUSES:
            raise ApiError(400, CODE_INVALID, f"status must be one of {sorted(_ALL_STATUSES)}")
        start, end = (_date_param(query, key) for key in ("date_start", "date_end"))
        rows = []
        for instance in self.state.instances.get(name, {}).values():
            snapshot = engine.simulate(instance, now)
            if status and snapshot.status != status:
                continue
            if (start is not None and instance.created_at < start) or (
                end is not None and instance.created_at > end
            ):
                continue
            rows.append(_list_item(instance, snapshot))
        if direction == "desc":
            rows.reverse()
        offset = _decode_cursor(query.get("cursor"))
        chosen = rows[offset : offset + per_page]
        next_offset = offset + per_page
        info: dict[str, Any] = {"count": len(chosen), "per_page": per_page, "total_count": len(rows)}
        info["cursor"] = (
            base64.urlsafe_b64encode(f"o:{next_offset}".encode()).decode() if next_offset < len(rows) else ""
        )
        return Reply(chosen, info)

    def _new(self, spec: WorkflowSpec, item: Any, now: float, where: str) -> engine.Instance:
        if not isinstance(item, Mapping):
            raise ApiError(400, CODE_INVALID, f"{where} must be a JSON object")
        instance_id = item.get("instance_id")
        if instance_id is None:
            instance_id = engine.new_instance_id()
        elif (
            not isinstance(instance_id, str)
            or not ID_PATTERN.match(instance_id)
            or RESERVED_ID.match(instance_id)
        ):
            raise ApiError(400, CODE_INVALID, "Provided Workflow ID is not valid.")
        params = item.get("params")
        if isinstance(params, str):  # the newest spec sends params as a JSON-encoded string
            with contextlib.suppress(ValueError):
                params = json.loads(params)
        return engine.Instance(
            id=instance_id,
            workflow=spec,
            created_at=now,
            params=params,
            version_id=_uuid_for("version", spec.name),
        )

    def _created(self, instance: engine.Instance) -> dict[str, Any]:
        return {
            "id": instance.id,
            "status": engine.QUEUED,
            "version_id": instance.version_id,
            "workflow_id": _uuid_for("workflow", instance.workflow.name),
            "trigger_source": instance.trigger_source,
        }

    def create(self, name: str, body: Any, now: float) -> dict[str, Any]:
        spec = self.workflow(name)
        instance = self._new(spec, body if body is not None else {}, now, "body")
        existing = self.state.instances.setdefault(name, {})
        if instance.id in existing:
            raise ApiError(409, CODE_ALREADY_EXISTS)
        existing[instance.id] = instance
        return self._created(instance)

    def batch(self, name: str, body: Any, now: float) -> list[dict[str, Any]]:
        spec = self.workflow(name)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
            raise ApiError(400, CODE_INVALID, f"body must be an array of 1 to {MAX_BATCH} instances")
        fresh = [self._new(spec, item, now, f"body[{i}]") for i, item in enumerate(body)]
        ids = [instance.id for instance in fresh]
        if len(set(ids)) != len(ids):
            raise ApiError(400, CODE_DUPLICATE_IN_BATCH)
        existing = self.state.instances.setdefault(name, {})
        created = []
        for instance in fresh:
            if instance.id not in existing:  # existing ids are skipped silently (binding behaviour)
                existing[instance.id] = instance
                created.append(self._created(instance))
        return created

    def step(self, instance: engine.Instance, query: Mapping[str, str], now: float) -> Reply:
        name, kind = query.get("name"), query.get("type")
        if not name:
            raise ApiError(400, CODE_INVALID, "'name' is required")
        if kind not in ("step", "waitForEvent"):
            raise ApiError(400, CODE_INVALID, "'type' must be 'step' or 'waitForEvent'")
        attempt_number = None
        if "attempt" in query:
            if kind == "waitForEvent":
                raise ApiError(400, CODE_INVALID, "'attempt' is not supported when type is 'waitForEvent'.")
            attempt_number = _int_param(query, "attempt", 1, 1, 2**53 - 1)
        snapshot = engine.simulate(instance, now)
        step = next((s for s in snapshot.steps if s.logged_name == name and s.entry_type == kind), None)
        if step is None or (attempt_number is not None and attempt_number > len(step.attempts)):
            raise ApiError(404, CODE_STEP_NOT_FOUND, f"Step '{name}' not found for instance '{instance.id}'")
        if kind == "waitForEvent":
            status = {True: engine.COMPLETE, False: engine.ERRORED, None: engine.WAITING}[step.success]
            return Reply(
                {
                    "status": status,
                    "error": step.error,
                    "output": step.output,
                    "event_type": step.spec.event_type,
                }
            )
        success, error = step.success, step.error
        if attempt_number is not None:
            attempt = step.attempts[attempt_number - 1]
            success, error = attempt.success, attempt.error
        if success is None:  # running; with an error while waiting to retry a failed attempt
            retrying = attempt_number is None and step.retrying
            return Reply({"status": engine.RUNNING, "error": error if retrying else None, "output": None})
        if success is False:
            return Reply({"status": engine.ERRORED, "error": error, "output": None})
        if step.spec.sensitive:
            return Reply({"status": engine.COMPLETE, "error": None, "output": REDACTED})
        if step.spec.stream is not None:
            return Reply(stream=(step.spec.stream.size, step.spec.stream.seed))
        return Reply({"status": engine.COMPLETE, "error": None, "output": step.output})

    def change_status(self, instance: engine.Instance, body: Any, now: float) -> dict[str, Any]:
        if not isinstance(body, Mapping) or body.get("status") not in (
            "pause",
            "resume",
            "terminate",
            "restart",
        ):
            raise ApiError(400, CODE_INVALID, "body.status must be one of pause, resume, terminate, restart")
        action = body["status"]
        current = engine.simulate(instance, now).status
        if action == "restart":
            if current == engine.QUEUED:
                raise ApiError(409, CODE_NOT_RESTARTABLE)
            restart_from = body.get("from")
            if restart_from is not None and not (
                isinstance(restart_from, Mapping) and isinstance(restart_from.get("name"), str)
            ):
                raise ApiError(400, CODE_INVALID, "from must be {name, count?, type?}")
            instance.actions.append(engine.Action("restart", now, restart_from))
        elif current in engine.TERMINAL:
            raise ApiError(409, CODE_BAD_STATE, f"Instance is {current}; it cannot be asked to {action}.")
        elif action == "terminate" or (action == "pause") == (current != engine.PAUSED):
            # Pausing a paused instance, or resuming a running one, changes nothing.
            instance.actions.append(engine.Action(action, now))
        return {"status": engine.simulate(instance, now).status, "timestamp": iso(now)}

    def send_event(
        self, instance: engine.Instance, event_type: str, body: Any, raw_body: bytes, now: float
    ) -> dict[str, Any]:
        if not ID_PATTERN.match(event_type):
            raise ApiError(400, CODE_INVALID_EVENT_TYPE)
        if len(raw_body) > MAX_EVENT_BYTES:
            raise ApiError(400, CODE_INVALID, f"Event payload is {len(raw_body)} bytes; the limit is 1 MiB.")
        instance.events.append(engine.Event(event_type, body, now))
        return {"instanceId": instance.id, "timestamp": iso(now)}


_ALL_STATUSES = frozenset(
    {
        "queued",
        "running",
        "paused",
        "errored",
        "terminated",
        "complete",
        "waitingForPause",
        "waiting",
        "rollingBack",
    }
)


def _int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, CODE_INVALID, f"{key} must be a whole number") from None
    if not low <= value <= high:
        raise ApiError(400, CODE_INVALID, f"{key} must be from {low} to {high}")
    return value


def _date_param(query: Mapping[str, str], key: str) -> float | None:
    raw = query.get(key)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, CODE_INVALID, f"{key} must be an ISO 8601 date-time") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _decode_cursor(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        kind, _, offset = base64.urlsafe_b64decode(cursor.encode()).decode().partition(":")
        if kind == "o":
            return max(0, int(offset))
    except (ValueError, UnicodeDecodeError):
        pass
    raise ApiError(400, CODE_INVALID, "invalid cursor")


# --- HTTP layer --------------------------------------------------------------------------------


def _auth(scenario: Scenario, headers: Mapping[str, str]) -> tuple[str, bool]:
    """``(scheme, valid)`` for the request's credentials."""
    authorization = headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        return "bearer", scheme.lower() == "bearer" and token == scenario.api_token
    email, key = headers.get("x-auth-email"), headers.get("x-auth-key")
    if email is not None or key is not None:
        return "legacy", email == scenario.email and key == scenario.api_key
    return "none", False


def _json_error(status: int, error: dict[str, Any], headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(envelope(None, errors=[error]), status_code=status, headers=dict(headers or {}))


def _stream_response(size: int, seed: int, drop_after: int | None) -> StreamingResponse:
    def body() -> Iterator[bytes]:
        sent = 0
        for chunk in iter_stream_bytes(size, seed):
            if drop_after is not None and sent + len(chunk) >= drop_after:
                yield chunk[: drop_after - sent]
                raise EmulatedDisconnect("drop_connection fault")
            sent += len(chunk)
            yield chunk

    return StreamingResponse(
        body(), media_type="application/octet-stream", headers={"Content-Length": str(size)}
    )


def _dropped_json(payload: bytes, after: int | None) -> StreamingResponse:
    cut = len(payload) // 2 if after is None else min(after, len(payload) - 1)

    async def body() -> AsyncIterator[bytes]:
        yield payload[:cut]
        raise EmulatedDisconnect("drop_connection fault")

    return StreamingResponse(
        body(), media_type="application/json", headers={"Content-Length": str(len(payload))}
    )


def _apply(reply: Reply, fault: Fault | None) -> Response:
    if reply.stream is not None:
        size, seed = reply.stream
        if fault is not None and fault.kind == "drop_connection":
            return _stream_response(
                size, seed, fault.after_bytes if fault.after_bytes is not None else size // 2
            )
        return _stream_response(size, seed, None)
    body = envelope(reply.result, result_info=reply.result_info)
    if fault is None:
        return JSONResponse(body)
    if fault.kind == "success_false":
        body["success"] = False
        body["errors"] = [{"code": CODE_INTERNAL[0], "message": CODE_INTERNAL[1]}]
        return JSONResponse(body)
    payload = json.dumps(body).encode()
    if fault.kind == "malformed_json":
        return Response(payload[: max(1, len(payload) // 2)], media_type="application/json")
    return _dropped_json(payload, fault.after_bytes)  # drop_connection


def create_app(scenario: Scenario, *, clock: Clock | None = None) -> FastAPI:
    """The emulator as an ASGI app serving ``scenario``."""
    state = EmulatorState(scenario=scenario, clock=clock or Clock(scenario.time_scale))
    state.workflows = {workflow.name: workflow for workflow in scenario.workflows}
    state.reset()
    api = WorkflowsApi(state)
    app = FastAPI(title="Cloudflare Workflows emulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.emulator = state

    @app.api_route("/{_path:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    async def dispatch(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1").split("?", 1)[0]
        segments = [unquote(part) for part in raw_path.strip("/").split("/")] if raw_path.strip("/") else []
        query = {
            key: values[-1] for key, values in parse_qs(request.url.query, keep_blank_values=True).items()
        }
        raw_body = await request.body()
        try:
            body = json.loads(raw_body) if raw_body else None
        except ValueError:
            body = None
            if segments[:1] != [CONTROL_PREFIX]:
                return _json_error(400, {"code": CODE_INVALID[0], "message": "Body is not valid JSON"})
        if segments[:1] == [CONTROL_PREFIX]:
            return control(state, request.method, segments[1:], query, body)
        return await _serve_api(state, api, request, raw_path, segments, query, body, raw_body)

    return app


async def _serve_api(
    state: EmulatorState,
    api: WorkflowsApi,
    request: Request,
    raw_path: str,
    segments: list[str],
    query: dict[str, str],
    body: Any,
    raw_body: bytes,
) -> Response:
    scheme, valid = _auth(state.scenario, request.headers)
    entry: dict[str, Any] = {
        "method": request.method,
        "raw_path": raw_path,
        "query": request.url.query,
        "auth": scheme,
        "body": body,
        "fault": None,
        "status": None,
    }
    with state.lock:
        state.request_log.append(entry)
    response = await _answer(
        state, api, request.method, raw_path, segments, query, body, raw_body, scheme, valid, entry
    )
    entry["status"] = response.status_code
    return response


async def _answer(
    state: EmulatorState,
    api: WorkflowsApi,
    method: str,
    raw_path: str,
    segments: list[str],
    query: dict[str, str],
    body: Any,
    raw_body: bytes,
    scheme: str,
    valid: bool,
    entry: dict[str, Any],
) -> Response:
    if scheme == "none":
        return _json_error(401, {"code": CODE_MISSING_AUTH[0], "message": CODE_MISSING_AUTH[1]})
    if not valid:
        return _json_error(403, {"code": CODE_AUTH[0], "message": CODE_AUTH[1]})
    if tuple(segments[:3]) != API_PREFIX or len(segments) < 5 or segments[4] != "workflows":
        return _json_error(404, {"code": 7000, "message": "No route for that URI"})
    if segments[3] != state.scenario.account_id:
        return _json_error(403, {"code": CODE_AUTH[0], "message": CODE_AUTH[1]})
    fault = state.faults.take(method, raw_path)
    if fault is not None:
        entry["fault"] = fault.kind
        if fault.kind == "delay":
            await anyio.sleep(fault.seconds)
        elif fault.kind == "rate_limit":
            return _json_error(
                429,
                {"code": CODE_RATE_LIMIT[0], "message": CODE_RATE_LIMIT[1]},
                {"Retry-After": fault.retry_after},
            )
        elif fault.kind == "server_error":
            return _json_error(fault.status, {"code": CODE_INTERNAL[0], "message": CODE_INTERNAL[1]})
    try:
        with state.lock:
            reply = api.handle(method, segments[5:], query, body, raw_body)
    except ApiError as error:
        return _json_error(error.status, error.error)
    return _apply(reply, fault if fault is not None and fault.kind != "delay" else None)


def control(
    state: EmulatorState, method: str, segments: list[str], query: Mapping[str, str], body: Any
) -> Response:
    """The test-only control API under ``/__emulator/`` (no auth)."""
    try:
        with state.lock:
            return JSONResponse(_control(state, method, segments, query, body))
    except (ScenarioError, ValueError, TypeError, KeyError) as error:
        return JSONResponse({"error": str(error)}, status_code=400)
    except ApiError as error:
        return JSONResponse({"error": error.error["message"]}, status_code=error.status)


def _control(
    state: EmulatorState, method: str, segments: list[str], query: Mapping[str, str], body: Any
) -> Any:
    match (method, segments):
        case ("POST", ["reset"]):
            state.reset()
            return {"reset": True}
        case ("PUT", ["workflows", name]):
            spec = parse_workflow({**(body or {}), "name": name}, f"workflow {name!r}")
            state.workflows[name] = spec
            state.instances.setdefault(name, {})
            return {"name": name, "steps": len(spec.steps)}
        case ("POST", ["workflows", name, "instances"]):
            api = WorkflowsApi(state)
            spec = api.workflow(name)
            instance = engine.Instance(
                id=str(body["id"]),
                workflow=spec,
                created_at=state.clock.now(),
                params=body.get("params"),
                trigger_source=str(body.get("trigger_source", "cron")),
                version_id=_uuid_for("version", name),
            )
            state.instances.setdefault(name, {})[instance.id] = instance
            return {"id": instance.id}
        case ("GET", ["workflows", name, "instances", instance_id, "stream-digest"]):
            instance = WorkflowsApi(state).instance(name, instance_id)
            step_name = query.get("step")
            step_spec = next(
                (
                    s
                    for s, n in zip(
                        instance.workflow.steps, engine.counted_names(instance.workflow), strict=True
                    )
                    if n == step_name
                ),
                None,
            )
            if step_spec is None or step_spec.stream is None:
                raise ApiError(404, CODE_STEP_NOT_FOUND, f"No stream step {step_name!r}")
            return {
                "size": step_spec.stream.size,
                "sha256": stream_digest(step_spec.stream.size, step_spec.stream.seed),
            }
        case ("GET", ["clock"]):
            return {"now": state.clock.now(), "time_scale": state.clock.time_scale}
        case ("POST", ["clock"]):
            if "time_scale" in (body or {}):
                state.clock.set_time_scale(float(body["time_scale"]))
            if "advance_seconds" in (body or {}):
                state.clock.advance(float(body["advance_seconds"]))
            return {"now": state.clock.now(), "time_scale": state.clock.time_scale}
        case ("POST", ["faults"]):
            fault = Fault(**(body or {}))
            state.faults.add(fault)
            return fault.as_dict()
        case ("GET", ["faults"]):
            return state.faults.pending()
        case ("DELETE", ["faults"]):
            state.faults.clear()
            return []
        case ("GET", ["requests"]):
            return list(state.request_log)
        case ("DELETE", ["requests"]):
            state.request_log.clear()
            return []
    raise ApiError(404, (7000, "no such control route"))
