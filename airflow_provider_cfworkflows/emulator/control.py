"""The test-only control API under ``/__emulator/`` (no auth; plain JSON, no Cloudflare envelope).

* ``POST /__emulator/reset``: drop instances, faults and the request log (workflows stay).
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
* ``GET / DELETE /__emulator/requests``: the request log of the emulated API / clear it.

Errors are ``{"error": "<message>"}`` with status 400 (bad input), 404 (unknown workflow, instance,
step or route) or 409 (instance id taken).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import anyio.to_thread

from . import engine
from .api import NewInstance, WorkflowsApi
from .clock import iso
from .errors import ApiError
from .faults import Fault
from .scenario import ScenarioError, parse_workflow
from .state import EmulatorState
from .streams import stream_digest

CRON_TRIGGER_SOURCE = "cron"
TRIGGER_SOURCES = ("unknown", "api", "binding", "event", "cron")
MAX_CONTROL_INSTANCE_ID = 271  # cron-generated ids can be this long (reference §2)


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
            return 200, _dispatch(state, method, segments, body)
    except ControlError as error:
        return error.status, {"error": error.message}
    except ApiError as error:
        return error.status, {"error": error.message}
    except (ScenarioError, ValueError, TypeError) as error:
        return 400, {"error": str(error)}


def _dispatch(state: EmulatorState, method: str, segments: list[str], body: Any) -> Any:
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
            return list(state.request_log)
        case ("DELETE", ["requests"]):
            state.request_log.clear()
            return []
    raise ControlError(404, f"no control route {method} /__emulator/{'/'.join(segments)}")


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
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
        # Cron ids look like "<cron expression>-<scheduled time in ms>" (reference §8.7).
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
    size, seed = spec.stream.size, spec.stream.seed
    # Hashing a big stream takes a while: do it off the event loop, chunk by chunk.
    sha256 = await anyio.to_thread.run_sync(stream_digest, size, seed)
    return {"size": size, "sha256": sha256}
