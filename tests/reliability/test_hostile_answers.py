"""Hostile answers end to end, against the emulator: each ends in the clear outcome docs/reliability.md names.

- Status line and headers dripped a byte every 2 s: a poke sensor still ends by its timeout.
- A slow body after the headers: the server answered, so the sensor does not call the API unreachable.
- A 2 MB Cloudflare error message: the sensor's timeout and the trigger's event stay small.
- A lone UTF-16 surrogate in a JSON step output: XCom gets its escape, a file the JSON text as sent.
- Step outputs nested deeper than XCom can carry: refused for XCom, written whole to a file.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowOutputRejectedError
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator
from airflow_provider_cfworkflows.remote_text import MAX_XCOM_DEPTH
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger
from tests.fakes import RecordingTaskInstance
from tests.helpers import connection_json
from tests.reliability.components import run_trigger, task_context

pytestmark = pytest.mark.integration

SLOW = "hostile-slow"  # one step that runs for an hour
OUTPUTS = "hostile-outputs"
CUT_TEXT = {"text": "cut inside an emoji \ud83d", "key \udfff": 1}
ESCAPED_TEXT = {"text": "cut inside an emoji \\ud83d", "key \\udfff": 1}
DEEP = 200  # levels of nested lists: deeper than MAX_XCOM_DEPTH, which Python still reads
HUGE_MESSAGE = 2_000_000
# A message, an event: a few KiB at most whatever Cloudflare sends.
SMALL = 20_000


def nested(levels: int) -> Any:
    value: Any = {"leaf": True}
    for _ in range(levels - 1):
        value = [value]
    return value


@pytest.fixture
def emulator(cloudflare_conn, monkeypatch) -> Any:
    """The reset emulator with the workflows below; ``cloudflare_default`` without hook retries."""
    emulator = cloudflare_conn
    emulator.put_workflow({"name": SLOW, "steps": [{"name": "work", "duration": 3600}]})
    emulator.put_workflow(
        {
            "name": OUTPUTS,
            "steps": [{"name": "cut", "output": CUT_TEXT}, {"name": "deep", "output": nested(DEEP)}],
        }
    )
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        connection_json(emulator.api_base, extra={"max_retries": 0, "timeout": 5}),
    )
    return emulator


def start(emulator: Any, workflow: str) -> str:
    with emulator.api_client() as client:
        answer = client.post(f"/{workflow}/instances", json={"instance_id": "i"})
    assert answer.status_code == 200, answer.text
    emulator.advance(5)
    return "i"


def step_sensor(timeout: float, **kwargs: Any) -> CloudflareWorkflowStepSensor:
    return CloudflareWorkflowStepSensor(
        task_id="wait",
        workflow_name=SLOW,
        instance_id="i",
        step_name="work",
        timeout=timeout,
        poke_interval=0.5,
        **kwargs,
    )


def execute_in_thread(task: Any, within: float) -> tuple[Any, BaseException | None, float]:
    """Run ``task.execute``; a run still going after ``within`` s fails the test (instead of hanging it)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = task.execute(task_context("wait"))
        except BaseException as error:
            outcome["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"the task was still running after {within} s"
    return outcome.get("result"), outcome.get("error"), time.monotonic() - started


def test_dripping_headers_end_a_poke_sensor_by_its_timeout(emulator):
    start(emulator, SLOW)
    # The first look is answered (the API is there); every later one gets its headers a byte every 2 s,
    # each byte well within a socket read's timeout (the connection's timeout, 5 s).
    emulator.inject_fault(kind="delay", seconds=0, path=r"/instances/i$", count=1)
    emulator.inject_fault(kind="header_drip", interval=2, path=r"/instances/i$", count=1000)

    _, error, took = execute_in_thread(step_sensor(timeout=20), within=120)

    assert isinstance(error, AirflowSensorTimeout), error
    assert "timed out" in str(error)
    assert took <= 20 + 5  # the sensor's timeout plus one attempt's timeout
    dripped = [entry for entry in emulator.requests_log() if entry["fault"] == "header_drip"]
    assert len(dripped) >= 2  # each attempt was cut, not just one


def test_a_slow_body_after_the_headers_is_not_an_unreachable_api(emulator):
    start(emulator, SLOW)
    # The first look's headers come at once, its body too slowly for the connection's timeout.
    emulator.inject_fault(kind="drip", interval=1, path=r"/instances/i$", count=1)
    emulator.inject_fault(kind="delay", seconds=0, path=r"/instances/i$", count=1000)

    _, error, _ = execute_in_thread(step_sensor(timeout=8), within=120)

    # The server answered: the sensor kept looking (until its timeout) instead of failing at once.
    assert isinstance(error, AirflowSensorTimeout), error
    assert "the last look failed" not in str(error)  # the looks after the first one were answered
    assert "Could not reach" not in str(error)


def test_a_2mb_error_message_is_cut_in_the_timeout_and_the_event(emulator, caplog, capfd):
    start(emulator, SLOW)
    chain = [{"code": 10001, "message": "m" * HUGE_MESSAGE}]
    emulator.inject_fault(
        kind="server_error", status=503, error_chain=chain, path=r"/instances/i$", count=1000
    )

    _, error, _ = execute_in_thread(step_sensor(timeout=3), within=120)
    trigger = CloudflareWorkflowStepTrigger(
        workflow_name=SLOW,
        instance_id="i",
        step_name="work",
        success_states=["complete"],
        failure_states=["errored", "terminated"],
        end_time=time.time() + 3,
        poll_interval=0.5,
    )
    event = run_trigger(trigger)

    assert isinstance(error, AirflowSensorTimeout), error
    assert "HTTP 503" in str(error)
    assert "more characters cut" in str(error)
    assert len(str(error)) < SMALL
    assert event["status"] == "timeout"
    assert "more characters cut" in event["message"]
    assert len(json.dumps(event)) < SMALL
    logged = [record.getMessage() for record in caplog.records] + capfd.readouterr().out.splitlines()
    assert logged
    assert max(map(len, logged)) < SMALL


def test_a_lone_surrogate_goes_to_xcom_as_its_escape(emulator, run_dag, capfd):
    instance_id = start(emulator, OUTPUTS)

    result = run_dag(
        "output_xcom", {"workflow_name": OUTPUTS, "instance_id": instance_id, "step_name": "cut"}
    )

    assert result.state == "success"
    assert result.xcom("fetch_output") == ESCAPED_TEXT
    assert result.xcom("consume")["value"] == ESCAPED_TEXT
    assert "holds 2 lone UTF-16 surrogate(s)" in capfd.readouterr().out  # dag.test() prints the task logs


def operator(step_name: str, **kwargs: Any) -> CloudflareWorkflowStepOutputOperator:
    return CloudflareWorkflowStepOutputOperator(
        task_id="fetch", workflow_name=OUTPUTS, instance_id="i", step_name=step_name, **kwargs
    )


def test_a_lone_surrogate_goes_to_a_file_as_the_json_text_sent(emulator, tmp_path):
    start(emulator, OUTPUTS)
    target = tmp_path / "cut.json"

    operator("cut", output_path=f"file://{target}").execute({"ti": RecordingTaskInstance()})

    text = target.read_bytes().decode("utf-8")  # valid UTF-8
    assert text == '{"text":"cut inside an emoji \\ud83d","key \\udfff":1}'  # JavaScript's JSON.stringify
    assert json.loads(text) == CUT_TEXT


def test_an_output_too_deep_for_xcom_is_refused_but_written_to_a_file(emulator, tmp_path):
    start(emulator, OUTPUTS)
    target = tmp_path / "deep.json"

    with pytest.raises(CloudflareWorkflowOutputRejectedError, match=f"more than {MAX_XCOM_DEPTH} levels"):
        operator("deep").execute({"ti": RecordingTaskInstance()})
    operator("deep", output_path=f"file://{target}").execute({"ti": RecordingTaskInstance()})

    assert json.loads(target.read_text()) == nested(DEEP)
