"""Sensor unit tests: deferral, event validation, soft_fail, parameter checks (the wire is mocked)."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, AirflowSkipException, TaskDeferred

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.sensors import workflows as sensors
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)
from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger
from airflow_provider_cfworkflows.waiting import Check, Verdict
from tests.conftest import ACCOUNT_ID as ACCOUNT
from tests.conftest import MOCK_API_BASE as BASE


@pytest.fixture(autouse=True)
def connection(mocked_api_conn):
    return mocked_api_conn


@pytest.fixture
def context():
    return {"ti": mock.MagicMock()}


def step_sensor(**kwargs):
    return CloudflareWorkflowStepSensor(
        task_id="wait",
        workflow_name="wf",
        instance_id="i",
        step_name="load",
        poke_interval=1,
        timeout=60,
        **kwargs,
    )


def patched_check(*checks):
    return mock.patch.object(sensors, "check_step", side_effect=list(checks))


DONE = Check(Verdict.SUCCESS, "complete", "Step 'load-1' is complete.", step_name="load-1")
PENDING = Check(Verdict.PENDING, None, "not yet")
FAILED = Check(Verdict.FAILURE, "errored", "Step 'load-1' is errored.", step_name="load-1")


def test_deferrable_does_not_defer_when_already_done(context):
    sensor = step_sensor(deferrable=True)
    with patched_check(DONE), mock.patch.object(sensor, "defer") as defer:
        summary = sensor.execute(context)
    defer.assert_not_called()
    assert summary["step_name"] == "load-1"
    assert summary["status"] == "complete"


def test_deferrable_defers_with_an_absolute_deadline(context):
    sensor = step_sensor(deferrable=True)
    with patched_check(PENDING), pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CloudflareWorkflowStepTrigger)
    assert deferred.value.method_name == "execute_complete"
    _classpath, kwargs = trigger.serialize()
    assert kwargs["end_time"] > 1_000_000_000  # wall-clock seconds, not a relative timeout
    assert kwargs["step_name"] == "load"
    assert "unit-test-token-4c1d" not in json.dumps(kwargs)


def test_deferrable_first_poke_failure_respects_soft_fail(context):
    sensor = step_sensor(deferrable=True, soft_fail=True)
    with (
        patched_check(FAILED),
        mock.patch.object(sensors.CloudflareWorkflowsHook, "get_instance", return_value={}),
    ):
        with pytest.raises(AirflowSkipException):
            sensor.execute(context)


def test_poke_failure_is_an_airflow_fail_exception(context):
    sensor = step_sensor()
    with (
        patched_check(FAILED),
        mock.patch.object(sensors.CloudflareWorkflowsHook, "get_instance", return_value={}),
    ):
        with pytest.raises(CloudflareWorkflowStepFailedError, match="is errored"):
            sensor.poke(context)


@pytest.mark.parametrize(
    ("event", "error", "fragment"),
    [
        (None, AirflowException, "no usable event"),
        ({"status": "weird"}, AirflowException, "unknown status"),
        ({"status": "success"}, AirflowException, "lacks"),
        ({"status": "timeout", "message": "late"}, AirflowSensorTimeout, "timed out"),
        ({"status": "error", "message": "Cloudflare API error: 403"}, AirflowException, "403"),
    ],
)
def test_execute_complete_validates_the_event(context, event, error, fragment):
    with pytest.raises(error, match=fragment):
        step_sensor().execute_complete(context, event)


def test_execute_complete_success_and_failure(context):
    sensor = step_sensor()
    ok = {
        "status": "success",
        "step_name": "load-1",
        "remote_status": "complete",
        "error": None,
        "message": "done",
    }
    assert sensor.execute_complete(context, ok) == {
        "workflow_name": "wf",
        "instance_id": "i",
        "step_name": "load-1",
        "step_type": "step",
        "status": "complete",
        "error": None,
    }
    failed = {**ok, "status": "failure", "remote_status": "errored", "error": {"name": "E", "message": "m"}}
    with mock.patch.object(sensors.CloudflareWorkflowsHook, "get_instance", return_value={}):
        with pytest.raises(CloudflareWorkflowStepFailedError):
            sensor.execute_complete(context, failed)


def test_instance_sensor_execute_complete_reads_output_on_the_worker(context):
    sensor = CloudflareWorkflowInstanceSensor(task_id="w", workflow_name="wf", instance_id="i")
    event = {"status": "success", "remote_status": "complete", "error": None, "message": "ok"}
    with mock.patch.object(
        sensors.CloudflareWorkflowsHook, "get_instance", return_value={"output": {"rows": 1}}
    ):
        assert sensor.execute_complete(context, event)["output"] == {"rows": 1}
    with mock.patch.object(
        sensors.CloudflareWorkflowsHook, "get_instance", return_value={"output": "x" * 70_000}
    ):
        summary = sensor.execute_complete(context, event)
    assert (summary["output"], summary["output_omitted"]) == (None, True)
    with mock.patch.object(sensors.CloudflareWorkflowsHook, "get_instance", return_value={}):
        with pytest.raises(CloudflareWorkflowInstanceFailedError):
            sensor.execute_complete(context, {**event, "status": "failure", "remote_status": "errored"})


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"success_states": ("complete",), "failure_states": ("complete",)}, "overlap"),
        ({"success_states": "complete"}, "list or tuple"),
        ({"failure_states": ("broken",)}, "status must be one of"),
    ],
)
def test_bad_states_fail_at_construction(kwargs, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        step_sensor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"step_type": "sleep"}, "step_type must be one of"), ({"instance_id": ""}, "instance_id must be")],
)
def test_bad_templated_values_fail_before_any_call(context, kwargs, fragment, requests_mock):
    sensor = CloudflareWorkflowStepSensor(
        task_id="wait", **{"workflow_name": "wf", "instance_id": "i", "step_name": "load", **kwargs}
    )
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        sensor.execute(context)
    assert requests_mock.call_count == 0


def test_transient_errors_in_poke_mean_not_yet(context, requests_mock):
    requests_mock.get(
        f"{BASE}/accounts/{ACCOUNT}/workflows/wf/instances/i/step", status_code=503, json={"success": False}
    )
    sensor = CloudflareWorkflowStepSensor(
        task_id="wait", workflow_name="wf", instance_id="i", step_name="load"
    )
    with mock.patch("airflow_provider_cfworkflows.protocol.retry_delay", return_value=0):
        assert sensor.poke(context) is False
