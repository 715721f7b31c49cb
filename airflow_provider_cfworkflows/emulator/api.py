"""Handlers of the emulated endpoints under ``/client/v4/accounts/{account_id}/workflows``.

The endpoints of the reference's §2 rows 1, 2 and 5-13.

They take decoded path segments, the query and the parsed body, and return a :class:`Reply` (or
raise :class:`~.errors.ApiError`); the HTTP layer (``app``) adds auth, the envelope and faults.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import engine, errors, shapes
from .clock import iso
from .errors import ApiError
from .state import EmulatorState, WorkflowRecord

# Instance ids users may choose (reference §2, §3.6); cron-made ids are longer and looser.
INSTANCE_ID_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$")
RESERVED_INSTANCE_ID = re.compile(r"^cf_[0-9a-f]{64}$")
EVENT_TYPE_PATTERN = re.compile(r"^[a-zA-Z0-9_][a-zA-Z0-9_-]{0,99}$")
MAX_EVENT_PAYLOAD_BYTES = 1024 * 1024  # docs: event payloads are at most 1 MiB
MAX_BATCH = 100
MAX_STEP_NAME = 256
MAX_ATTEMPT = 2**53 - 1
LOCATION_HINTS = ("wnam", "weur", "enam", "eeur", "apac", "apac-ne", "apac-se", "oc", "sam", "afr", "me")
RESTART_FROM_TYPES = ("do", "sleep", "waitForEvent")
STATUS_ACTIONS = (engine.PAUSE, engine.RESUME, engine.TERMINATE, engine.RESTART)
# Query defaults (STACKQL / APIREF).
WORKFLOWS_PER_PAGE = 10
INSTANCES_PER_PAGE = 50
VERSIONS_PER_PAGE = 50


@dataclass
class Reply:
    """A successful answer, before faults: a JSON ``result`` (+ ``result_info``), or a byte stream."""

    result: Any = None
    result_info: dict[str, Any] | None = None
    stream: tuple[int, int] | None = None  # (size, seed) of an application/octet-stream body


def _bad_request(message: str, error: errors.ErrorCode = errors.VALIDATION) -> ApiError:
    return ApiError(400, error, message)


# --- query parameters --------------------------------------------------------------------------


def _int_param(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    raw = query.get(key)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise _bad_request(f"'{key}' must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise _bad_request(f"'{key}' must be from {low} to {high}, got {value}")
    return value


def _choice_param(
    query: Mapping[str, str], key: str, default: str | None, choices: tuple[str, ...]
) -> str | None:
    raw = query.get(key)
    if raw is None:
        return default
    if raw not in choices:
        raise _bad_request(f"'{key}' must be one of {', '.join(choices)}; got {raw!r}")
    return raw


def _date_param(query: Mapping[str, str], key: str) -> float | None:
    raw = query.get(key)
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise _bad_request(f"'{key}' must be an ISO 8601 date-time (UTC), got {raw!r}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def encode_cursor(seq: int) -> str:
    """An opaque cursor: the position after the instance with creation number ``seq``."""
    return base64.urlsafe_b64encode(json.dumps({"after": seq}).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    """The creation number a cursor continues after (400 when it is not one of ours)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        seq = data["after"]
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    except (ValueError, KeyError, TypeError, binascii.Error):
        pass
    raise _bad_request(f"'cursor' is not a valid pagination cursor: {cursor!r}")


# --- request bodies ----------------------------------------------------------------------------


@dataclass
class NewInstance:
    """A validated create-instance body."""

    id: str
    params: Any
    instance_retention: Any
    location_hint: str | None


def parse_new_instance(item: Any, where: str) -> NewInstance:
    """Validate a create body: ``instance_id?``, ``params?``, ``instance_retention?``, ``location_hint?``."""
    if item is None:
        item = {}
    if not isinstance(item, Mapping):
        raise _bad_request(f"{where} must be a JSON object")
    instance_id = item.get("instance_id")
    if instance_id is None:
        instance_id = engine.new_instance_id()
    elif (
        not isinstance(instance_id, str)
        or not INSTANCE_ID_PATTERN.match(instance_id)
        or RESERVED_INSTANCE_ID.match(instance_id)
    ):
        raise ApiError(400, errors.INVALID_INSTANCE_ID)
    params = item.get("params")
    if isinstance(params, str):
        # Newer SDKs send params as a JSON-encoded string, older ones (and wrangler) as an object: accept
        # both. Inferred: a string that is not JSON is kept as the string itself.
        with contextlib.suppress(ValueError):
            params = json.loads(params)
    retention = item.get("instance_retention")
    if retention is not None:
        if not isinstance(retention, Mapping) or set(retention) - {"error_retention", "success_retention"}:
            raise _bad_request(f"{where}.instance_retention must be {{error_retention?, success_retention?}}")
        for key, value in retention.items():
            if isinstance(value, bool) or not isinstance(value, int | float | str):
                raise _bad_request(
                    f"{where}.instance_retention.{key} must be milliseconds or a duration string"
                )
    hint = item.get("location_hint")
    if hint is not None and hint not in LOCATION_HINTS:
        raise _bad_request(f"{where}.location_hint must be one of {', '.join(LOCATION_HINTS)}; got {hint!r}")
    return NewInstance(instance_id, params, retention, hint)


# --- the API -----------------------------------------------------------------------------------


class WorkflowsApi:
    """The emulated Workflows endpoints (after auth and the account check)."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    # lookups

    def workflow(self, name: str) -> WorkflowRecord:
        record = self.state.workflows.get(name)
        if record is None:
            raise ApiError(404, errors.WORKFLOW_NOT_FOUND)
        return record

    def instance(self, workflow_name: str, instance_id: str) -> engine.Instance:
        self.workflow(workflow_name)
        instance = self.state.instances.get(workflow_name, {}).get(instance_id)
        if instance is None:
            raise ApiError(404, errors.INSTANCE_NOT_FOUND)
        return instance

    def add_instance(
        self,
        record: WorkflowRecord,
        new: NewInstance,
        now: float,
        *,
        trigger_source: str = "api",
        cron: str | None = None,
        scheduled_time: float | None = None,
    ) -> engine.Instance:
        """Store a new instance (the caller checked that its id is free)."""
        instance = engine.Instance(
            id=new.id,
            workflow=record.spec,
            created_at=now,
            seq=self.state.next_seq(),
            params=new.params,
            trigger_source=trigger_source,
            version_id=record.version_id,
            workflow_id=record.id,
            cron=cron,
            scheduled_time=scheduled_time,
            instance_retention=new.instance_retention,
            location_hint=new.location_hint,
        )
        self.state.instances.setdefault(record.name, {})[instance.id] = instance
        record.triggered_at = now
        return instance

    # routing

    def handle(
        self, method: str, segments: list[str], query: Mapping[str, str], body: Any, raw_body: bytes
    ) -> Reply:
        """Dispatch on ``(method, segments after .../workflows)``."""
        now = self.state.clock.now()
        match (method, segments):
            case ("GET", []):
                return self.list_workflows(query)
            case ("GET", [name]):
                return Reply(self.workflow_result(self.workflow(name), now))
            case ("GET", [name, "instances"]):
                return self.list_instances(name, query, now)
            case ("POST", [name, "instances"]):
                return Reply(self.create(name, body, now))
            case ("POST", [name, "instances", "batch"]):
                return Reply(self.batch(name, body, now))
            case ("GET", [name, "instances", instance_id]):
                return self.get_instance(self.instance(name, instance_id), query, now)
            case ("GET", [name, "instances", instance_id, "step"]):
                return self.step(self.instance(name, instance_id), query, now)
            case ("PATCH", [name, "instances", instance_id, "status"]):
                return Reply(self.change_status(self.instance(name, instance_id), body, now))
            case ("POST", [name, "instances", instance_id, "events", event_type]):
                return Reply(
                    self.send_event(self.instance(name, instance_id), event_type, body, raw_body, now)
                )
            case ("GET", [name, "versions"]):
                return self.list_versions(self.workflow(name), query)
            case ("GET", [name, "versions", version_id]):
                record = self.workflow(name)
                if version_id != record.version_id:
                    raise ApiError(404, errors.VERSION_NOT_FOUND)
                return Reply(shapes.version(record))
        if _known_path(segments):
            raise ApiError(405, errors.METHOD_NOT_ALLOWED, f"Method {method} not allowed for this endpoint")
        raise ApiError(404, errors.NO_ROUTE)

    # workflows and versions

    def workflow_result(self, record: WorkflowRecord, now: float) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for instance in self.state.instances.get(record.name, {}).values():
            status = engine.simulate(instance, now).status
            counts[status] = counts.get(status, 0) + 1
        return shapes.workflow(record, counts)

    def list_workflows(self, query: Mapping[str, str]) -> Reply:
        page = _int_param(query, "page", 1, 1, 10**9)
        per_page = _int_param(query, "per_page", WORKFLOWS_PER_PAGE, 1, 100)
        search = query.get("search", "")
        if len(search) > 64:
            raise _bad_request("'search' must be at most 64 characters")
        # Inferred: search is a case-insensitive substring match on the name.
        names = sorted(name for name in self.state.workflows if search.lower() in name.lower())
        chosen = names[(page - 1) * per_page : page * per_page]
        now = self.state.clock.now()
        info = {
            "page": page,
            "per_page": per_page,
            "count": len(chosen),
            "total_count": len(names),
            "total_pages": max(1, -(-len(names) // per_page)),
        }
        return Reply([self.workflow_result(self.state.workflows[name], now) for name in chosen], info)

    def list_versions(self, record: WorkflowRecord, query: Mapping[str, str]) -> Reply:
        page = _int_param(query, "page", 1, 1, 10**9)
        per_page = _int_param(query, "per_page", VERSIONS_PER_PAGE, 1, 100)
        chosen = [shapes.version(record)] if page == 1 else []
        info = {"page": page, "per_page": per_page, "count": len(chosen), "total_count": 1, "total_pages": 1}
        return Reply(chosen, info)

    # instances

    def list_instances(self, name: str, query: Mapping[str, str], now: float) -> Reply:
        self.workflow(name)
        per_page = _int_param(query, "per_page", INSTANCES_PER_PAGE, 1, 100)
        direction = _choice_param(query, "direction", "asc", ("asc", "desc"))
        status = _choice_param(query, "status", None, engine.ALL_STATUSES)
        date_start, date_end = _date_param(query, "date_start"), _date_param(query, "date_end")
        cursor = query.get("cursor") or None
        page = _int_param(query, "page", 1, 1, 10**9)  # deprecated; ignored when a cursor is given
        candidates: list[engine.Instance] = []
        for instance in sorted(self.state.instances.get(name, {}).values(), key=lambda i: i.seq):
            # Inferred: date_start / date_end filter on created_on (as shown, to the millisecond), inclusive.
            created = math.floor(instance.created_at * 1000) / 1000
            if (date_start is not None and created < date_start) or (
                date_end is not None and created > date_end
            ):
                continue
            candidates.append(instance)
        # Simulate only what is needed: every candidate with a status filter, else just the page.
        snapshots: dict[int, engine.Snapshot] = {}
        if status is not None:
            snapshots = {i.seq: engine.simulate(i, now) for i in candidates}
            candidates = [i for i in candidates if snapshots[i.seq].status == status]
        if direction == "desc":
            candidates.reverse()
        total = len(candidates)
        if cursor is not None:
            after = decode_cursor(cursor)
            candidates = [i for i in candidates if (i.seq > after if direction == "asc" else i.seq < after)]
        else:
            candidates = candidates[(page - 1) * per_page :]
        chosen = candidates[:per_page]
        info: dict[str, Any] = {"count": len(chosen), "per_page": per_page, "total_count": total}
        # The last page has an empty cursor (clients stop on a missing, null or empty one).
        info["cursor"] = encode_cursor(chosen[-1].seq) if len(candidates) > per_page else ""
        items = [
            shapes.instance_list_item(i, snapshots.get(i.seq) or engine.simulate(i, now)) for i in chosen
        ]
        return Reply(items, info)

    def create(self, name: str, body: Any, now: float) -> dict[str, Any]:
        record = self.workflow(name)
        new = parse_new_instance(body, "body")
        if new.id in self.state.instances.get(name, {}):
            raise ApiError(errors.STATUS_ALREADY_EXISTS, errors.INSTANCE_ALREADY_EXISTS)
        return shapes.instance_created(self.add_instance(record, new, now))

    def batch(self, name: str, body: Any, now: float) -> list[dict[str, Any]]:
        record = self.workflow(name)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
            raise _bad_request(f"the body must be a JSON array of 1 to {MAX_BATCH} instances")
        fresh = [parse_new_instance(item, f"body[{i}]") for i, item in enumerate(body)]
        ids = [new.id for new in fresh]
        if len(set(ids)) != len(ids):
            raise ApiError(400, errors.DUPLICATE_IN_BATCH)
        existing = self.state.instances.get(name, {})
        # Ids that already exist are skipped silently and are missing from the result (third-party
        # observation of the binding's createBatch).
        return [
            shapes.instance_created(self.add_instance(record, new, now))
            for new in fresh
            if new.id not in existing
        ]

    def get_instance(self, instance: engine.Instance, query: Mapping[str, str], now: float) -> Reply:
        simple = _choice_param(query, "simple", "false", ("true", "false")) == "true"
        order = _choice_param(query, "order", "asc", ("asc", "desc")) or "asc"
        snapshot = engine.simulate(instance, now)
        return Reply(shapes.instance_details(instance, snapshot, simple=simple, order=order))

    def step(self, instance: engine.Instance, query: Mapping[str, str], now: float) -> Reply:
        """``GET .../step?name=&type=&attempt=`` (reference §7)."""
        name, kind = query.get("name"), query.get("type")
        if not name:
            raise _bad_request("'name' is required: the step name as logged, with its counter suffix")
        if len(name) > MAX_STEP_NAME + 12:
            raise _bad_request(f"'name' is too long ({len(name)} characters)")
        if kind is None:
            raise _bad_request("'type' is required: step or waitForEvent")
        if kind not in ("step", "waitForEvent"):
            raise _bad_request(f"'type' must be 'step' or 'waitForEvent', got {kind!r}")
        attempt_number = None
        if "attempt" in query:
            if kind == "waitForEvent":
                raise _bad_request("'attempt' is not supported when type is 'waitForEvent'.")
            attempt_number = _int_param(query, "attempt", 1, 1, MAX_ATTEMPT)
        snapshot = engine.simulate(instance, now)
        step = next((s for s in snapshot.steps if s.logged_name == name and s.entry_type == kind), None)
        if step is None or (attempt_number is not None and attempt_number > len(step.attempts)):
            detail = "" if attempt_number is None else f" (attempt {attempt_number})"
            raise ApiError(
                404, errors.STEP_NOT_FOUND, f"Step '{name}'{detail} not found for instance '{instance.id}'"
            )
        if kind == "waitForEvent":
            status = {True: engine.COMPLETE, False: engine.ERRORED, None: engine.WAITING}[step.success]
            return Reply(
                {
                    "status": status,
                    "error": step.error if step.success is False else None,
                    "output": step.output if step.success else None,
                    "event_type": step.spec.event_type,
                }
            )
        if attempt_number is not None:
            attempt = step.attempts[attempt_number - 1]
            success, error = attempt.success, attempt.error
        else:
            success, error = step.success, step.error
        if success is None:
            # Still running. Without `attempt`, a non-null error = retrying after a failed attempt: while
            # waiting for the retry and during the next attempt (inferred for the latter).
            return Reply(
                {"status": engine.RUNNING, "error": error if attempt_number is None else None, "output": None}
            )
        if success is False:
            return Reply({"status": engine.ERRORED, "error": error, "output": None})
        if step.spec.sensitive:
            return Reply({"status": engine.COMPLETE, "error": None, "output": shapes.REDACTED})
        if step.spec.stream is not None:
            return Reply(stream=(step.spec.stream.size, step.spec.stream.seed))
        return Reply({"status": engine.COMPLETE, "error": None, "output": step.output})

    def change_status(self, instance: engine.Instance, body: Any, now: float) -> dict[str, Any]:
        """
        ``PATCH .../status``. Transitions (inferred where the docs are silent):

        * pause: queued / running / waiting -> paused; paused -> no change; complete / errored /
          terminated -> 409.
        * resume: paused -> running again; queued / running / waiting -> no change (docs);
          complete / errored / terminated -> 409 (docs: a terminated instance cannot be resumed).
        * terminate: any non-terminal status -> terminated; complete / errored / terminated -> 409.
        * restart: any status but queued -> starts again; queued -> 409 "Instance not in a restartable
          state." (spec); restarting ``from`` a step the current run has not completed the steps before
          -> 409; ``from`` naming no step of the workflow -> 400.
        """
        if not isinstance(body, Mapping) or body.get("status") not in STATUS_ACTIONS:
            raise _bad_request(f"body.status must be one of {', '.join(STATUS_ACTIONS)}")
        action = str(body["status"])
        rollback = body.get("rollback", False)
        if rollback is None:
            rollback = False
        if not isinstance(rollback, bool):
            raise _bad_request("body.rollback must be true or false")
        restart_from = body.get("from")
        if restart_from is not None and action != engine.RESTART:
            raise _bad_request("body.from is only allowed with status 'restart'")
        snapshot = engine.simulate(instance, now)
        current = snapshot.status
        if action == engine.RESTART:
            if current == engine.QUEUED:
                raise ApiError(409, errors.NOT_RESTARTABLE)
            kept = self._kept_steps(instance, snapshot, restart_from)
            instance.actions.append(
                engine.Action(engine.RESTART, now, kept_steps=kept, events_before=len(instance.events))
            )
        elif current in engine.TERMINAL:
            raise ApiError(
                errors.STATUS_INVALID_TRANSITION,
                errors.INVALID_TRANSITION,
                f"Instance is {current}; it cannot be asked to {action}.",
            )
        elif action == engine.TERMINATE:
            instance.actions.append(engine.Action(engine.TERMINATE, now, rollback=rollback))
        elif (action == engine.PAUSE) == (current != engine.PAUSED):
            # Pausing a paused instance, or resuming one that is not paused, changes nothing.
            instance.actions.append(engine.Action(action, now))
        return {"status": engine.simulate(instance, now).status, "timestamp": iso(now)}

    def _kept_steps(
        self, instance: engine.Instance, snapshot: engine.Snapshot, restart_from: Any
    ) -> tuple[engine.StepRun, ...]:
        if restart_from is None:
            return ()
        if not isinstance(restart_from, Mapping) or set(restart_from) - {"name", "count", "type"}:
            raise _bad_request("body.from must be {name, count?, type?}")
        name, count, kind = restart_from.get("name"), restart_from.get("count", 1), restart_from.get("type")
        if not isinstance(name, str) or not 1 <= len(name) <= MAX_STEP_NAME:
            raise _bad_request(
                "body.from.name must be the step's base name (1-256 characters, no counter suffix)"
            )
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise _bad_request("body.from.count must be a whole number >= 1")
        if kind is not None and kind not in RESTART_FROM_TYPES:
            raise _bad_request(f"body.from.type must be one of {', '.join(RESTART_FROM_TYPES)}")
        index = engine.find_step_index(instance.workflow, name, count, kind)
        if index is None:
            raise _bad_request(
                f"Step '{name}' (count {count}{f', type {kind}' if kind else ''}) not found in workflow "
                f"'{instance.workflow.name}'",
                errors.STEP_NOT_FOUND,
            )
        before = snapshot.steps[:index]
        if len(before) < index or any(step.success is not True for step in before):
            raise ApiError(
                409,
                errors.NOT_RESTARTABLE,
                f"Instance not in a restartable state: the steps before '{name}' have not all completed.",
            )
        return tuple(before)

    def send_event(
        self, instance: engine.Instance, event_type: str, body: Any, raw_body: bytes, now: float
    ) -> dict[str, Any]:
        if not EVENT_TYPE_PATTERN.match(event_type):
            raise ApiError(400, errors.INVALID_EVENT_TYPE)
        if len(raw_body) > MAX_EVENT_PAYLOAD_BYTES:
            raise ApiError(
                errors.STATUS_EVENT_TOO_LARGE,
                errors.EVENT_TOO_LARGE,
                f"Event payload is {len(raw_body)} bytes; the limit is {MAX_EVENT_PAYLOAD_BYTES} (1 MiB).",
            )
        # Accepted in any status (inferred); it only matters to a waitForEvent step still to come.
        instance.events.append(engine.Event(event_type, body, now))
        return {"instanceId": instance.id, "timestamp": iso(now)}


def _known_path(segments: list[str]) -> bool:
    """Whether the path is an endpoint of the emulated API (for 405 versus 404)."""
    n = len(segments)
    return (
        n <= 1
        or (n in (2, 3) and segments[1] in ("instances", "versions"))
        or (n == 4 and segments[1] == "instances" and segments[3] in ("step", "status"))
        or (n == 5 and segments[1] == "instances" and segments[3] == "events")
    )
