"""The emulator's answers validate against the official `cloudflare` SDK (5.9.0) response models.

Pydantic validation enforces the models' required fields, types, enums and datetime formats. Where a
model is narrower than the API reference, the reference wins and the exception is named in the test.
"""

from __future__ import annotations

import uuid
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
    VersionListResponse,
    WorkflowGetResponse,
    WorkflowListResponse,
)
from cloudflare.types.workflows.instances import EventCreateResponse, StatusEditResponse
from pydantic import BaseModel, ValidationError

pytestmark = pytest.mark.integration


@pytest.fixture
def api(fresh_emulator):
    client = httpx.Client(
        base_url=f"{fresh_emulator.api_base}/accounts/{fresh_emulator.account_id}/workflows",
        headers={"Authorization": f"Bearer {fresh_emulator.api_token}"},
    )
    yield client
    client.close()


def result(response: httpx.Response) -> Any:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] is True
    assert body["errors"] == []
    assert body["messages"] == []
    return body["result"]


def validate(model: type[BaseModel], data: Any) -> BaseModel:
    return model.model_validate(data)


def test_models_really_enforce_required_fields():
    """Guard: if the SDK's models stopped validating, the tests below would prove nothing."""
    with pytest.raises(ValidationError):
        validate(InstanceCreateResponse, {"id": "x", "status": "queued"})
    with pytest.raises(ValidationError):
        validate(InstanceStepResponse, {"status": "finished"})


def test_every_endpoint_matches_the_sdk_models(fresh_emulator, api):
    name = f"sdk-{uuid.uuid4().hex[:6]}"
    fresh_emulator.put_workflow(
        {
            "name": name,
            "steps": [
                {"name": "prepare", "duration": 1, "output": {"rows": list(range(400))}},
                {"name": "flaky", "duration": 1, "fail_attempts": 1, "retries": {"limit": 2, "delay": 1}},
                {"name": "secret", "duration": 1, "sensitive": True, "output": "s"},
                {"name": "nap", "type": "sleep", "duration": 1},
                {"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 60},
            ],
            "output": {"done": True},
        }
    )

    for item in result(api.get("", params={"per_page": 100})):
        validate(WorkflowListResponse, item)
    validate(WorkflowGetResponse, result(api.get(f"/{name}")))
    versions = result(api.get(f"/{name}/versions"))
    for item in versions:
        validate(VersionListResponse, item)
    validate(VersionGetResponse, result(api.get(f"/{name}/versions/{versions[0]['id']}")))

    validate(InstanceCreateResponse, result(api.post(f"/{name}/instances", json={"instance_id": "one"})))
    for item in result(api.post(f"/{name}/instances/batch", json=[{"instance_id": "two"}, {}])):
        validate(InstanceBulkResponse, item)
    for item in result(api.get(f"/{name}/instances")):
        validate(InstanceListResponse, item)

    # Walk the instance through every step kind, checking the details on the way.
    for _ in range(6):
        details = result(api.get(f"/{name}/instances/one"))
        assert details["output"] is None  # see test_instance_output_follows_the_reference
        validate(InstanceGetResponse, {**details, "output": ""})
        fresh_emulator.advance(1.5)
    validate(EventCreateResponse, result(api.post(f"/{name}/instances/one/events/approval", json={"ok": 1})))
    fresh_emulator.advance(1)
    details = result(api.get(f"/{name}/instances/one"))
    assert details["status"] == "complete"
    assert {step["type"] for step in details["steps"]} == {"step", "sleep", "waitForEvent"}
    validate(InstanceGetResponse, {**details, "output": ""})

    for step_name, kind in [
        ("prepare-1", "step"),
        ("flaky-1", "step"),
        ("secret-1", "step"),
        ("approval-1", "waitForEvent"),
    ]:
        validate(
            InstanceStepResponse,
            result(api.get(f"/{name}/instances/one/step", params={"name": step_name, "type": kind})),
        )
    validate(
        InstanceStepResponse,
        result(
            api.get(f"/{name}/instances/one/step", params={"name": "flaky-1", "type": "step", "attempt": 1})
        ),
    )

    validate(
        StatusEditResponse, result(api.patch(f"/{name}/instances/two/status", json={"status": "terminate"}))
    )
    terminated = result(api.get(f"/{name}/instances/two"))
    assert terminated["steps"][-1] == {"type": "termination", "trigger": {"source": "api"}}
    validate(InstanceGetResponse, {**terminated, "output": ""})


def test_instance_output_follows_the_reference(fresh_emulator, api):
    """
    Named exception: `InstanceGetResponse.output` is typed as a required `str | float`, but the API
    reference (and production) returns null until the instance completes and then any JSON value
    returned by `run()`. The emulator follows the reference, so this model rejects it.
    """
    name = f"out-{uuid.uuid4().hex[:6]}"
    fresh_emulator.put_workflow(
        {"name": name, "steps": [{"name": "s", "duration": 1}], "output": {"rows": 3}}
    )
    result(api.post(f"/{name}/instances", json={"instance_id": "o"}))
    assert result(api.get(f"/{name}/instances/o"))["output"] is None
    fresh_emulator.advance(2)
    done = result(api.get(f"/{name}/instances/o"))
    assert done["output"] == {"rows": 3}
    with pytest.raises(ValidationError, match="output"):
        validate(InstanceGetResponse, done)
    validate(InstanceGetResponse, {**done, "output": ""})
