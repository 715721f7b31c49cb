"""A secret scan over everything representative tasks produce, with a token that ends in a newline.

Secrets from files, Vault or Kubernetes often end in ``\\n``; a header error used to print the repr'd
value (``'Bearer <token>\\n'``), which Airflow's masker does not match. Here the connection's token is
``guarded.TOKEN_WITH_NEWLINE`` and real Airflow runs (``dag.test()``: task logs, XComs, rendered
template fields, trigger runs, the metadata DB) and direct runs (exception texts with their causes and
notes, trigger kwargs and events) are scanned for every form of it. Misconfigured connections (the token
pasted into the login, host or ``timeout`` field, a control character or non-Latin-1 letter in it) must
fail with an error that does not repeat the value.
"""

from __future__ import annotations

import json
import sqlite3
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_cfworkflows.emulator.server import run_emulator_process
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.triggers import watchers
from tests.helpers import connection_json
from tests.reliability.components import SLOW, run_trigger, task_context
from tests.reliability.guarded import SCENARIO, SECRET, SECRET_FORMS, TOKEN_WITH_NEWLINE, leaked_forms

pytestmark = pytest.mark.integration

DAG_ID = "reliability_secret_scan"
# Tasks of the scanned DAG: a create, a deferrable step sensor whose first look and whose trigger both
# meet a transient error, a sync instance sensor whose first poke fails the same way, the step's output
# through XCom, an event, and tasks whose connection is misconfigured with the token.
DAG_SOURCE = f'''
from datetime import datetime

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowSendEventOperator,
    CloudflareWorkflowStepOutputOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)

with DAG("{DAG_ID}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
    start = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="{SLOW}", instance_id="scan-slow", instance_params={{"n": 1}}
    )
    step = CloudflareWorkflowStepSensor(
        task_id="step", workflow_name="{SLOW}", instance_id="{{{{ ti.xcom_pull(task_ids='start') }}}}",
        step_name="work", deferrable=True, poke_interval=0.2, timeout=60,
    )
    whole = CloudflareWorkflowInstanceSensor(
        task_id="whole", workflow_name="{SLOW}", instance_id="scan-slow", poke_interval=0.2, timeout=60
    )
    output = CloudflareWorkflowStepOutputOperator(
        task_id="output", workflow_name="{SLOW}", instance_id="scan-slow", step_name="work"
    )
    gate = CloudflareWorkflowCreateInstanceOperator(
        task_id="gate", workflow_name="rel-gate", instance_id="scan-gate"
    )
    event = CloudflareWorkflowSendEventOperator(
        task_id="event", workflow_name="rel-gate", instance_id="scan-gate", event_type="approval",
        payload={{"by": "scan"}},
    )
    start >> step >> whole >> output
    gate >> event
    for conn_id in ("cf_token_in_login", "cf_token_in_host", "cf_control_character"):
        CloudflareWorkflowInstanceSensor(
            task_id=f"misconfigured_{{conn_id}}", cloudflare_conn_id=conn_id, workflow_name="{SLOW}",
            instance_id="scan-slow", timeout=5, retries=0,
        )
'''
SUCCEEDING = ("start", "step", "whole", "output", "gate", "event")
# Connections whose settings hold the token where it does not belong, or hold it unusable.
MISCONFIGURED = {
    "cf_token_in_login": {"login": TOKEN_WITH_NEWLINE},
    "cf_token_in_host": {"host": f"https://{TOKEN_WITH_NEWLINE}.example.com/client/v4"},
    "cf_control_character": {"password": f"{SECRET}\x07inner\n"},
    "cf_token_in_timeout": {"extra": {"timeout": TOKEN_WITH_NEWLINE}},
    "cf_non_latin1": {"password": f"{SECRET}\u00e9\u20ac\n"},
}


def test_the_scan_finds_every_form_of_the_token() -> None:
    assert leaked_forms(["all clear", "Bearer ***", "reliab-secret"]) == []
    for form in SECRET_FORMS:
        assert form in leaked_forms([f"text {form} text"])
    assert SECRET in repr(TOKEN_WITH_NEWLINE)  # every form holds the bare token: byte scans find them all


@pytest.fixture(scope="module")
def live_emulator() -> Iterator[Any]:
    """The reliability scenario at real time, so a deferred sensor sees its step finish after 1 s."""
    with run_emulator_process(SCENARIO, time_scale=1) as emulator:
        yield emulator


@pytest.fixture
def connections(live_emulator: Any, monkeypatch: pytest.MonkeyPatch, no_retry_waits: None) -> Any:
    """``cloudflare_default`` with the token ending in a newline, and the misconfigured connections."""
    live_emulator.reset()
    extra = {"max_retries": 2}
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        connection_json(live_emulator.api_base, password=TOKEN_WITH_NEWLINE, extra=extra),
    )
    for conn_id, overrides in MISCONFIGURED.items():
        fields = {"password": TOKEN_WITH_NEWLINE, "extra": extra, **overrides}
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}", connection_json(live_emulator.api_base, **fields)
        )
    monkeypatch.setattr(watchers, "MIN_ERROR_BACKOFF_SECONDS", 0.2)
    return live_emulator


def _transient_looks(emulator: Any, path: str, looks: int) -> None:
    """The next ``looks`` looks at ``path`` each fail whole (every attempt of the hook gets a 503)."""
    emulator.inject_fault(kind="server_error", status=503, method="GET", path=path, count=3 * looks)


def _everything_under(folder: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


def _database_rows(database: Path) -> Iterator[tuple[str, str]]:
    """Every row of every table of the metadata DB, as text."""
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                yield table, repr(row)


def test_real_runs_leave_the_token_nowhere(
    airflow_db: Path, connections: Any, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    from airflow.dag_processing.dagbag import DagBag

    emulator = connections
    dag_file = airflow_db / "dags" / "reliability_secret_scan_generated.py"
    dag_file.write_text(DAG_SOURCE)
    try:
        bag = DagBag(dag_folder=str(dag_file))
        assert not bag.import_errors, bag.import_errors
        # The step sensor's first look, its trigger's first look, then the instance sensor's first poke.
        _transient_looks(emulator, r"/instances/scan-slow(/step)?$", looks=3)
        dag_run = bag.get_dag(DAG_ID).test()
    finally:
        dag_file.unlink()

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert {task: states[task] for task in SUCCEEDING} == dict.fromkeys(SUCCEEDING, "success"), states
    assert {task for task, state in states.items() if state == "failed"} == {
        f"misconfigured_{conn_id}"
        for conn_id in ("cf_token_in_login", "cf_token_in_host", "cf_control_character")
    }
    assert emulator.faults() == []  # every transient look happened
    assert emulator.request_stats()["events"] == 1
    output = capsys.readouterr()
    assert "looking again later" in output.out or "looking again later" in caplog.text
    assert leaked_forms([output.out, output.err, caplog.text]) == []
    leaks = [
        f"{table}: {row[:200]}" for table, row in _database_rows(airflow_db / "airflow.db") if SECRET in row
    ]
    assert leaks == []
    files = [str(path) for path, data in _everything_under(airflow_db) if SECRET.encode() in data]
    assert files == []


def _all_text(error: BaseException) -> str:
    """What a log shows of an error: its message, repr, and its traceback with causes and notes."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


@pytest.mark.parametrize("conn_id", sorted(MISCONFIGURED))
def test_a_misconfigured_connection_is_refused_without_showing_the_value(
    connections: Any, conn_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    hook = CloudflareWorkflowsHook(conn_id)
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        hook.get_workflow("rel-gate")
    assert leaked_forms([_all_text(caught.value), caplog.text]) == []


def test_a_trigger_carries_the_connection_id_and_never_the_token(
    connections: Any, caplog: pytest.LogCaptureFixture
) -> None:
    emulator = connections
    with emulator.api_client() as client:
        assert client.post(f"/{SLOW}/instances", json={"instance_id": "scan-trigger"}).status_code == 200
    sensor = CloudflareWorkflowStepSensor(
        task_id="step", workflow_name=SLOW, instance_id="scan-trigger", step_name="work",
        deferrable=True, poke_interval=0.2, timeout=30,
    )  # fmt: skip
    context = task_context("step")
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    trigger = deferred.value.trigger
    _transient_looks(emulator, r"/instances/scan-trigger(/step)?$", looks=1)

    event = run_trigger(trigger)
    result = sensor.execute_complete(context, event)

    classpath, kwargs = trigger.serialize()
    assert kwargs["cloudflare_conn_id"] == "cloudflare_default"
    texts = [classpath, json.dumps(kwargs), json.dumps(event), json.dumps(result), repr(trigger), caplog.text]
    texts.append(json.dumps(context["ti"].xcoms, default=str))
    assert result["status"] == "complete"
    assert leaked_forms(texts) == []
