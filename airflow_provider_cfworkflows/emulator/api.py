"""Handlers of the emulated endpoints under ``/client/v4/accounts/{account_id}/workflows``.

The endpoints of Cloudflare's API reference (https://developers.cloudflare.com/api/resources/workflows/)
that the provider calls (workflows, versions and a version's graph, instances, status, events, ``/step``),
plus instance deletion as wrangler sends it:
``DELETE .../instances/{id}`` and ``POST .../instances/batch/delete`` with ``{"instances": [ids]}``
(at most 100). Any other method and path answers HTTP 400, 7000 "No route for that URI", as
Cloudflare does.

Ids: user instance ids must match ``^[a-zA-Z0-9_][a-zA-Z0-9-_]*$`` (whole string, 1-100 characters)
and must not be ``cf_`` + 64 hex or ``batch`` / ``terminate`` / ``terminateAll`` (API routes); an
instance id or event type in a path with a control character is refused with 400.

They take decoded path segments, the query and the parsed body, and return a :class:`Reply` (or
raise :class:`~.errors.ApiError`); the HTTP layer (``app``) adds auth, the envelope and faults.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from . import engine, errors, shapes
from .clock import iso
from .errors import ApiError
from .scenario import ID_PATTERN, ApiOptions, StreamSpec, is_number
from .state import EmulatorState, WorkflowRecord

# Instance ids users may choose (ID_PATTERN); cron-made ids are longer and looser.
RESERVED_INSTANCE_ID = re.compile(r"cf_[0-9a-f]{64}")
# Unverified (a newer Workers binding source only): ids that would collide with API routes.
RESERVED_ROUTE_IDS = frozenset({"batch", "terminate", "terminateAll"})
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
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
    stream: StreamSpec | None = None  # the bytes of an application/octet-stream body


@dataclass(frozen=True)
class Route:
    """Which endpoint a request is for, with its path parameters."""

    endpoint: str
    workflow: str | None = None
    instance_id: str | None = None
    extra: str | None = None  # the event type or the version id


def route(method: str, segments: list[str]) -> Route | None:
    """The endpoint of ``method`` and the path segments after ``.../workflows`` (None: no route)."""
    match (method, segments):
        case ("GET", []):
            return Route("list_workflows")
        case ("GET", [name]):
            return Route("get_workflow", name)
        case ("GET", [name, "instances"]):
            return Route("list_instances", name)
        case ("POST", [name, "instances"]):
            return Route("create", name)
        case ("POST", [name, "instances", "batch"]):
            return Route("batch_create", name)
        case ("POST", [name, "instances", "batch", "delete"]):
            return Route("batch_delete", name)
        case ("GET", [name, "instances", instance_id]):
            return Route("get_instance", name, instance_id)
        case ("DELETE", [name, "instances", instance_id]):
            return Route("delete_instance", name, instance_id)
        case ("GET", [name, "instances", instance_id, "step"]):
            return Route("step", name, instance_id)
        case ("PATCH", [name, "instances", instance_id, "status"]):
            return Route("change_status", name, instance_id)
        case ("POST", [name, "instances", instance_id, "events", event_type]):
            return Route("send_event", name, instance_id, event_type)
        case ("GET", [name, "versions"]):
            return Route("list_versions", name)
        case ("GET", [name, "versions", version_id]):
            return Route("get_version", name, extra=version_id)
        case ("GET", [name, "versions", version_id, "graph"]):
            return Route("get_version_graph", name, extra=version_id)
    return None


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


def encode_cursor(seq: int, total: int | None = None) -> str:
    """
    An opaque cursor: the position after the instance with creation number ``seq``, and the listing's
    ``total_count`` as its first page counted it (later pages repeat it: Cloudflare calls the count of a
    cursor listing deprecated and possibly inaccurate).
    """
    data = {"after": seq} if total is None else {"after": seq, "total": total}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int | None]:
    """The creation number a cursor continues after, and its total (400 when it is not one of ours)."""
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        seq, total = data["after"], data.get("total")
        if is_number(seq, int) and (total is None or type(total) is int):
            return seq, total
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error):
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


def parse_new_instance(item: Any, where: str, params_encoding: str = "lenient") -> NewInstance:
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
        or not ID_PATTERN.fullmatch(instance_id)
        or RESERVED_INSTANCE_ID.fullmatch(instance_id)
        or instance_id in RESERVED_ROUTE_IDS
    ):
        raise ApiError(400, errors.INVALID_INSTANCE_ID)
    params = _parse_params(item.get("params"), f"{where}.params", params_encoding)
    retention = item.get("instance_retention")
    if retention is not None:
        if not isinstance(retention, Mapping) or set(retention) - {"error_retention", "success_retention"}:
            raise _bad_request(f"{where}.instance_retention must be {{error_retention?, success_retention?}}")
        for key, value in retention.items():
            if not (is_number(value) or isinstance(value, str)):
                raise _bad_request(
                    f"{where}.instance_retention.{key} must be milliseconds or a duration string"
                )
    hint = item.get("location_hint")
    if hint is not None and hint not in LOCATION_HINTS:
        raise _bad_request(f"{where}.location_hint must be one of {', '.join(LOCATION_HINTS)}; got {hint!r}")
    return NewInstance(instance_id, params, retention, hint)


def _parse_params(params: Any, where: str, encoding: str) -> Any:
    """``params`` as the Workflow receives it, by the ``params_encoding`` option (see ``scenario``)."""
    # Wrangler sends an object, the SDKs a JSON-encoded string (``ParamsEncoding`` in protocol.py): which
    # one production wants is not known, so the emulator can accept both or insist on either.
    if encoding == "object":
        if isinstance(params, str):
            raise _bad_request(
                f"{where} must be a JSON value, not a JSON-encoded string (params_encoding=object)"
            )
        return params
    if encoding == "string":
        if params is None:
            return None
        if not isinstance(params, str):
            raise _bad_request(f"{where} must be a JSON-encoded string (params_encoding=string)")
        try:
            return json.loads(params)
        except ValueError:
            raise _bad_request(f"{where} is not valid JSON text (params_encoding=string)") from None
    if isinstance(params, str):
        # Inferred: in lenient mode a string that is not JSON is kept as the string itself.
        with contextlib.suppress(ValueError):
            params = json.loads(params)
    return params


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

    @property
    def options(self) -> ApiOptions:
        return self.state.options

    def handle(
        self, method: str, segments: list[str], query: Mapping[str, str], body: Any, raw_body: bytes
    ) -> Reply:
        """Answer a request for the path segments after ``.../workflows``."""
        now = self.state.clock.now()
        found = route(method, segments)
        if found is None:
            raise ApiError(400, errors.NO_ROUTE)
        name, instance_id, extra = found.workflow or "", found.instance_id or "", found.extra or ""
        if CONTROL_CHARACTERS.search(instance_id):
            raise ApiError(400, errors.INVALID_INSTANCE_ID)
        if found.endpoint == "send_event" and not ID_PATTERN.fullmatch(extra):
            raise ApiError(400, errors.INVALID_EVENT_TYPE)
        match found.endpoint:
            case "list_workflows":
                return self.list_workflows(query)
            case "get_workflow":
                return Reply(self.workflow_result(self.workflow(name), now))
            case "list_instances":
                return self.list_instances(name, query, now)
            case "create":
                return Reply(self.create(name, body, now))
            case "batch_create":
                return Reply(self.batch(name, body, now))
            case "batch_delete":
                return Reply(self.batch_delete(name, body))
            case "get_instance":
                return self.get_instance(self.instance(name, instance_id), query, now)
            case "delete_instance":
                self.instance(name, instance_id)
                del self.state.instances[name][instance_id]
                return Reply({"instanceId": instance_id, "timestamp": iso(now)})
            case "step":
                return self.step(self.instance(name, instance_id), query, now)
            case "change_status":
                return Reply(self.change_status(self.instance(name, instance_id), body, now))
            case "send_event":
                return Reply(self.send_event(self.instance(name, instance_id), extra, body, raw_body, now))
            case "list_versions":
                return self.list_versions(self.workflow(name), query)
        record = self.workflow(name)  # get_version, get_version_graph
        if extra != record.version_id:
            raise ApiError(404, errors.VERSION_NOT_FOUND)
        if found.endpoint == "get_version_graph":
            return Reply(shapes.version_graph(record))
        return Reply(shapes.version(record))

    # workflows and versions

    def workflow_result(self, record: WorkflowRecord, now: float) -> dict[str, Any]:
        instances = self.state.instances.get(record.name, {}).values()
        return shapes.workflow(record, dict(Counter(engine.simulate(i, now).status for i in instances)))

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
        options = self.options
        date_field = options.list_date_field
        if date_field == "ignored":
            date_start = date_end = None
        snapshots: dict[int, engine.Snapshot] = {}

        def state(instance: engine.Instance) -> engine.Snapshot:
            if instance.seq not in snapshots:
                # A lagging listing shows each instance as it was `list_lag` seconds ago (a younger one as
                # it was when created).
                seen_at = max(now - options.list_lag, instance.created_at)
                snapshots[instance.seq] = engine.simulate(instance, seen_at)
            return snapshots[instance.seq]

        def selected(instance: engine.Instance) -> bool:
            if options.list_omit_every and instance.seq % options.list_omit_every == 0:
                return False
            if date_start is not None or date_end is not None:
                # Inferred: date_start / date_end filter on created_on (as shown, to the millisecond),
                # inclusive; the `list_date_field` option models the other readings.
                moment = instance.created_at if date_field == "created_on" else state(instance).end
                if moment is None:
                    return False
                moment = math.floor(moment * 1000) / 1000
                if (date_start is not None and moment < date_start) or (
                    date_end is not None and moment > date_end
                ):
                    return False
            return status is None or state(instance).status == status

        ordered = sorted(self.state.instances.get(name, {}).values(), key=lambda i: i.seq)
        if direction == "desc":
            ordered.reverse()
        # The first page counts every match; a cursor's page simulates only as far as it reads (the
        # count comes with the cursor), so that paging through a large fleet costs one scan, not one
        # per page.
        total: int | None = None
        if cursor is not None:
            after, total = decode_cursor(cursor)
            rest = (i for i in ordered if (i.seq > after if direction == "asc" else i.seq < after))
            chosen = list(itertools.islice((i for i in rest if selected(i)), per_page + 1))
        else:
            matching = [i for i in ordered if selected(i)]
            total = len(matching)
            chosen = matching[(page - 1) * per_page : page * per_page + 1]
        if total is None:
            total = sum(1 for i in ordered if selected(i))
        more, chosen = len(chosen) > per_page, chosen[:per_page]
        info: dict[str, Any] = {"count": len(chosen), "per_page": per_page, "total_count": total}
        # The last page has an empty cursor (clients stop on a missing, null or empty one).
        info["cursor"] = encode_cursor(chosen[-1].seq, total) if more else ""
        items = [shapes.instance_list_item(i, state(i)) for i in chosen]
        return Reply(items, info)

    def create(self, name: str, body: Any, now: float) -> dict[str, Any]:
        record = self.workflow(name)
        new = parse_new_instance(body, "body", self.options.params_encoding)
        if new.id in self.state.instances.get(name, {}):
            raise ApiError(self.options.already_exists_status, errors.INSTANCE_ALREADY_EXISTS)
        return shapes.instance_created(self.add_instance(record, new, now))

    def batch(self, name: str, body: Any, now: float) -> list[dict[str, Any]]:
        record = self.workflow(name)
        if not isinstance(body, list) or not 1 <= len(body) <= MAX_BATCH:
            raise _bad_request(f"the body must be a JSON array of 1 to {MAX_BATCH} instances")
        encoding = self.options.params_encoding
        fresh = [parse_new_instance(item, f"body[{i}]", encoding) for i, item in enumerate(body)]
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

    def batch_delete(self, name: str, body: Any) -> dict[str, Any]:
        """``POST .../instances/batch/delete`` with ``{"instances": [ids]}``: any status may be deleted."""
        self.workflow(name)
        ids = body.get("instances") if isinstance(body, Mapping) else None
        if (
            not isinstance(ids, list)
            or not 1 <= len(ids) <= MAX_BATCH
            or not all(isinstance(instance_id, str) for instance_id in ids)
        ):
            raise _bad_request(f'the body must be {{"instances": [1 to {MAX_BATCH} instance ids]}}')
        existing = self.state.instances.get(name, {})
        deleted, failed = [], []
        for instance_id in ids:
            if existing.pop(instance_id, None) is None:
                missing = errors.INSTANCE_NOT_FOUND
                failed.append({"id": instance_id, "code": missing.code, "message": missing.message})
            else:
                deleted.append({"id": instance_id})
        return {"deleted": deleted, "errors": failed}

    def get_instance(self, instance: engine.Instance, query: Mapping[str, str], now: float) -> Reply:
        simple = _choice_param(query, "simple", "false", ("true", "false")) == "true"
        order = _choice_param(query, "order", "asc", ("asc", "desc")) or "asc"
        snapshot = engine.simulate(instance, now)
        return Reply(
            shapes.instance_details(
                instance, snapshot, simple=simple, order=order, output_encoding=self.options.output_encoding
            )
        )

    def step(self, instance: engine.Instance, query: Mapping[str, str], now: float) -> Reply:
        """``GET .../step?name=&type=&attempt=`` (the API reference's instance ``step`` method)."""
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
        run = step if attempt_number is None else step.attempts[attempt_number - 1]
        success, error = run.success, run.error
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
            return Reply(stream=step.spec.stream)
        return Reply({"status": engine.COMPLETE, "error": None, "output": step.output})

    def change_status(self, instance: engine.Instance, body: Any, now: float) -> dict[str, Any]:
        """
        ``PATCH .../status``. Transitions (inferred where the docs are silent):

        * pause: queued / running / waiting -> paused (through waitingForPause with a pause delay);
          paused / waitingForPause -> no change; complete / errored / terminated / rollingBack -> 409.
        * resume: paused -> running again; waitingForPause -> the pause is cancelled; queued / running /
          waiting -> no change (docs); complete / errored / terminated / rollingBack -> 409 (docs: a
          terminated instance cannot be resumed).
        * terminate: any other status -> terminated (through rollingBack with rollback and a rollback
          duration); complete / errored / terminated / rollingBack -> 409.
        * restart: any status but queued -> starts again; queued -> 409 "Instance not in a restartable
          state." (spec); restarting ``from`` a step the current run has not completed the steps before
          -> 409; ``from`` naming no step of the workflow -> 400.
        """
        if not isinstance(body, Mapping) or body.get("status") not in STATUS_ACTIONS:
            raise _bad_request(f"body.status must be one of {', '.join(STATUS_ACTIONS)}")
        action = str(body["status"])
        rollback = False if body.get("rollback") is None else body["rollback"]
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
        elif current in engine.TERMINAL or current == engine.ROLLING_BACK:
            raise ApiError(
                errors.STATUS_INVALID_TRANSITION,
                errors.INVALID_TRANSITION,
                f"Instance is {current}; it cannot be asked to {action}.",
            )
        elif action == engine.TERMINATE:
            delay = self.options.rollback_duration if rollback else 0.0
            instance.actions.append(engine.Action(engine.TERMINATE, now, rollback=rollback, delay=delay))
        elif (action == engine.PAUSE) == (current not in (engine.PAUSED, engine.WAITING_FOR_PAUSE)):
            # Pausing a paused (or pausing) instance, or resuming one that is not, changes nothing.
            instance.actions.append(engine.Action(action, now, delay=self.options.pause_delay))
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
        if not is_number(count, int) or count < 1:
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
        if len(raw_body) > MAX_EVENT_PAYLOAD_BYTES:
            raise ApiError(
                errors.STATUS_EVENT_TOO_LARGE,
                errors.EVENT_TOO_LARGE,
                f"Event payload is {len(raw_body)} bytes; the limit is {MAX_EVENT_PAYLOAD_BYTES} (1 MiB).",
            )
        status = engine.simulate(instance, now).status
        if status in engine.TERMINAL or status == engine.ROLLING_BACK:
            # Inferred: the binding "throws if the Workflow is not running or is in an errored state";
            # the REST status and code are not documented (errors.STATUS_EVENT_TO_FINISHED).
            raise ApiError(
                errors.STATUS_EVENT_TO_FINISHED,
                errors.INSTANCE_FINISHED,
                f"Instance is {status}; events can only be sent to an instance that has not finished.",
            )
        # Accepted in any other status; it only matters to a waitForEvent step still to come.
        instance.events.append(engine.Event(event_type, body, now))
        return {"instanceId": instance.id, "timestamp": iso(now)}
