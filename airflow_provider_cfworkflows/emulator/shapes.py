"""The JSON shapes of the emulated API's results.

As https://developers.cloudflare.com/api/resources/workflows/ describes them; the ``cloudflare`` Python
SDK's models validate them (``tests/emulator/test_sdk_models.py``).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

from . import engine
from .clock import iso
from .scenario import StepSpec
from .state import WorkflowRecord
from .streams import stream_head

# Instance details show previews of step outputs: the first 1024 characters of the JSON-stringified
# value (strings as they are) plus this marker (github.com/cloudflare/workers-sdk/pull/14822, describing
# production).
PREVIEW_LIMIT = 1024
TRUNCATED_MARKER = "[truncated output]"
REDACTED = "[REDACTED]"
# A stream output's preview: its first 1024 characters (+ the marker) when it starts with UTF-8 text,
# else this (WSDK lib/streams.ts getStoredStreamOutputPreview reads 4 bytes per character, decodes
# strictly, and falls back to a binary description).
STREAM_PREVIEW = "[ReadableStream (binary): {size} bytes]"
STREAM_PREVIEW_BYTES = 4 * PREVIEW_LIMIT
# Shown as each do step's config.timeout (the production default per attempt).
STEP_TIMEOUT_CONFIG = "10 minutes"
# Inferred: with simple=true the `steps` array is sent empty (the SDK model requires the field).
SIMPLE_SENDS_EMPTY_STEPS = True
# Inferred: step_count counts the step entries, not the "termination" entry.
STEP_COUNT_INCLUDES_TERMINATION = False
# Inferred: which trigger source a termination entry names when the API terminated the instance.
TERMINATION_TRIGGER_SOURCE = "api"
# Inferred: a terminate with rollback=true reports this (the emulator has no rollback handlers).
ROLLBACK_RESULT = {"outcome": "complete", "error": None}


def _js_length(text: str) -> int:
    """``text.length`` in JavaScript (UTF-16 code units)."""
    return len(text) if text.isascii() else len(text.encode("utf-16-le")) // 2


def _js_slice(text: str, limit: int) -> str:
    """``text.slice(0, limit)`` in JavaScript (a cut surrogate pair is dropped)."""
    if text.isascii():
        return text[:limit]
    return text.encode("utf-16-le")[: 2 * limit].decode("utf-16-le", errors="ignore")


def json_stringify(value: Any) -> str:
    """``JSON.stringify(value)``: compact, non-ASCII kept as is."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def preview(value: Any) -> str | None:
    """The truncated preview of an output value, as instance details show it."""
    if value is None:
        return None  # inferred: a step that returned nothing shows null
    text = value if isinstance(value, str) else json_stringify(value)
    if len(text) <= PREVIEW_LIMIT // 2 or _js_length(text) <= PREVIEW_LIMIT:
        return text
    return _js_slice(text, PREVIEW_LIMIT) + TRUNCATED_MARKER


def _step_preview(step: engine.StepRun) -> str | None:
    if step.success is not True:
        return None
    if step.spec.sensitive:
        return REDACTED
    if step.spec.stream is not None:
        return stream_preview(step.spec.stream.size, step.spec.stream.seed, step.spec.stream.text)
    return preview(step.output)


def stream_preview(size: int, seed: int, text: bool) -> str:
    """What instance details show for a stream output (see :data:`STREAM_PREVIEW`)."""
    head = stream_head(size, seed, text, STREAM_PREVIEW_BYTES)
    cut_by_bytes = size > len(head)
    try:
        # A cut multi-byte sequence at the end is fine when more bytes follow ({stream: true} in JS).
        decoded = codecs.getincrementaldecoder("utf-8")().decode(head, final=not cut_by_bytes)
    except UnicodeDecodeError:
        return STREAM_PREVIEW.format(size=size)
    shown = _js_slice(decoded, PREVIEW_LIMIT)
    return shown + TRUNCATED_MARKER if cut_by_bytes or _js_length(decoded) > PREVIEW_LIMIT else shown


def _do_config(spec: StepSpec) -> dict[str, Any]:
    """A ``step.do``'s config: its retries (the delay in milliseconds, like production) and timeout."""
    retries = spec.retries
    retries_config = {
        "limit": retries.limit,
        "delay": round(retries.delay * 1000),
        "backoff": retries.backoff,
    }
    return {"retries": retries_config, "timeout": STEP_TIMEOUT_CONFIG}


def _error(error: Any) -> dict[str, str] | None:
    return None if error is None else {"name": str(error["name"]), "message": str(error["message"])}


def step_entry(step: engine.StepRun) -> dict[str, Any]:
    """One entry of the details' ``steps`` array."""
    spec = step.spec
    if spec.kind == "do":
        config = _do_config(spec)
        if spec.sensitive:
            config["sensitive"] = "output"
        return {
            "type": "step",
            "name": step.logged_name,
            "start": iso(step.start),
            "end": iso(step.end),
            "success": step.success,
            "output": _step_preview(step),
            "attempts": [
                {
                    "start": iso(attempt.start),
                    "end": iso(attempt.end),
                    "success": attempt.success,
                    "error": _error(attempt.error),
                }
                for attempt in step.attempts
            ],
            "config": config,
        }
    # sleep / waitForEvent: `end` is required; before the step ends it is the planned wake-up or
    # timeout moment (the start if paused for good).
    end = step.end
    if end is None:
        end = step.planned_end if step.planned_end not in (None, float("inf")) else step.start
    entry: dict[str, Any] = {
        "type": step.entry_type,
        "name": step.logged_name,
        "start": iso(step.start),
        "end": iso(end),
        "finished": step.finished,
        "error": _error(step.error),
    }
    if spec.kind == "waitForEvent":
        entry["event_type"] = spec.event_type
        if step.success is True:
            entry["output"] = _step_preview(step)
    return entry


def instance_output(value: Any, encoding: str) -> Any:
    """The instance ``output``: ``raw`` (the JSON value) or ``string`` (JSON-encoded; null stays null)."""
    # Inferred: the SDKs type it `string | number`; whether production encodes objects is unknown.
    if encoding == "string" and value is not None:
        return json_stringify(value)
    return value


def instance_details(
    instance: engine.Instance,
    snapshot: engine.Snapshot,
    *,
    simple: bool,
    order: str,
    output_encoding: str = "raw",
) -> dict[str, Any]:
    """``GET .../instances/{id}``: status, metadata and (unless ``simple``) the step log."""
    steps = [step_entry(step) for step in snapshot.steps]
    step_count = len(steps)
    if snapshot.status == engine.TERMINATED:
        steps.append({"type": "termination", "trigger": {"source": TERMINATION_TRIGGER_SOURCE}})
        step_count += int(STEP_COUNT_INCLUDES_TERMINATION)
    if order == "desc":
        steps.reverse()
    terminal = snapshot.status in engine.TERMINAL
    details: dict[str, Any] = {
        "status": snapshot.status,
        "params": instance.params,
        "trigger": {"source": instance.trigger_source},
        "versionId": instance.version_id,
        "queued": iso(snapshot.queued),
        "start": iso(snapshot.start),
        "end": iso(snapshot.end),
        "success": (snapshot.status == engine.COMPLETE) if terminal else None,
        "error": _error(snapshot.error),
        "output": instance_output(snapshot.output, output_encoding)
        if snapshot.status == engine.COMPLETE
        else None,
        "rollback": dict(ROLLBACK_RESULT) if snapshot.rollback else None,
        "step_count": step_count,
        "steps": [] if simple and SIMPLE_SENDS_EMPTY_STEPS else steps,
    }
    if simple and not SIMPLE_SENDS_EMPTY_STEPS:
        del details["steps"]
    if instance.cron is not None:
        scheduled = instance.scheduled_time if instance.scheduled_time is not None else instance.created_at
        details["schedule"] = {"cron": instance.cron, "scheduledTime": round(scheduled * 1000)}
    return details


def instance_list_item(instance: engine.Instance, snapshot: engine.Snapshot) -> dict[str, Any]:
    """One item of ``GET .../instances``."""
    return {
        "id": instance.id,
        "created_on": iso(instance.created_at),
        "modified_on": iso(max(snapshot.modified, instance.created_at)),
        "started_on": iso(snapshot.start),
        "ended_on": iso(snapshot.end),
        "status": snapshot.status,
        "version_id": instance.version_id,
        "workflow_id": instance.workflow_id,
        "trigger_source": instance.trigger_source,
    }


def instance_created(instance: engine.Instance) -> dict[str, Any]:
    """The result of creating an instance (single or batch)."""
    return {
        "id": instance.id,
        "status": engine.QUEUED,
        "version_id": instance.version_id,
        "workflow_id": instance.workflow_id,
        "trigger_source": instance.trigger_source,
    }


def workflow(record: WorkflowRecord, counts: dict[str, int]) -> dict[str, Any]:
    """A workflow, as listed and as fetched."""
    return {
        "id": record.id,
        "name": record.name,
        "class_name": record.spec.class_name,
        "script_name": record.spec.script_name,
        "created_on": iso(record.created_at),
        "modified_on": iso(record.modified_at),
        "triggered_on": iso(record.triggered_at),
        "instances": counts,
    }


def version(record: WorkflowRecord) -> dict[str, Any]:
    """The workflow's one version."""
    return {
        "id": record.version_id,
        "workflow_id": record.id,
        "class_name": record.spec.class_name,
        "created_on": iso(record.created_at),
        "modified_on": iso(record.modified_at),
        "has_dag": False,
        "language": "javascript",
    }


# Inferred: the format number of the graph; the API reference types it as a number without listing values.
GRAPH_FORMAT_VERSION = 1


def graph_node(step: Any) -> dict[str, Any]:
    """One step of the scenario as a node of the version graph (durations in milliseconds)."""
    if step.kind == "sleep":
        return {"type": "step_sleep", "name": step.name, "duration": round(step.duration * 1000)}
    if step.kind == "waitForEvent":
        options = {"event_type": step.event_type, "timeout": round(step.timeout * 1000)}
        return {"type": "step_wait_for_event", "name": step.name, "options": options}
    return {"type": "step_do", "name": step.name, "config": _do_config(step), "nodes": []}


def version_graph(record: WorkflowRecord) -> dict[str, Any]:
    """
    ``GET .../versions/{id}/graph``: the version and the graph of its steps. A scenario Workflow is a
    straight line of steps, so each is a node of ``graph.workflow.nodes`` (inferred: where production puts
    the top-level steps of ``run()``; the API reference types the nodes, not their nesting).
    """
    return {
        **{key: value for key, value in version(record).items() if key not in ("has_dag", "language")},
        "graph": {
            "version": GRAPH_FORMAT_VERSION,
            "workflow": {
                "class_name": record.spec.class_name,
                "functions": {},
                "nodes": [graph_node(step) for step in record.spec.steps],
            },
        },
    }
