"""The test-only control API under ``/__emulator/`` (no auth; plain JSON, no Cloudflare envelope).

* ``POST /__emulator/reset``: drop instances, faults and the request log, and restore the scenario's
  options and rate limit with fresh counters (workflows stay).
* ``PUT /__emulator/workflows/{name}``: add or replace a workflow (body: one workflow of the scenario
  schema; the name in the path wins).
* ``POST /__emulator/workflows/{name}/instances``: create an instance without id validation, as a
  cron trigger does: ``{id, params?, trigger_source? (default "cron"), cron?, scheduled_time?}``.
* ``GET /__emulator/workflows/{name}/instances/{id}/stream-digest?step=<logged name>``:
  ``{size, sha256}`` of a stream step's bytes, hashed chunk by chunk.
* ``GET /__emulator/clock``: ``{now, now_iso, time_scale}``; ``POST`` with ``{advance_seconds?,
  time_scale?}`` moves or re-speeds it and answers the same.
* ``GET / POST / DELETE /__emulator/faults``: list pending faults / inject one (see ``faults``) /
  clear them.
* ``GET / DELETE /__emulator/requests``: the request log of the emulated API / clear it. Each entry:
  ``{time (epoch seconds, real), method, raw_path, query, endpoint, auth, credential, body, fault,
  status}``; ``endpoint`` names the API endpoint (``create``, ``batch_create``, ``send_event``,
  ``get_instance``, ``step``, ...; null for no route), ``credential`` is the non-secret label of the
  credential (``token:<12 hex>`` / ``key:<12 hex>``, see ``auth``), ``status`` is null when no answer
  was sent (``lost_answer``). ``?since=<epoch seconds>`` keeps entries from that time on.
* ``GET /__emulator/requests/stats[?since=]``: counts over the log: ``{total, by_status, by_endpoint,
  by_credential, rate_limited, creates, events, first_time, last_time}`` (``creates`` counts instances
  asked for: a batch counts its items).
* ``GET / PATCH /__emulator/options``: the API options (``scenario.ApiOptions``) / change some of them
  (body: a subset of the scenario's ``api`` mapping; answers the new options).
* ``GET /__emulator/rate-limit``: ``{enabled, quota, window, headers, credentials: {label: {requests,
  limited, remaining?, reset_in?}}}``. ``PUT`` with ``{quota?, window?, headers?}`` turns the limit on
  (scenario defaults for what is left out), ``DELETE`` turns it off; both restart the counters.
  ``POST /__emulator/rate-limit/reset`` restarts every window and counter;
  ``POST /__emulator/rate-limit/consume`` with ``{count, credential?}`` uses ``count`` requests of a
  credential's quota, as a person in the dashboard would (default credential: the scenario's token).

Errors are ``{"error": "<message>"}`` with status 400 (bad input), 404 (unknown workflow, instance,
step or route) or 409 (instance id taken).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from . import engine
from .api import NewInstance, WorkflowsApi
from .auth import token_label
from .clock import iso
from .errors import ApiError
from .faults import Fault
from .scenario import ScenarioError, is_number, parse_api_options, parse_rate_limit, parse_workflow
from .state import EmulatorState
from .streams import stream_digest

CREATE_ENDPOINTS = ("create", "batch_create")
MAX_CONSUME = 10**9

CRON_TRIGGER_SOURCE = "cron"
TRIGGER_SOURCES = ("unknown", "api", "binding", "event", "cron")
MAX_CONTROL_INSTANCE_ID = 271  # cron-generated ids can be this long (the API reference's instance_id)


class ControlError(Exception):
    """A control-API error: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def handle(
    state: EmulatorState, method: str, segments: list[str], query: Mapping[str, str], body: Any
) -> tuple[int, Any]:
    """``(status, JSON body)`` for a control request; ``segments`` are those after ``__emulator``."""
    try:
        if (
            method == "GET"
            and len(segments) == 5
            and segments[0] == "workflows"
            and segments[4] == "stream-digest"
        ):
            return 200, await _stream_digest(state, segments[1], segments[3], query.get("step"))
        with state.lock:
            return 200, _dispatch(state, method, segments, query, body)
    except (ControlError, ApiError) as error:
        return error.status, {"error": error.message}
    except (ScenarioError, ValueError, TypeError) as error:
        return 400, {"error": str(error)}


def _dispatch(
    state: EmulatorState, method: str, segments: list[str], query: Mapping[str, str], body: Any
) -> Any:
    match (method, segments):
        case ("POST", ["reset"]):
            state.reset()
            return {"reset": True}
        case ("PUT", ["workflows", name]):
            if not isinstance(body, Mapping):
                raise ControlError(400, "the body must be one workflow (a JSON object, scenario schema)")
            spec = parse_workflow({**body, "name": name}, f"workflow {name!r}")
            record = state.put_workflow(spec)
            return {
                "name": record.name,
                "id": record.id,
                "version_id": record.version_id,
                "steps": len(spec.steps),
            }
        case ("POST", ["workflows", name, "instances"]):
            return _create_instance(state, name, body)
        case ("GET", ["clock"]):
            return _clock(state)
        case ("POST", ["clock"]):
            if (
                not isinstance(body, Mapping)
                or not set(body) <= {"advance_seconds", "time_scale"}
                or not body
            ):
                raise ControlError(400, "the body must be {advance_seconds?: number, time_scale?: number}")
            if "time_scale" in body:
                state.clock.set_time_scale(_number(body["time_scale"], "time_scale"))
            if "advance_seconds" in body:
                state.clock.advance(_number(body["advance_seconds"], "advance_seconds"))
            return _clock(state)
        case ("POST", ["faults"]):
            fault = Fault.from_dict(body)
            state.faults.add(fault)
            return fault.as_dict()
        case ("GET", ["faults"]):
            return state.faults.pending()
        case ("DELETE", ["faults"]):
            state.faults.clear()
            return []
        case ("GET", ["requests"]):
            return _logged_since(state, query)
        case ("GET", ["requests", "stats"]):
            return request_stats(_logged_since(state, query))
        case ("DELETE", ["requests"]):
            state.request_log.clear()
            return []
        case ("GET", ["options"]):
            return dataclasses.asdict(state.options)
        case ("PATCH", ["options"]):
            state.options = parse_api_options(body, "options", state.options)
            return dataclasses.asdict(state.options)
        case ("GET", ["rate-limit"]):
            return state.limiter.status()
        case ("PUT", ["rate-limit"]):
            state.limiter.configure(parse_rate_limit(body if body is not None else {}, "rate-limit"))
            return state.limiter.status()
        case ("DELETE", ["rate-limit"]):
            state.limiter.configure(None)
            return state.limiter.status()
        case ("POST", ["rate-limit", "reset"]):
            state.limiter.reset()
            return state.limiter.status()
        case ("POST", ["rate-limit", "consume"]):
            return _consume(state, body)
    raise ControlError(404, f"no control route {method} /__emulator/{'/'.join(segments)}")


def _consume(state: EmulatorState, body: Any) -> dict[str, Any]:
    if not isinstance(body, Mapping) or not set(body) <= {"count", "credential"}:
        raise ControlError(400, "the body must be {count: whole number >= 1, credential?: label}")
    count, label = body.get("count"), body.get("credential", token_label(state.scenario.api_token))
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_CONSUME:
        raise ControlError(400, f"count must be a whole number from 1 to {MAX_CONSUME}, got {count!r}")
    if not isinstance(label, str) or not label:
        raise ControlError(400, f"credential must be a credential label, got {label!r}")
    return state.limiter.consume(label, count)


def _logged_since(state: EmulatorState, query: Mapping[str, str]) -> list[dict[str, Any]]:
    since = query.get("since")
    if since is None:
        return list(state.request_log)
    try:
        start = float(since)
    except ValueError:
        raise ControlError(400, f"since must be epoch seconds, got {since!r}") from None
    return [entry for entry in state.request_log if entry["time"] >= start]


def request_stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts over request-log entries (see the module docstring)."""
    by_status: Counter[str] = Counter()
    by_endpoint: Counter[str] = Counter()
    by_credential: Counter[str] = Counter()
    creates = 0
    for entry in entries:
        by_status[str(entry["status"])] += 1
        by_endpoint[str(entry["endpoint"])] += 1
        by_credential[str(entry["credential"])] += 1
        if entry["endpoint"] in CREATE_ENDPOINTS and entry["status"] in (200, None):
            creates += len(entry["body"]) if isinstance(entry["body"], list) else 1
    return {
        "total": len(entries),
        "by_status": dict(by_status),
        "by_endpoint": dict(by_endpoint),
        "by_credential": dict(by_credential),
        "rate_limited": by_status.get("429", 0),
        "creates": creates,
        "events": sum(1 for e in entries if e["endpoint"] == "send_event" and e["status"] in (200, None)),
        "first_time": entries[0]["time"] if entries else None,
        "last_time": entries[-1]["time"] if entries else None,
    }


def _number(value: Any, name: str) -> float:
    if not is_number(value) or not math.isfinite(value):
        raise ControlError(400, f"{name} must be a finite number, got {value!r}")
    return float(value)


def _clock(state: EmulatorState) -> dict[str, Any]:
    now = state.clock.now()
    return {"now": now, "now_iso": iso(now), "time_scale": state.clock.time_scale}


def _create_instance(state: EmulatorState, name: str, body: Any) -> dict[str, Any]:
    allowed = {"id", "params", "trigger_source", "cron", "scheduled_time"}
    if not isinstance(body, Mapping) or not set(body) <= allowed:
        raise ControlError(400, f"the body must be a JSON object with fields among {sorted(allowed)}")
    instance_id = body.get("id")
    if not isinstance(instance_id, str) or not 1 <= len(instance_id) <= MAX_CONTROL_INSTANCE_ID:
        raise ControlError(400, f"id must be a string of 1 to {MAX_CONTROL_INSTANCE_ID} characters")
    source = body.get("trigger_source", CRON_TRIGGER_SOURCE)
    if source not in TRIGGER_SOURCES:
        raise ControlError(400, f"trigger_source must be one of {list(TRIGGER_SOURCES)}")
    cron = body.get("cron")
    if cron is None and source == CRON_TRIGGER_SOURCE:
        # Cron ids look like "<cron expression>-<scheduled time in ms>" (as the API reference describes them).
        cron = instance_id.rsplit("-", 1)[0] if "-" in instance_id else instance_id
    if cron is not None and not isinstance(cron, str):
        raise ControlError(400, "cron must be a string")
    scheduled = body.get("scheduled_time")
    if scheduled is not None:
        scheduled = _number(scheduled, "scheduled_time")
    api = WorkflowsApi(state)
    record = api.workflow(name)
    if instance_id in state.instances.get(name, {}):
        raise ControlError(409, f"instance {instance_id!r} already exists in workflow {name!r}")
    instance = api.add_instance(
        record,
        NewInstance(instance_id, body.get("params"), None, None),
        state.clock.now(),
        trigger_source=str(source),
        cron=cron,
        scheduled_time=scheduled,
    )
    return {"id": instance.id, "status": engine.QUEUED, "trigger_source": instance.trigger_source}


async def _stream_digest(
    state: EmulatorState, workflow: str, instance_id: str, step: str | None
) -> dict[str, Any]:
    with state.lock:
        instance = WorkflowsApi(state).instance(workflow, instance_id)
        names = engine.counted_names(instance.workflow)
        spec = next(
            (s for s, n in zip(instance.workflow.steps, names, strict=True) if n == step and s.kind == "do"),
            None,
        )
    if spec is None or spec.stream is None:
        raise ControlError(
            404, f"instance {instance_id!r} of workflow {workflow!r} has no stream step logged as {step!r}"
        )
    size, seed, text = spec.stream.size, spec.stream.seed, spec.stream.text
    # Hashing a big stream takes a while: do it off the event loop, chunk by chunk.
    sha256 = await anyio.to_thread.run_sync(stream_digest, size, seed, text)
    return {"size": size, "sha256": sha256}
