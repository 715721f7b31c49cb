"""The triggers: serialization round trip, one small event per outcome, transient errors retried in
the loop, non-transient ones reported, and the same decisions as the sensors' sync path."""

from __future__ import annotations

import asyncio
import json
import time
from unittest import mock

import httpx
import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsServerError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.statuses import InstanceStatus
from airflow_provider_cfworkflows.triggers import watchers
from airflow_provider_cfworkflows.triggers import workflows as triggers
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
    InstanceWaitEvent,
    StepWaitEvent,
)
from tests.fakes import INSTANCE, WORKFLOW, FakeApi, step_result
from tests.helpers import UNIT_TEST_TOKEN

COMMON = {
    "workflow_name": "wf",
    "instance_id": "*/5 * * * *-17",
    "success_states": ["complete"],
    "failure_states": ["errored"],
    "poll_interval": 0.01,
    "account_id": None,
    "cloudflare_conn_id": "cloudflare_default",
}
STEP_EVENT_KEYS = {
    "status",
    "workflow_name",
    "instance_id",
    "step_name",
    "step_type",
    "step_status",
    "error",
    "message",
}
INSTANCE_EVENT_KEYS = {"status", "workflow_name", "instance_id", "instance_status", "error", "message"}


@pytest.fixture(autouse=True)
def _connection(mocked_api_conn):
    return mocked_api_conn


@pytest.fixture(autouse=True)
def _no_waits(monkeypatch, no_retry_waits):
    monkeypatch.setattr(watchers, "MIN_ERROR_BACKOFF_SECONDS", 0.01)


def step_trigger(**overrides):
    return CloudflareWorkflowStepTrigger(
        **{**COMMON, "end_time": time.time() + 30, "step_name": "load", "step_type": "step", **overrides}
    )


def instance_trigger(**overrides):
    return CloudflareWorkflowInstanceTrigger(
        **{**COMMON, "end_time": time.time() + 30, "failure_states": ["errored", "terminated"], **overrides}
    )


def running(*entries, status="running"):
    """Full instance details listing ``entries``."""
    return {"status": status, "steps": list(entries)}


def load_step(success, *attempts):
    return {"type": "step", "name": "load-1", "success": success, "attempts": list(attempts)}


@pytest.fixture
def hook():
    """The hook the shared watcher builds, with its async calls mocked."""
    with mock.patch.object(watchers, "CloudflareWorkflowsHook", autospec=True) as hook_class:
        instance = hook_class.return_value
        instance.aclose = mock.AsyncMock()
        instance.aget_step_output = mock.AsyncMock()

        async def afind_step_status(*args, **kwargs):  # the real loop over names, on the mocked calls
            return await CloudflareWorkflowsHook.afind_step_status(instance, *args, **kwargs)

        instance.afind_step_status = afind_step_status
        instance.aget_instance = mock.AsyncMock(return_value={"status": "running", "steps": []})
        yield instance


async def events(trigger):
    return [event.payload async for event in trigger.run()]


async def until(condition, seconds=5.0):
    """Wait (yielding to the loop) until ``condition()`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


# --- serialization ---------------------------------------------------------------------------------


def public_attributes(trigger):
    return {name: value for name, value in vars(trigger).items() if not name.startswith("_")}


def test_step_trigger_serialization_round_trip():
    trigger = step_trigger(
        step_type="waitForEvent", success_states=[InstanceStatus.WAITING], end_time=1_900_000_000
    )
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_cfworkflows.triggers.workflows.CloudflareWorkflowStepTrigger"
    assert kwargs == {
        **COMMON,
        "end_time": 1_900_000_000.0,
        "step_name": "load",
        "step_type": "waitForEvent",
        "success_states": ["waiting"],
    }
    assert type(kwargs["success_states"][0]) is str  # plain JSON types only, no StrEnum
    assert json.loads(json.dumps(kwargs)) == kwargs
    rebuilt = CloudflareWorkflowStepTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert public_attributes(rebuilt) == public_attributes(trigger)


def test_instance_trigger_serialization_round_trip():
    trigger = instance_trigger(end_time=123.0, account_id="0123456789abcdef0123456789abcdef")
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_cfworkflows.triggers.workflows.CloudflareWorkflowInstanceTrigger"
    assert CloudflareWorkflowInstanceTrigger(**kwargs).serialize() == (classpath, kwargs)
    assert set(kwargs) == {*COMMON, "end_time", "terminate_on_kill"}  # a connection id, never a credential
    assert UNIT_TEST_TOKEN not in json.dumps(kwargs)


# --- events ----------------------------------------------------------------------------------------


async def test_success_event_is_small_and_exact(hook):
    hook.aget_instance.side_effect = [
        running(load_step(None)),
        running(load_step(True, {"success": True, "error": None})),
    ]
    assert await events(step_trigger()) == [
        {
            "status": "success",
            "workflow_name": "wf",
            "instance_id": "*/5 * * * *-17",
            "step_name": "load-1",
            "step_type": "step",
            "step_status": "complete",
            "error": None,
            "message": "Step 'load-1' of instance '*/5 * * * *-17' of workflow 'wf' is complete.",
        }
    ]
    assert [call.kwargs["simple"] for call in hook.aget_instance.await_args_list] == [False, False]
    hook.aget_step_output.assert_not_awaited()  # the details answered every look
    assert watchers.watchers() == {}
    await until(lambda: hook.aclose.await_count == 1)  # the stopped watcher closes its hook


async def test_failure_event(hook):
    failed = {"success": False, "error": {"name": "Error", "message": "boom"}}
    hook.aget_instance.return_value = running(load_step(False, failed), status="errored")
    (event,) = await events(step_trigger())
    assert set(event) == STEP_EVENT_KEYS
    assert (event["status"], event["step_status"], event["error"]) == (
        "failure",
        "errored",
        {"name": "Error", "message": "boom"},
    )


async def test_an_entry_the_details_cannot_read_is_asked_of_step(hook):
    hook.aget_instance.return_value = running(load_step(False, {"success": False, "error": None}))
    hook.aget_step_output.return_value = StepOutput("errored", RemoteError("Error", "boom"), None)
    (event,) = await events(step_trigger())
    assert (event["status"], event["error"]) == ("failure", {"name": "Error", "message": "boom"})
    assert [call.args[2] for call in hook.aget_step_output.await_args_list] == ["load-1"]


async def test_code_name_falls_back_and_missing_step_on_finished_instance_fails(hook):
    hook.aget_instance.return_value = {"status": "complete", "steps": [{"name": "other-1", "type": "step"}]}
    (event,) = await events(step_trigger(step_name="phase-2"))
    assert (event["status"], event["step_name"], event["step_status"]) == ("failure", "phase-2", None)
    assert "Step 'phase-2' of instance '*/5 * * * *-17' of workflow 'wf' never ran" in event["message"]
    assert "'other-1' (step)" in event["message"]
    assert hook.aget_instance.await_count == 1  # one snapshot decides "never ran"
    hook.aget_step_output.assert_not_awaited()


async def test_timeout_event_says_what_was_last_seen(hook):
    hook.aget_instance.return_value = running(load_step(None))
    (event,) = await events(step_trigger(end_time=time.time() + 0.05))
    assert set(event) == STEP_EVENT_KEYS
    assert (event["status"], event["step_status"]) == ("timeout", "running")
    assert (
        "last seen: Step 'load-1' of instance '*/5 * * * *-17' of workflow 'wf' is running; still waiting."
        in event["message"]
    )
    assert watchers.watchers() == {}


async def test_a_server_that_never_answers_still_ends_by_the_deadline(hook):
    never = asyncio.Event()

    async def hang(*args, **kwargs):
        await never.wait()

    hook.aget_instance.side_effect = hang
    started = time.monotonic()
    (event,) = await events(step_trigger(end_time=time.time() + 0.1))
    assert event["status"] == "timeout"
    assert time.monotonic() - started < 2
    assert watchers.watchers() == {}


async def test_transient_errors_are_retried_by_the_watcher(hook):
    hook.aget_instance.side_effect = [
        CloudflareWorkflowsRateLimitError("slow down", retry_after=0.01, http_status=429),
        CloudflareWorkflowsServerError("oops", http_status=503),
        CloudflareWorkflowsConnectionError("dropped"),
        running(load_step(True)),
    ]
    assert [event["status"] for event in await events(step_trigger())] == ["success"]
    assert hook.aget_instance.await_count == 4


async def test_a_transient_error_of_the_triggers_own_call_means_look_again(hook):
    hook.aget_instance.return_value = running(load_step("?"))
    hook.aget_step_output.side_effect = [
        CloudflareWorkflowsServerError("oops", http_status=503),
        StepOutput("complete", None, None),
    ]
    assert [event["status"] for event in await events(step_trigger())] == ["success"]
    assert hook.aget_instance.await_count == 2


async def test_transient_errors_until_the_deadline_are_a_timeout_not_an_error(hook):
    hook.aget_instance.side_effect = CloudflareWorkflowsServerError("oops", http_status=503)
    (event,) = await events(step_trigger(end_time=time.time() + 0.1))
    assert event["status"] == "timeout"
    assert "no usable answer from Cloudflare" in event["message"]


@pytest.mark.parametrize("failures", [1, 2, 3, 20])
def test_error_backoff_doubles_is_capped_jittered_and_honours_retry_after(monkeypatch, failures):
    monkeypatch.setattr(watchers, "MIN_ERROR_BACKOFF_SECONDS", 1.0)
    server = CloudflareWorkflowsServerError("x")
    plain = watchers.error_delay(failures, server, 2, jitter=0)
    assert plain == min(2 * 2 ** (failures - 1), watchers.MAX_ERROR_BACKOFF_SECONDS)
    assert watchers.error_delay(failures, server, 2, jitter=0.999) == pytest.approx(plain * 0.75, rel=1e-3)
    limited = CloudflareWorkflowsRateLimitError("x", retry_after=100)
    assert watchers.error_delay(failures, limited, 2, jitter=0) == max(plain, 100)
    jittered = watchers.error_delay(failures, limited, 2, jitter=0.5)
    assert jittered >= 100  # jitter never shortens a Retry-After


async def test_non_transient_error_yields_one_error_event(hook):
    hook.aget_instance.side_effect = CloudflareWorkflowsAuthError("Authentication error", http_status=403)
    assert [(e["status"], "Authentication error" in e["message"]) for e in await events(step_trigger())] == [
        ("error", True)
    ]
    await until(lambda: hook.aclose.await_count == 1)


async def test_an_answer_nested_too_deeply_is_an_error_event_on_the_wire(monkeypatch):
    """The real hook and transport (no mocks above the wire): the trigger reports it and ends."""
    deep = b'{"success":true,"errors":[],"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    answers: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        answers.append(request)
        return httpx.Response(200, content=deep)

    monkeypatch.setattr(CloudflareWorkflowsHook, "async_transport", httpx.MockTransport(answer))

    (event,) = await events(step_trigger())

    assert event["status"] == "error"
    assert "too deeply" in event["message"]
    assert len(answers) == 1  # not retried: the same answer would come again


async def test_missing_connection_is_an_error_event():
    (event,) = await events(step_trigger(cloudflare_conn_id="no_such_connection"))
    assert event["status"] == "error"
    assert "no_such_connection" in event["message"]


async def test_still_running_keeps_polling_without_an_event(hook):
    hook.aget_instance.return_value = running(load_step(None))
    task = asyncio.create_task(step_trigger().run().__anext__())
    await until(lambda: hook.aget_instance.await_count > 3)
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert watchers.watchers() == {}


async def test_instance_trigger_events(hook):
    hook.aget_instance.side_effect = [
        {"status": "queued"},
        {"status": "rollingBack"},
        {"status": "complete", "output": [1] * 1000},
    ]
    (event,) = await events(instance_trigger())
    assert event == {
        "status": "success",
        "workflow_name": "wf",
        "instance_id": "*/5 * * * *-17",
        "instance_status": "complete",
        "error": None,
        "message": "The instance is complete.",
    }
    assert all(call.kwargs["simple"] for call in hook.aget_instance.await_args_list)

    hook.aget_instance.side_effect = None
    hook.aget_instance.return_value = {"status": "terminated", "error": None}
    (event,) = await events(instance_trigger())
    assert set(event) == INSTANCE_EVENT_KEYS
    assert (event["status"], event["instance_status"]) == ("failure", "terminated")


async def test_unknown_instance_is_an_error_event_that_says_what_was_looked_for(hook):
    hook.aget_instance.side_effect = CloudflareWorkflowsNotFoundError("Not found", http_status=404)
    (event,) = await events(instance_trigger())
    assert event["status"] == "error"
    assert "Instance '*/5 * * * *-17' of workflow 'wf' was not found" in event["message"]


# --- on the wire, and the same outcome as the sync path --------------------------------------------


def scenario_complete(api):
    api.steps[("load-1", "step")] = step_result("complete", output=["x"] * 100)


def scenario_errored(api):
    api.steps[("load-1", "step")] = step_result("errored", error=("Error", "upstream 503"))
    api.instance["steps"] = [
        {"name": "load-1", "type": "step", "attempts": [{"success": False, "error": None}]}
    ]


def scenario_never_ran(api):
    api.instance.update(status="errored", steps=[{"name": "prepare-1", "type": "step"}])


def scenario_terminated_while_waiting(api):
    api.steps[("load-1", "waitForEvent")] = step_result("waiting")
    api.instance["status"] = "terminated"


def scenario_code_name(api):
    api.steps[("phase-2-1", "step")] = step_result("complete")


@pytest.mark.parametrize(
    ("scenario", "step_name", "step_type"),
    [
        (scenario_complete, "load", "step"),
        (scenario_errored, "load", "step"),
        (scenario_never_ran, "load", "step"),
        (scenario_terminated_while_waiting, "load", "waitForEvent"),
        (scenario_code_name, "phase-2", "step"),
    ],
)
async def test_trigger_and_poke_decide_alike(requests_mock, scenario, step_name, step_type):
    """Sync poke vs trigger + execute_complete on the same API answers: same summary or same error."""
    sync_api, async_api = FakeApi().install(requests_mock), FakeApi()
    scenario(sync_api)
    scenario(async_api)
    sensor = CloudflareWorkflowStepSensor(
        task_id="s", workflow_name=WORKFLOW, instance_id=INSTANCE, step_name=step_name, step_type=step_type
    )
    context = {"ti": mock.MagicMock()}

    def outcome(run):
        try:
            return ("done", run())
        except CloudflareWorkflowStepFailedError as error:
            return ("failed", str(error))

    poked = outcome(lambda: sensor.poke(context).xcom_value)
    with async_api.async_hook():
        (event,) = await events(
            CloudflareWorkflowStepTrigger(
                **{**COMMON, "workflow_name": WORKFLOW, "instance_id": INSTANCE, "end_time": time.time() + 5},
                step_name=step_name,
                step_type=step_type,
            )
        )
    resumed = outcome(lambda: sensor.execute_complete(context, event))
    assert poked == resumed
    assert async_api.calls  # the trigger went over the (mocked) wire
    assert async_api.calls == sync_api.calls[: len(async_api.calls)]  # the same calls, in order


# --- the event contract ------------------------------------------------------------------------------


def test_events_keep_their_dict_shape_and_validate_in_one_place():
    event = StepWaitEvent(
        status=triggers.EVENT_FAILURE,
        workflow_name="wf",
        instance_id="i",
        error={"name": "Error", "message": "boom"},
        message="Step 's-1' is errored: Error: boom.",
        step_name="s-1",
        step_type="step",
        step_status="errored",
    )
    as_dict = event.to_dict()
    assert set(as_dict) == STEP_EVENT_KEYS
    assert StepWaitEvent.from_trigger(as_dict) == event
    assert not event.is_success
    # A step event is not an instance event: the instance fields are missing.
    with pytest.raises(AirflowException, match=r"lacks \['instance_status'\]"):
        InstanceWaitEvent.from_trigger(as_dict)
    instance_event = InstanceWaitEvent.from_trigger(
        {**as_dict, "status": triggers.EVENT_SUCCESS, "instance_status": "complete"}
    )
    assert instance_event.is_success
    assert set(instance_event.to_dict()) == INSTANCE_EVENT_KEYS
