"""
The pipeline example on separate scheduler, dag-processor, triggerer and api-server processes; the
triggerer is killed (SIGKILL) while a sensor is deferred, and restarted: the run still succeeds, with
one Workflow instance and one event.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_stack import TRIGGERER, AirflowStack
from tests.conftest import EXAMPLE_DAGS

pytestmark = pytest.mark.multiprocess
DAG_ID = "example_cfworkflows_pipeline"
WORKFLOW = "demo-pipeline"
SENSOR = "wait_for_approval_step"

# The triggerer a deferred task's trigger is assigned to (NULL until a triggerer picks it up).
TRIGGERER_OF_TASK = """
    SELECT trigger.triggerer_id FROM task_instance
    JOIN trigger ON trigger.id = task_instance.trigger_id
    WHERE task_instance.dag_id = ? AND task_instance.run_id = ? AND task_instance.task_id = ?
      AND task_instance.state = 'deferred'
"""


@pytest.fixture
def frozen_emulator() -> Iterator[Any]:
    """The emulator (its own process) with its clock stopped: no step finishes until it is restarted."""
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None, time_scale=0) as emulator:
        yield emulator


def _assigned_triggerer(stack: AirflowStack, run_id: str, other_than: int | None = None) -> int | None:
    rows = stack.query(TRIGGERER_OF_TASK, DAG_ID, run_id, SENSOR)
    if not rows or rows[0][0] is None or rows[0][0] == other_than:
        return None
    return int(rows[0][0])


def test_triggerer_killed_while_a_sensor_is_deferred(frozen_emulator: Any, tmp_path: Path) -> None:
    conn = {
        "conn_type": "cloudflare_workflows",
        "login": frozen_emulator.account_id,
        "password": frozen_emulator.api_token,
        "host": frozen_emulator.api_base,
    }
    env = {
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": json.dumps(conn),
        "CFWORKFLOWS_EXAMPLE_OUTPUT_BASE": tmp_path.as_uri(),
    }
    with AirflowStack.running(dags_folder=EXAMPLE_DAGS, env=env) as stack:
        stack.wait_for_dag(DAG_ID)
        stack.unpause(DAG_ID)
        run_id = stack.trigger(DAG_ID)

        # The Workflow cannot reach its approval step while the clock stands: the sensor defers.
        stack.wait_for_task_state(DAG_ID, run_id, SENSOR, "deferred")
        first = stack.wait_until(
            "the sensor's trigger to run in the triggerer", lambda: _assigned_triggerer(stack, run_id), 60
        )
        stack.kill(TRIGGERER, signal.SIGKILL)
        stack.start(TRIGGERER)
        second = stack.wait_until(
            "the restarted triggerer to take over the trigger",
            lambda: _assigned_triggerer(stack, run_id, other_than=first),
            120,
        )
        assert second != first
        frozen_emulator.set_time_scale(1)  # the Workflow goes on

        assert stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success", stack.task_states(DAG_ID, run_id)

    requests = frozen_emulator.requests_log()
    creates = [
        r for r in requests if r["method"] == "POST" and r["raw_path"].endswith(f"/{WORKFLOW}/instances")
    ]
    events = [r for r in requests if r["method"] == "POST" and "/events/" in r["raw_path"]]
    assert len(creates) == 1
    assert 200 <= creates[0]["status"] < 300
    assert len(events) == 1
    assert 200 <= events[0]["status"] < 300
    instances = frozen_emulator.api_client().get(f"/{WORKFLOW}/instances").json()["result"]
    assert len(instances) == 1
    assert instances[0]["status"] == "complete"
    assert len(list(tmp_path.rglob("report.bin"))) == 1
