"""Every endpoint's ``result`` validates against the official ``cloudflare`` SDK (5.9.0) response models.

The SDK's models are lenient by default (``extra="allow"`` and pydantic's lax mode, which e.g. takes a
number as a datetime or ``"true"`` as a bool), so results are validated in **strict** mode from their
JSON text: a missing required field, a wrong JSON type, an unknown enum value or a non-ISO timestamp
fails. ``test_strict_validation_catches_what_lax_validation_lets_through`` proves that.

Named exception, where a model is narrower than the API reference (the reference wins):

* ``InstanceGetResponse.output`` is typed as a required ``str | float``. The reference (§4) and
  production return ``null`` until the instance completes and then whatever ``run()`` returned, any
  JSON value. The emulator follows the reference; :func:`instance_details` checks that separately and
  validates the rest of the result with ``output`` set to a string.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from cloudflare.types.workflows import (
    InstanceBulkResponse,
    InstanceCreateResponse,
    InstanceGetResponse,
    InstanceListResponse,
    InstanceStepResponse,
    VersionGetResponse,
    VersionGraphResponse,
    VersionListResponse,
    WorkflowGetResponse,
    WorkflowListResponse,
)
from cloudflare.types.workflows.instances import EventCreateResponse, StatusEditResponse
from pydantic import BaseModel, ValidationError

from tests.emulator._helpers import result

pytestmark = pytest.mark.integration

CRON_ID = "*/5 * * * *-1786599900000"
STATUSES_SEEN: set[str] = set()


def strict(model: type[BaseModel], data: Any) -> BaseModel:
    """Validate ``data`` as the JSON the API sent, in strict mode."""
    return model.model_validate_json(json.dumps(data), strict=True)


def instance_details(client: httpx.Client, path: str, **params: str) -> dict[str, Any]:
    """The details result, validated as InstanceGetResponse (with the one named exception)."""
    details = result(client.get(path, params=params))
    output = details["output"]
    if details["status"] == "complete":
        assert "output" in details  # any JSON value returned by run()
    else:
        assert output is None  # null until the instance completes
    if not isinstance(output, str | int | float) or isinstance(output, bool):
        details_for_model = {**details, "output": json.dumps(output)}
    else:
        details_for_model = details
    strict(InstanceGetResponse, details_for_model)
    STATUSES_SEEN.add(details["status"])
    return details


def test_strict_validation_catches_what_lax_validation_lets_through():
    """Guard: without strict mode, the tests below would prove much less."""
    good = {
        "id": "i",
        "created_on": "2026-08-01T10:00:00.000Z",
        "modified_on": "2026-08-01T10:00:00.000Z",
        "status": "queued",
        "version_id": "v",
        "workflow_id": "w",
    }
    strict(InstanceListResponse, good)
    number_as_datetime = {**good, "created_on": 1785578400}
    InstanceListResponse.model_validate(number_as_datetime)  # lax: accepted
    for bad in (
        number_as_datetime,
        {key: value for key, value in good.items() if key != "version_id"},
        {**good, "id": 5},
        {**good, "status": "done"},
        {**good, "created_on": "yesterday"},
    ):
        with pytest.raises(ValidationError):
            strict(InstanceListResponse, bad)
    step = {"status": "complete", "error": None, "output": 1}
    strict(InstanceStepResponse, step)
    with pytest.raises(ValidationError):
        strict(InstanceStepResponse, {**step, "event_type": 1})
    with pytest.raises(ValidationError):
        strict(InstanceStepResponse, {"error": None})
    with pytest.raises(ValidationError):
        strict(StatusEditResponse, {"status": "paused", "timestamp": 1785578400})
    with pytest.raises(ValidationError):
        strict(InstanceCreateResponse, {"id": "x", "status": "queued", "version_id": "v"})
    # The named exception really is one: the model rejects a null / object instance output.
    details = {
        "status": "running",
        "params": {},
        "trigger": {"source": "api"},
        "versionId": "v",
        "queued": "2026-08-01T10:00:00.000Z",
        "step_count": 0,
        "steps": [],
    }
    strict(InstanceGetResponse, {**details, "output": "x"})
    for output in (None, {"rows": 3}):
        with pytest.raises(ValidationError, match="output"):
            strict(InstanceGetResponse, {**details, "output": output})


def test_every_endpoint_matches_the_sdk_models(emu, client, make_workflow):
    name = make_workflow(
        [
            {"name": "prepare", "duration": 1, "output": {"rows": list(range(400))}},
            {
                "name": "flaky",
                "duration": 1,
                "fail_attempts": 1,
                "retries": {"limit": 2, "delay": 1, "backoff": "linear"},
                "output": [1, 2],
            },
            {"name": "secret", "duration": 1, "sensitive": True, "output": "s"},
            {"name": "blob", "duration": 1, "stream": {"size": 1000, "seed": 1}},
            {"name": "nap", "type": "sleep", "duration": 1},
            {"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 60},
        ],
        output={"done": True},
    )
    failing = make_workflow(
        [{"name": "boom", "duration": 1, "fail_attempts": 9, "retries": {"limit": 0, "delay": 0}}],
        queue_delay=5,
    )

    for item in result(client.get("", params={"per_page": 100})):
        strict(WorkflowListResponse, item)
    strict(WorkflowGetResponse, result(client.get(f"/{name}")))
    versions = result(client.get(f"/{name}/versions"))
    for item in versions:
        strict(VersionListResponse, item)
    strict(VersionGetResponse, result(client.get(f"/{name}/versions/{versions[0]['id']}")))
    graph = strict(VersionGraphResponse, result(client.get(f"/{name}/versions/{versions[0]['id']}/graph")))
    assert isinstance(graph, VersionGraphResponse)
    assert graph.graph is not None
    nodes = {node.name: node for node in graph.graph.workflow.nodes if hasattr(node, "name")}
    assert nodes["prepare"].type == "step_do"
    assert nodes["nap"].type == "step_sleep"
    wait = nodes["approval"]
    assert wait.type == "step_wait_for_event"
    assert wait.options is not None
    assert (wait.options.event_type, wait.options.timeout) == ("approval", 60_000)

    strict(InstanceCreateResponse, result(client.post(f"/{name}/instances", json={"instance_id": "one"})))
    strict(InstanceCreateResponse, result(client.post(f"/{name}/instances", json={"params": '{"a": 1}'})))
    for item in result(client.post(f"/{name}/instances/batch", json=[{"instance_id": "two"}, {}])):
        strict(InstanceBulkResponse, item)
    emu.create_cron_instance(name, CRON_ID)
    cron_path = f"/{name}/instances/{CRON_ID.replace('/', '%2F').replace(' ', '%20').replace('*', '%2A')}"
    assert "schedule" in instance_details(client, cron_path)
    for item in result(client.post(f"/{failing}/instances/batch", json=[{"instance_id": "f"}])):
        strict(InstanceBulkResponse, item)
    instance_details(client, f"/{failing}/instances/f")  # queued

    def step(step_name: str, kind: str = "step", **extra: object) -> dict[str, Any]:
        answer = result(
            client.get(f"/{name}/instances/one/step", params={"name": step_name, "type": kind, **extra})
        )
        strict(InstanceStepResponse, answer)
        return answer

    # Walk "one" through every step kind and state, validating the details and /step on the way.
    seen_step_states = set()
    for _ in range(12):
        details = instance_details(client, f"/{name}/instances/one")
        instance_details(client, f"/{name}/instances/one", simple="true")
        instance_details(client, f"/{name}/instances/one", order="desc")
        for entry in details["steps"]:
            if entry["type"] == "step" and entry["name"] != "blob-1":
                seen_step_states.add(step(entry["name"])["status"])
            elif entry["type"] == "waitForEvent":
                seen_step_states.add(step(entry["name"], "waitForEvent")["status"])
        emu.advance(0.75)
    assert details["status"] == "waiting"
    strict(EventCreateResponse, result(client.post(f"/{name}/instances/one/events/approval", json={"ok": 1})))
    done = instance_details(client, f"/{name}/instances/one")
    assert done["status"] == "complete"
    assert done["output"] == {"done": True}
    assert {entry["type"] for entry in done["steps"]} == {"step", "sleep", "waitForEvent"}
    for entry in done["steps"]:
        if entry["type"] == "step" and entry["name"] != "blob-1":
            seen_step_states.add(step(entry["name"])["status"])
    step("flaky-1", attempt=1)
    step("approval-1", "waitForEvent")
    assert seen_step_states == {"running", "complete", "waiting"}

    for item in result(client.get(f"/{name}/instances", params={"per_page": 2})):
        strict(InstanceListResponse, item)

    # Status changes: every action's result, and the instances they leave behind.
    for action in ("pause", "resume", "pause", "terminate", "restart"):
        strict(
            StatusEditResponse, result(client.patch(f"/{name}/instances/two/status", json={"status": action}))
        )
        instance_details(client, f"/{name}/instances/two")
    strict(
        StatusEditResponse,
        result(client.patch(f"/{name}/instances/two/status", json={"status": "terminate", "rollback": True})),
    )
    assert instance_details(client, f"/{name}/instances/two")["rollback"] is not None
    restart_from = {"status": "restart", "from": {"name": "prepare", "count": 1, "type": "do"}}
    strict(StatusEditResponse, result(client.patch(f"/{name}/instances/one/status", json=restart_from)))
    emu.advance(10)
    errored = instance_details(client, f"/{failing}/instances/f")
    assert errored["status"] == "errored"
    errored_step = result(
        client.get(f"/{failing}/instances/f/step", params={"name": "boom-1", "type": "step"})
    )
    strict(InstanceStepResponse, errored_step)
    assert errored_step["status"] == "errored"
    for item in result(client.get(f"/{name}/instances", params={"per_page": 100})):
        strict(InstanceListResponse, item)
    strict(WorkflowGetResponse, result(client.get(f"/{name}")))
    assert {"queued", "running", "waiting", "paused", "complete", "errored", "terminated"} <= STATUSES_SEEN
