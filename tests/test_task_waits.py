"""A task's wait (``task_waits``): what a failed look means (an API that never answered fails the first
look at once, naming the host and the cause in full; after one answer a transient failure is one short
line and "look again"); each look's calls end by the wait's deadline, and a look past it times the wait
out."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from datetime import timedelta
from unittest import mock

import pytest
import requests
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from airflow_provider_cfworkflows import deadlines
from airflow_provider_cfworkflows.checks import Check, Verdict
from airflow_provider_cfworkflows.exceptions import (
    CloudflareErrorDetail,
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.looks import brief_error, transport_cause
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)
from airflow_provider_cfworkflows.task_waits import InstanceWait
from tests.fakes import INSTANCE, WORKFLOW, FakeApi, step_result
from tests.helpers import MOCK_API_BASE, ok_envelope

PENDING = Check(Verdict.PENDING, "running", "The instance is running; still waiting.")
AWAITED = "instance 'i' of workflow 'wf'"


pytestmark = pytest.mark.usefixtures("mocked_api_conn", "no_retry_waits")


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that is bound but never listens: every connection to it is refused."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        yield int(holder.getsockname()[1])


def real_transport_error(url: str) -> requests.RequestException:
    """What requests raises for ``url`` (only ever a closed local port or an unresolvable name)."""
    try:
        requests.get(url, timeout=5)
    except requests.RequestException as error:
        return error
    raise AssertionError(f"{url} answered")


def wrapped(error: BaseException) -> CloudflareWorkflowsConnectionError:
    """The hook's error for a transport error, raised the way the hook raises it (``from None``)."""
    try:
        try:
            raise error
        except BaseException as cause:
            raise CloudflareWorkflowsConnectionError(
                f"Request failed before a complete response: {str(cause)[:300]}", method="GET", path="/x"
            ) from None
    except CloudflareWorkflowsConnectionError as raised:
        return raised


class ScriptedWait(InstanceWait):
    """An instance wait whose looks give what the test says (a check, or an error raised)."""

    def __init__(self, *, answered: bool = False) -> None:
        super().__init__(
            hook=CloudflareWorkflowsHook(),
            log=mock.Mock(),
            workflow_name=WORKFLOW,
            instance_id=INSTANCE,
            account_id=None,
            cloudflare_conn_id="cloudflare_default",
            success_states=("complete",),
            failure_states=("errored",),
            answered=answered,
        )
        self.next: Check | BaseException = PENDING

    def _check(self) -> Check:
        if isinstance(self.next, BaseException):
            raise self.next
        return self.next

    def look(self, outcome: Check | BaseException) -> Check | None:
        """Poke once with ``outcome`` as the look's result; the check the wait saw, or None."""
        self.next = outcome
        done = self.poke()
        if done is not None or isinstance(outcome, BaseException):
            return done
        return self.last_seen


# --- the cause of "no response", in full ------------------------------------------------------------


def test_the_cause_of_a_refused_connection_is_the_os_error_in_full(closed_port):
    error = wrapped(real_transport_error(f"http://127.0.0.1:{closed_port}/x"))
    assert transport_cause(error) == "ConnectionRefusedError: [Errno 111] Connection refused"


def test_the_cause_of_a_name_that_does_not_resolve(monkeypatch):
    def getaddrinfo(host, *args, **kwargs):  # no resolver is asked: the test stays on this machine
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    error = wrapped(real_transport_error("https://api.cfw.invalid/x"))
    assert transport_cause(error) == "gaierror: [Errno -2] Name or service not known"


def test_without_an_os_error_the_cause_is_the_message():
    error = CloudflareWorkflowsConnectionError("Step output stream ended after 3 of 9 bytes")
    assert transport_cause(error) == "Step output stream ended after 3 of 9 bytes"


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (
            CloudflareWorkflowsRateLimitError(
                "Rate limited by Cloudflare",
                retry_after=30,
                http_status=429,
                errors=(CloudflareErrorDetail(971, "Please wait"),),
                cf_ray="8f00aa-SJC",
                method="GET",
                path="/accounts/0123456789abcdef0123456789abcdef/workflows/wf/instances/i",
            ),
            "Rate limited by Cloudflare; HTTP 429; Retry-After 30 s; 971: Please wait; cf-ray 8f00aa-SJC",
        ),
        (
            CloudflareWorkflowsServerError("Cloudflare server error", http_status=503, path="/a"),
            "Cloudflare server error; HTTP 503",
        ),
    ],
)
def test_a_transient_error_in_one_short_line_without_the_request_path(error, line):
    assert brief_error(error) == line


# --- the first look -----------------------------------------------------------------------------------


def test_no_response_to_the_first_look_fails_at_once_naming_the_host_and_cause(closed_port):
    error = wrapped(real_transport_error(f"http://127.0.0.1:{closed_port}/x"))
    with pytest.raises(CloudflareWorkflowsConnectionError) as failed:
        ScriptedWait().look(error)
    assert failed.value.message == (
        "Could not reach the Cloudflare Workflows API at api.cloudflare.test "
        "(https://api.cloudflare.test/client/v4): ConnectionRefusedError: [Errno 111] Connection refused. "
        "Check the connection's host and port, and that the API (or the local emulator) is running and "
        "reachable from this machine. No response to the first look of this task: it fails now instead of "
        "waiting for instance 'i' of workflow 'wf' until its timeout."
    )


def test_an_http_answer_to_the_first_look_counts_as_an_answer():
    looks = ScriptedWait()
    assert looks.look(CloudflareWorkflowsServerError("down", http_status=503)) is None
    assert looks.answered
    assert looks.look(CloudflareWorkflowsConnectionError("reset")) is None  # now: look again


def test_after_an_answer_no_response_means_look_again_in_one_line(closed_port):
    looks = ScriptedWait()
    assert looks.look(PENDING) is PENDING
    error = wrapped(real_transport_error(f"http://127.0.0.1:{closed_port}/x"))
    assert looks.look(error) is None
    looks.log.warning.assert_called_once_with(
        "Cloudflare did not answer usably this time; looking again later: %s",
        "no complete response (ConnectionRefusedError: [Errno 111] Connection refused)",
    )


def test_an_earlier_answer_in_this_task_counts(closed_port):
    error = wrapped(real_transport_error(f"http://127.0.0.1:{closed_port}/x"))
    assert ScriptedWait(answered=True).look(error) is None


def test_errors_that_are_not_transient_propagate():
    auth = CloudflareWorkflowsAuthError("no", http_status=403)
    with pytest.raises(CloudflareWorkflowsAuthError):
        ScriptedWait().look(auth)


# --- the deadline --------------------------------------------------------------------------------------


def test_a_look_past_the_deadline_times_out_saying_what_it_saw_last():
    looks = ScriptedWait()
    assert looks.look(PENDING) is PENDING
    with deadlines.calls_end_by(time.time() - 1), pytest.raises(AirflowSensorTimeout) as timed_out:
        looks.look(CloudflareWorkflowsConnectionError("cut at the deadline"))
    assert str(timed_out.value) == (
        "Sensor timed out: Timed out waiting for instance 'i' of workflow 'wf'; last seen: The instance is "
        "running; still waiting."
    )
    looks.log.warning.assert_not_called()  # a look cut by the deadline is the timeout, not a transient error


def test_no_response_because_of_the_deadline_is_a_timeout_not_an_unreachable_api():
    with deadlines.calls_end_by(time.time() - 1), pytest.raises(AirflowSensorTimeout, match="no usable"):
        ScriptedWait().look(CloudflareWorkflowsConnectionError("cut at the deadline"))


def test_a_finished_look_past_the_deadline_is_not_a_timeout():
    done = Check(Verdict.SUCCESS, "complete", "The instance is complete.")
    with deadlines.calls_end_by(time.time() - 1):
        assert ScriptedWait().look(done) == done


def recording_deadlines(api: FakeApi) -> list[float | None]:
    """The deadline in force at each call the fake API answers."""
    seen: list[float | None] = []
    answer = api.respond

    def respond(url: str) -> tuple[int, dict[str, str], bytes]:
        seen.append(deadlines.current_deadline())
        return answer(url)

    api.respond = respond  # type: ignore[method-assign]
    return seen


@pytest.mark.parametrize("mode", ["poke", "reschedule"])
def test_every_call_of_a_sensor_look_ends_by_start_plus_timeout(requests_mock, mode):
    api = FakeApi().install(requests_mock)
    seen = recording_deadlines(api)
    api.steps[("load data-1", "step")] = step_result("complete")
    sensor = CloudflareWorkflowStepSensor(
        task_id="wait",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        step_name="load data",
        poke_interval=1,
        timeout=600,
        mode=mode,
    )
    # In reschedule mode, a later execution: the timeout counts from the first poke, as in Airflow.
    first_poke = time.time() - 100
    ti = mock.Mock(**{"get_first_reschedule_date.return_value.timestamp.return_value": first_poke})
    started = time.time()
    sensor.execute({"ti": ti, "task_reschedule_count": 3 if mode == "reschedule" else 0})
    assert len(seen) == 1
    if mode == "reschedule":
        assert seen == [first_poke + 600]
    else:
        assert started + 600 <= seen[0] <= time.time() + 600


def test_the_instance_sensor_and_its_trigger_share_the_deadline(requests_mock):
    seen = recording_deadlines(FakeApi().install(requests_mock))
    sensor = CloudflareWorkflowInstanceSensor(
        task_id="wait", workflow_name=WORKFLOW, instance_id=INSTANCE, timeout=600, deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": mock.MagicMock()})
    assert seen == [deferred.value.trigger.serialize()[1]["end_time"]]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", float("nan")),
        ("timeout", float("inf")),
        ("timeout", 0),
        ("poke_interval", True),
        ("poke_interval", -1),
        ("poke_interval", "60"),
    ],
)
def test_sensor_seconds_are_finite_and_positive(name, value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=f"^{name} must be"):
        CloudflareWorkflowInstanceSensor(
            task_id="wait", workflow_name=WORKFLOW, instance_id=INSTANCE, **{name: value}
        )
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=f"^{name} must be"):
        CloudflareWorkflowStepSensor(
            task_id="wait", workflow_name=WORKFLOW, instance_id=INSTANCE, step_name="s", **{name: value}
        )


@pytest.mark.parametrize("level", ["dag", "task"])
def test_sensor_seconds_from_default_args_are_checked_too(level):
    from airflow.sdk import DAG

    defaults = {"poke_interval": 0, "timeout": float("inf")}
    task_defaults = {"default_args": defaults} if level == "task" else {}
    with DAG(dag_id=f"seconds_{level}", schedule=None, default_args=defaults if level == "dag" else {}):
        for sensor, extra in (
            (CloudflareWorkflowInstanceSensor, {}),
            (CloudflareWorkflowStepSensor, {"step_name": "s"}),
        ):
            with pytest.raises(CloudflareWorkflowsConfigurationError, match=r"^poke_interval must be"):
                sensor(task_id="wait", workflow_name=WORKFLOW, instance_id=INSTANCE, **extra, **task_defaults)
            with pytest.raises(CloudflareWorkflowsConfigurationError, match=r"^timeout must be"):
                sensor(
                    task_id="wait",
                    workflow_name=WORKFLOW,
                    instance_id=INSTANCE,
                    poke_interval=5,  # an argument beats default_args, so only the timeout is wrong
                    **extra,
                    **task_defaults,
                )


def test_sensor_seconds_may_be_timedeltas():
    sensor = CloudflareWorkflowInstanceSensor(
        task_id="wait",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        poke_interval=timedelta(seconds=30),
        timeout=timedelta(hours=1),
    )
    assert (sensor.poke_interval, sensor.timeout) == (30, 3600)


def test_the_create_and_wait_operators_wait_follows_an_answered_create(requests_mock):
    """Its create got an answer, so no response to a look of its wait only means "look again"."""
    requests_mock.get(
        re.compile(re.escape(MOCK_API_BASE)),
        [{"exc": requests.exceptions.ConnectionError("connection reset")}] * 6
        + [{"json": ok_envelope({"status": "complete", "error": None, "output": None})}],
    )
    wait = InstanceWait(
        hook=CloudflareWorkflowsHook(),
        log=mock.Mock(),
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        account_id=None,
        cloudflare_conn_id="cloudflare_default",
        success_states=("complete",),
        failure_states=("errored",),
    )
    assert wait.poke() is None  # the hook's 5 retries, then "look again"
    assert wait.poke().status == "complete"
    assert requests_mock.call_count == 7
