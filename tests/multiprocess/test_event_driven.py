"""
The event-driven example on separate scheduler, dag-processor, triggerer and api-server processes: an
instance of the demo Workflow completing in the emulator starts the DAG scheduled on its asset, once,
and the DAG reads the instance id and output from the triggering asset event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from airflow_provider_cfworkflows.emulator.server import run_emulator_process
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from scripts.airflow_stack import AirflowStack
from tests.conftest import EXAMPLE_DAGS
from tests.helpers import connection_json

pytestmark = pytest.mark.multiprocess
DAG_ID = "example_cfworkflows_event_driven"
TASK_ID = "read_completed_instances"
POLL_INTERVAL = 2

RUNS = "SELECT run_id, state, run_type FROM dag_run WHERE dag_id = ?"
# The watcher's memory, written after each of its looks: proof that it runs and has looked.
MEMORY = """
    SELECT asset_state_store.value, asset_state_store.updated_at FROM asset_state_store
    JOIN asset ON asset.id = asset_state_store.asset_id
    WHERE asset.uri = 'cfworkflows://cloudflare_default/demo-pipeline'
"""
XCOM = "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = ? AND key = 'return_value'"


def test_a_workflow_completion_starts_the_dag_once(monkeypatch: pytest.MonkeyPatch) -> None:
    with run_emulator_process(None) as emulator:
        conn = connection_json(emulator.api_base)
        monkeypatch.setenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT", conn)
        env = {
            "AIRFLOW_CONN_CLOUDFLARE_DEFAULT": conn,
            "CFWORKFLOWS_EXAMPLE_POLL_INTERVAL": str(POLL_INTERVAL),
        }
        with AirflowStack.running(dags_folder=EXAMPLE_DAGS, env=env) as stack:
            stack.wait_for_dag(DAG_ID)
            stack.unpause(DAG_ID)
            stack.wait_until("the watcher's first look", lambda: stack.query(MEMORY) or None, 180)

            hook = CloudflareWorkflowsHook()
            instance_id = hook.create_instance("demo-pipeline", instance_id="completes-once")["id"]
            hook.send_event("demo-pipeline", instance_id, "approval", {"approved_by": "test"})

            (run_id, _state, run_type), *more = stack.wait_until(
                "a run of the event-driven DAG", lambda: stack.query(RUNS, DAG_ID) or None, 300
            )
            assert run_type == "asset_triggered"
            assert stack.wait_for_run(DAG_ID, run_id, timeout=300) == "success", stack.task_states(
                DAG_ID, run_id
            )
            # Two more looks of the watcher after the run (each rewrites its memory): still one run.
            for _ in range(2):
                _wait_for_look(stack, after=stack.query(MEMORY)[0][1])
            runs = stack.query(RUNS, DAG_ID)
            (value,) = stack.query(XCOM, DAG_ID, run_id, TASK_ID)[0]

    assert more == []
    assert len(runs) == 1
    assert json.loads(value) == [{"instance_id": "completes-once", "rows": 14}]


def _wait_for_look(stack: AirflowStack, after: Any) -> None:
    """Wait until the watcher rewrites its memory (``updated_at`` differs from ``after``)."""
    stack.wait_until("the watcher's next look", lambda: stack.query(MEMORY)[0][1] != after or None, 120)
