"""The triggers: serialization round trip, one small event per outcome, transient errors retried."""

from __future__ import annotations

import asyncio
import json
import time
from unittest import mock

import pytest

from airflow_provider_cfworkflows import triggers
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)

COMMON = {
    "workflow_name": "wf",
    "instance_id": "*/5 * * * *-17",
    "success_states": ["complete"],
    "failure_states": ["errored"],
    "poll_interval": 0.01,
    "account_id": None,
    "cloudflare_conn_id": "cloudflare_default",
}


def step_trigger(**overrides):
    return CloudflareWorkflowStepTrigger(
        **{**COMMON, "end_time": time.time() + 30, "step_name": "load", "step_type": "step", **overrides}
    )


@pytest.fixture
def hook():
    """The hook the trigger builds, with its async calls mocked."""
    with mock.patch.object(triggers.workflows, "CloudflareWorkflowsHook", autospec=True) as hook_class:
        instance = hook_class.return_value
        instance.aclose = mock.AsyncMock()
        instance.aget_step_output = mock.AsyncMock()
        instance.aget_instance = mock.AsyncMock(return_value={"status": "running", "steps": []})
        yield instance


async def events(trigger):
    return [event.payload async for event in trigger.run()]


def test_step_trigger_serialization_round_trip():
    trigger = step_trigger(step_type="waitForEvent", success_states=["waiting"])
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_cfworkflows.triggers.workflows.CloudflareWorkflowStepTrigger"
    json.dumps(kwargs)  # plain JSON types only
    assert kwargs == {
        **COMMON,
        "end_time": trigger.end_time,
        "step_name": "load",
        "step_type": "waitForEvent",
        "success_states": ["waiting"],
    }
    rebuilt = CloudflareWorkflowStepTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_instance_trigger_serialization_round_trip():
    trigger = CloudflareWorkflowInstanceTrigger(
        **{**COMMON, "end_time": 123.0, "failure_states": ["errored", "terminated"]}
    )
    classpath, kwargs = trigger.serialize()
    assert classpath.endswith("CloudflareWorkflowInstanceTrigger")
    assert CloudflareWorkflowInstanceTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert set(kwargs) == {*COMMON, "end_time"}  # a connection id, never a credential


async def test_success_event(hook):
    hook.aget_step_output.side_effect = [
        StepOutput("running", None, None),
        StepOutput("complete", None, {"big": "x" * 5000}),
    ]
    (event,) = await events(step_trigger())
    assert event == {
        "status": "success",
        "workflow_name": "wf",
        "instance_id": "*/5 * * * *-17",
        "remote_status": "complete",
        "error": None,
        "message": "Step 'load-1' is complete.",
        "step_name": "load-1",
        "step_type": "step",
    }
    assert "x" * 100 not in json.dumps(event)  # never the output
    hook.aclose.assert_awaited_once()


async def test_failure_event(hook):
    hook.aget_step_output.return_value = StepOutput("errored", RemoteError("Error", "boom"), None)
    (event,) = await events(step_trigger())
    assert (event["status"], event["remote_status"], event["error"]) == (
        "failure",
        "errored",
        {"name": "Error", "message": "boom"},
    )


async def test_name_as_written_falls_back_and_missing_step_on_finished_instance_fails(hook):
    hook.aget_step_output.side_effect = CloudflareWorkflowsNotFoundError("nope", http_status=404)
    hook.aget_instance.return_value = {"status": "complete", "steps": [{"name": "other-1", "type": "step"}]}
    (event,) = await events(step_trigger(step_name="phase-2"))
    assert event["status"] == "failure"
    assert "'other-1' (step)" in event["message"]
    tried = [call.args[2] for call in hook.aget_step_output.await_args_list]
    assert tried == ["phase-2", "phase-2-1"]


async def test_timeout_event(hook):
    hook.aget_step_output.return_value = StepOutput("running", None, None)
    (event,) = await events(step_trigger(end_time=time.time() + 0.05))
    assert event["status"] == "timeout"


async def test_transient_errors_are_retried_inside_the_loop(hook):
    hook.aget_step_output.side_effect = [
        CloudflareWorkflowsRateLimitError("slow down", retry_after=1.0, http_status=429),
        CloudflareWorkflowsServerError("oops", http_status=503),
        StepOutput("complete", None, 1),
    ]
    (event,) = await events(step_trigger())
    assert event["status"] == "success"
    assert hook.aget_step_output.await_count == 3


async def test_non_transient_error_yields_one_error_event(hook):
    hook.aget_step_output.side_effect = CloudflareWorkflowsAuthError("Authentication error", http_status=403)
    (event,) = await events(step_trigger())
    assert event["status"] == "error"
    assert "Authentication error" in event["message"]


async def test_still_running_keeps_polling(hook):
    hook.aget_step_output.return_value = StepOutput("running", None, None)
    task = asyncio.create_task(step_trigger(poll_interval=0.01).run().__anext__())
    await asyncio.sleep(0.2)
    assert not task.done()
    assert hook.aget_step_output.await_count > 3
    task.cancel()


async def test_instance_trigger_events(hook):
    hook.aget_instance.side_effect = [
        {"status": "queued"},
        {"status": "running"},
        {"status": "complete", "output": [1]},
    ]
    trigger = CloudflareWorkflowInstanceTrigger(**{**COMMON, "end_time": time.time() + 30})
    (event,) = await events(trigger)
    assert (event["status"], event["remote_status"]) == ("success", "complete")
    assert "output" not in event

    hook.aget_instance.side_effect = None
    hook.aget_instance.return_value = {"status": "terminated", "error": None}
    failing = CloudflareWorkflowInstanceTrigger(
        **{**COMMON, "end_time": time.time() + 30, "failure_states": ["errored", "terminated"]}
    )
    (event,) = await events(failing)
    assert (event["status"], event["remote_status"]) == ("failure", "terminated")
