"""Sensor unit tests against a fake of the API on the wire: every status, both name forms, failures
with their logs, soft_fail, branching, parameter checks, deferral and event validation."""

from __future__ import annotations

import json
import re
import time
from unittest import mock

import pytest
from airflow.sdk import PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferred,
)

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowStepFailedError,
)
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)
from airflow_provider_cfworkflows.statuses import InstanceStatus
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)
from tests.fakes import INSTANCE, WORKFLOW, FakeApi, step_result
from tests.helpers import UNIT_TEST_TOKEN

ALL_STATUSES = [status.value for status in InstanceStatus]
FAILED_ATTEMPTS = [
    {"success": False, "error": {"name": "Error", "message": "upstream 503"}},
    {"success": False, "error": {"name": "Error", "message": "upstream 502"}},
]


pytestmark = pytest.mark.usefixtures("mocked_api_conn", "no_retry_waits")


@pytest.fixture
def api(requests_mock):
    return FakeApi().install(requests_mock)


@pytest.fixture
def context():
    return {"ti": mock.MagicMock()}


def step_sensor(**kwargs):
    arguments = {
        "task_id": "wait",
        "workflow_name": WORKFLOW,
        "instance_id": INSTANCE,
        "step_name": "load data",
        "poke_interval": 1,
        "timeout": 60,
        **kwargs,
    }
    return CloudflareWorkflowStepSensor(**arguments)


def instance_sensor(**kwargs):
    return CloudflareWorkflowInstanceSensor(
        task_id="wait", workflow_name=WORKFLOW, instance_id=INSTANCE, poke_interval=1, timeout=60, **kwargs
    )


def logged(capsys, level):
    """Messages the task logger printed at ``level`` (Airflow's structlog writes to stdout)."""
    pattern = re.compile(rf"\[{level}\s*\] (.*?) \[airflow\.task")
    return [match.group(1) for match in pattern.finditer(capsys.readouterr().out)]


def summary(step_name="load data-1", status="complete", error=None, step_type="step"):
    return {
        "workflow_name": WORKFLOW,
        "instance_id": INSTANCE,
        "step_name": step_name,
        "step_type": step_type,
        "status": status,
        "error": error,
    }


# --- step sensor: names ----------------------------------------------------------------------------


def test_name_as_written_means_its_first_run(api, context):
    api.steps[("load data-1", "step")] = step_result("complete", output={"big": "x" * 1000})
    result = step_sensor().poke(context)
    assert isinstance(result, PokeReturnValue)
    assert (result.is_done, result.xcom_value) == (True, summary())
    assert api.calls == ["instance full"]  # one request per look, whatever the step's state


def test_logged_name_is_used_as_given(api, context):
    api.steps[("load data-2", "step")] = step_result("complete")
    assert step_sensor(step_name="load data-2").poke(context).xcom_value == summary("load data-2")
    assert api.calls == ["instance full"]


def test_code_name_ending_in_digits_then_the_found_name_first(api, context):
    api.steps[("phase-2-1", "step")] = step_result("running")
    sensor = step_sensor(step_name="phase-2")
    assert sensor.poke(context) is False
    assert api.calls == ["instance full"]  # both names are read from the one answer
    api.calls.clear()
    api.steps[("phase-2-1", "step")] = step_result("complete")
    assert sensor.poke(context).xcom_value == summary("phase-2-1")
    assert api.calls == ["instance full"]


@pytest.mark.parametrize(
    "step",
    [
        None,  # not started
        step_result("running"),
        step_result("running", error=("Error", "upstream 503")),  # retrying
    ],
)
def test_a_look_at_a_step_not_finished_costs_one_request(api, context, step):
    if step is not None:
        api.steps[("load data-1", "step")] = step
    assert step_sensor().poke(context) is False
    assert api.calls == ["instance full"]


def test_a_wait_for_event_step_waiting_costs_one_request(api, context):
    api.steps[("approval-1", "waitForEvent")] = step_result("waiting")
    assert step_sensor(step_name="approval", step_type="waitForEvent").poke(context) is False
    assert api.calls == ["instance full"]


def test_wait_for_event_steps_are_looked_up_with_their_type(api, context):
    api.steps[("approval-1", "step")] = step_result("complete")  # same name, other kind
    api.steps[("approval-1", "waitForEvent")] = step_result("waiting")
    sensor = step_sensor(step_name="approval", step_type="waitForEvent")
    assert sensor.poke(context) is False
    ready = step_sensor(step_name="approval", step_type="waitForEvent", success_states=("waiting",))
    assert ready.poke(context).xcom_value == summary("approval-1", "waiting", step_type="waitForEvent")


# --- step sensor: statuses -------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_step_status(api, context, status):
    api.steps[("load data-1", "step")] = step_result(status)
    sensor = step_sensor()
    if status == "complete":
        assert sensor.poke(context).xcom_value == summary()
    elif status == "errored":
        with pytest.raises(CloudflareWorkflowStepFailedError):
            sensor.poke(context)
    else:
        assert sensor.poke(context) is False


def test_not_started_is_not_yet_and_logged_once_per_change(api, context, capsys):
    api.instance["steps"] = [{"name": "prepare-1", "type": "step"}]
    sensor = step_sensor()
    assert sensor.poke(context) is False
    assert sensor.poke(context) is False
    infos = logged(capsys, "info")
    assert infos == [
        "Step 'load data' of instance 'i' of workflow 'wf' has not started yet (the instance is running; "
        "steps so far: 'prepare-1' (step))."
    ]
    api.instance["steps"].append({"name": "transform-1", "type": "step"})
    assert sensor.poke(context) is False
    assert len(logged(capsys, "info")) == 1  # the list changed: logged again


def test_never_ran_on_a_finished_instance_fails_listing_the_steps(api, context):
    api.instance.update(
        status="complete",
        steps=[{"name": "prepare-1", "type": "step"}, {"name": "approval-1", "type": "waitForEvent"}],
    )
    with pytest.raises(CloudflareWorkflowStepFailedError) as failed:
        step_sensor(step_name="lod data").poke(context)
    message = str(failed.value)
    assert (
        "Step 'lod data' of instance 'i' of workflow 'wf' never ran (no step is logged as 'lod data-1'): "
        "the instance is complete" in message
    )
    assert "'prepare-1' (step), 'approval-1' (waitForEvent)" in message


def test_instance_terminated_while_the_step_waits_fails_at_once(api, context):
    api.steps[("approval-1", "waitForEvent")] = step_result("waiting")
    api.instance["status"] = "terminated"
    with pytest.raises(CloudflareWorkflowStepFailedError, match="instance is terminated: the step cannot"):
        step_sensor(step_name="approval", step_type="waitForEvent").poke(context)


def test_retrying_step_logs_the_failed_attempt_and_waits(api, context, capsys):
    api.steps[("load data-1", "step")] = step_result("running", error=("Error", "upstream 503"))
    assert step_sensor().poke(context) is False
    warnings = logged(capsys, "warning")
    assert (
        "Step 'load data-1' of instance 'i' of workflow 'wf' is retrying after a failed attempt: Error: "
        "upstream 503." in warnings
    )


def test_failure_logs_the_error_and_each_attempt(api, context, capsys):
    api.steps[("load data-1", "step")] = step_result("errored", error=("Error", "upstream 502"))
    api.instance.update(
        status="errored",
        error={"name": "Error", "message": "upstream 502"},
        steps=[{"name": "load data-1", "type": "step", "success": False, "attempts": FAILED_ATTEMPTS}],
    )
    with pytest.raises(CloudflareWorkflowStepFailedError) as failed:
        step_sensor().poke(context)
    assert isinstance(failed.value, AirflowFailException)  # no retries; soft_fail skips
    assert (
        str(failed.value)
        == "Step 'load data-1' of instance 'i' of workflow 'wf' is errored: Error: upstream 502."
    )
    errors = logged(capsys, "error")
    assert "  attempt 1: Error: upstream 503" in errors
    assert "  attempt 2: Error: upstream 502" in errors
    assert "  instance errored: Error: upstream 502" in errors
    assert api.calls == ["instance full"]  # the failing look's details also feed the failure report


def test_branching_configuration_succeeds_with_the_error(api, context):
    api.steps[("load data-1", "step")] = step_result("errored", error=("Error", "boom"))
    sensor = step_sensor(success_states=("complete", "errored"), failure_states=())
    assert sensor.poke(context).xcom_value == summary(
        status="errored", error={"name": "Error", "message": "boom"}
    )


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_soft_fail_skips_on_a_failure_state(api, context, mode):
    api.steps[("load data-1", "step")] = step_result("errored", error=("Error", "boom"))
    with pytest.raises(AirflowSkipException):
        step_sensor(soft_fail=True, mode=mode).execute(context)


def test_sync_execute_returns_the_summary_and_never_defers(api, context):
    api.steps[("load data-1", "step")] = step_result("complete")
    sensor = step_sensor(deferrable=False)
    with mock.patch.object(sensor, "defer") as defer:
        assert sensor.execute(context) == summary()
    defer.assert_not_called()
    context["ti"].xcom_push.assert_called_once()  # the dashboard link, before waiting


def test_sync_execute_times_out_without_deferring(api, context):
    sensor = step_sensor(deferrable=False, timeout=1, poke_interval=1)  # a pending look, then the deadline
    with mock.patch.object(sensor, "defer") as defer, pytest.raises(AirflowSensorTimeout) as timed_out:
        sensor.execute(context)
    defer.assert_not_called()
    assert str(timed_out.value) == (
        "Sensor timed out: Timed out waiting for step 'load data' (step) of instance 'i' of workflow 'wf'; "
        "last seen: Step 'load data' of instance 'i' of workflow 'wf' has not started yet (the instance is "
        "running; steps so far: none yet)."
    )


# --- errors from the API ---------------------------------------------------------------------------


def test_transient_errors_in_poke_mean_not_yet(api, context, capsys):
    api.faults = [(503, {})] * 10
    assert step_sensor().poke(context) is False
    assert any("looking again later" in line for line in logged(capsys, "warning"))


def test_rate_limit_burst_then_success(api, context):
    api.faults = [(429, {"Retry-After": "0"})] * 3
    api.steps[("load data-1", "step")] = step_result("complete")
    assert step_sensor().poke(context).xcom_value == summary()  # the hook's own retries absorb it


def test_auth_errors_fail_the_poke(api, context):
    api.faults = [(403, {})]
    with pytest.raises(CloudflareWorkflowsAuthError):
        step_sensor().poke(context)


def test_unknown_instance_says_what_was_looked_for(api, context):
    sensor = step_sensor(instance_id="nope")
    with pytest.raises(CloudflareWorkflowsNotFoundError, match="Instance 'nope' of workflow 'wf' was not"):
        sensor.poke(context)


# --- parameters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"success_states": ("complete",), "failure_states": ("complete",)}, "overlap"),
        ({"success_states": "complete"}, "list or tuple"),
        ({"failure_states": ("broken",)}, "status must be one of"),
        ({"success_states": ()}, "at least one"),
    ],
)
def test_bad_states_fail_at_construction(kwargs, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        step_sensor(**kwargs)
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        instance_sensor(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"step_type": "sleep"}, "step_type must be one of"),
        ({"instance_id": ""}, "instance_id must be"),
        ({"workflow_name": "w" * 65}, "workflow_name must be at most 64"),
        ({"step_name": "bad\nname"}, "control characters"),
    ],
)
def test_bad_templated_values_fail_before_any_call(context, kwargs, fragment, requests_mock):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        step_sensor(**kwargs).execute(context)
    assert requests_mock.call_count == 0


def test_template_fields_and_no_shadowed_airflow_arguments():
    assert CloudflareWorkflowStepSensor.template_fields == (
        "workflow_name",
        "instance_id",
        "step_name",
        "step_type",
        "account_id",
        "cloudflare_conn_id",
    )
    assert CloudflareWorkflowInstanceSensor.template_fields == (
        "workflow_name",
        "instance_id",
        "account_id",
        "cloudflare_conn_id",
    )
    sensor = step_sensor(pool="p", queue="q", params={"a": 1}, soft_fail=True, exponential_backoff=True)
    assert (sensor.pool, sensor.queue, sensor.soft_fail, sensor.exponential_backoff) == ("p", "q", True, True)


def test_no_io_in_init(requests_mock):
    step_sensor()
    instance_sensor()
    assert requests_mock.call_count == 0


# --- deferrable ------------------------------------------------------------------------------------


def test_deferrable_does_not_defer_when_done_on_the_first_poke(api, context):
    api.steps[("load data-1", "step")] = step_result("complete")
    sensor = step_sensor(deferrable=True)
    with mock.patch.object(sensor, "defer") as defer:
        assert sensor.execute(context) == summary()
    defer.assert_not_called()


def test_deferrable_defers_when_not_done_with_an_absolute_deadline(api, context):
    sensor = step_sensor(deferrable=True, timeout=600, poke_interval=7)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    trigger = deferred.value.trigger
    assert isinstance(trigger, CloudflareWorkflowStepTrigger)
    assert deferred.value.method_name == "execute_complete"
    _classpath, kwargs = trigger.serialize()
    assert before + 600 <= kwargs["end_time"] <= time.time() + 600  # wall clock, not a relative timeout
    assert kwargs["poll_interval"] == 7
    assert (kwargs["step_name"], kwargs["step_type"]) == ("load data", "step")
    assert UNIT_TEST_TOKEN not in json.dumps(kwargs)
    assert api.calls[0] == "instance full"  # it poked before deferring


def test_instance_sensor_defers_with_the_instance_trigger(api, context):
    with pytest.raises(TaskDeferred) as deferred:
        instance_sensor(deferrable=True).execute(context)
    assert isinstance(deferred.value.trigger, CloudflareWorkflowInstanceTrigger)
    assert deferred.value.trigger.serialize()[1]["failure_states"] == ["errored", "terminated"]


@pytest.mark.parametrize("soft_fail", [True, False])
def test_deferrable_first_poke_failure(api, context, soft_fail):
    api.steps[("load data-1", "step")] = step_result("errored", error=("Error", "boom"))
    sensor = step_sensor(deferrable=True, soft_fail=soft_fail)
    expected = AirflowSkipException if soft_fail else CloudflareWorkflowStepFailedError
    with mock.patch.object(sensor, "defer") as defer, pytest.raises(expected):
        sensor.execute(context)
    defer.assert_not_called()


def step_event(status="success", **overrides):
    return {
        "status": status,
        "workflow_name": WORKFLOW,
        "instance_id": INSTANCE,
        "step_name": "load data-1",
        "step_type": "step",
        "step_status": "complete",
        "error": None,
        "message": "Step 'load data-1' of instance 'i' of workflow 'wf' is complete.",
        **overrides,
    }


@pytest.mark.parametrize(
    ("event", "error", "fragment"),
    [
        (None, AirflowException, "no usable event"),
        ("success", AirflowException, "no usable event"),
        ({"status": "weird"}, AirflowException, "unknown status 'weird'"),
        ({"status": "success"}, AirflowException, "lacks"),
        (step_event(error="boom"), AirflowException, "unreadable error"),
        ({"status": "timeout", "message": "late"}, AirflowSensorTimeout, "timed out: late"),
        ({"status": "error", "message": "Cloudflare API error: 403"}, AirflowException, "403"),
    ],
)
def test_execute_complete_validates_the_event(context, event, error, fragment):
    with pytest.raises(error, match=fragment):
        step_sensor().execute_complete(context, event)


def test_execute_complete_success_and_failure(api, context, capsys):
    sensor = step_sensor()
    assert sensor.execute_complete(context, step_event()) == summary()
    api.instance["steps"] = [
        {"name": "load data-1", "type": "step", "success": False, "attempts": FAILED_ATTEMPTS}
    ]
    failed = step_event(
        "failure", step_status="errored", error={"name": "Error", "message": "upstream 502"}, message="bad"
    )
    with pytest.raises(CloudflareWorkflowStepFailedError, match="bad"):
        sensor.execute_complete(context, failed)
    assert "  attempt 2: Error: upstream 502" in logged(capsys, "error")  # logged on the worker


@pytest.mark.parametrize("event", [step_event("failure", step_status="errored"), {"status": "timeout"}])
def test_soft_fail_skips_on_resume(api, context, event):
    sensor = step_sensor(soft_fail=True)
    with pytest.raises(AirflowSkipException):
        sensor.resume_execution("execute_complete", {"event": event}, context)


# --- instance sensor -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_instance_status(api, context, status):
    api.instance.update(status=status, output={"rows": 3})
    sensor = instance_sensor()
    if status == "complete":
        assert sensor.poke(context).xcom_value == {
            "workflow_name": WORKFLOW,
            "instance_id": INSTANCE,
            "status": "complete",
            "error": None,
            "output": {"rows": 3},
        }
        assert api.calls == ["instance simple"]
    elif status in ("errored", "terminated"):
        with pytest.raises(CloudflareWorkflowInstanceFailedError):
            sensor.poke(context)
    else:
        assert sensor.poke(context) is False


def test_instance_failure_logs_the_error_and_failed_steps(api, context, capsys):
    api.instance.update(
        status="errored",
        error={"name": "Error", "message": "upstream 502"},
        steps=[{"name": "load data-1", "type": "step", "success": False, "attempts": FAILED_ATTEMPTS}],
    )
    with pytest.raises(CloudflareWorkflowInstanceFailedError, match="The instance is errored: Error: up"):
        instance_sensor().poke(context)
    errors = logged(capsys, "error")
    assert "  step 'load data-1' (step) failed: Error: upstream 502 (2 failed attempt(s))" in errors


def test_instance_sensor_leaves_big_outputs_out(api, context):
    api.instance.update(status="complete", output="x" * 70_000)
    result = instance_sensor().poke(context).xcom_value
    assert (result["output"], result["output_truncated"], result["output_bytes"]) == (None, True, 70_002)


def test_instance_sensor_execute_complete_reads_output_on_the_worker(api, context):
    sensor = instance_sensor()
    event = {
        "status": "success",
        "workflow_name": WORKFLOW,
        "instance_id": INSTANCE,
        "instance_status": "complete",
        "error": None,
        "message": "The instance is complete.",
    }
    api.instance.update(status="complete", output={"rows": 1})
    assert sensor.execute_complete(context, event)["output"] == {"rows": 1}
    with pytest.raises(AirflowException, match="lacks"):
        sensor.execute_complete(context, {"status": "success"})
    with pytest.raises(CloudflareWorkflowInstanceFailedError):
        sensor.execute_complete(context, {**event, "status": "failure", "instance_status": "errored"})
