"""
A deferred create-and-wait marked failed before its trigger ever ran still terminates the instance it
created (issue 16 item 4), on separate scheduler, dag-processor, triggerer and api-server processes.

The triggerer is stopped before the run starts, so the kill certainly lands before the trigger's first
run (what a kill in the first second after the deferral meets: the triggerer picks triggers up once per
loop), without depending on timing.
"""

from __future__ import annotations

import json
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from scripts.airflow_stack import TRIGGERER, AirflowStack
from tests.conftest import TEST_DAGS

pytestmark = pytest.mark.multiprocess
DAG_ID = "kill_while_deferred"
TASK = "run"
WORKFLOW = "kill-me"


@pytest.fixture
def emulator() -> Iterator[Any]:
    """The emulator (its own process) with a Workflow that runs for an hour."""
    from airflow_provider_cfworkflows.emulator.server import run_emulator_process

    with run_emulator_process(None) as emulator:
        emulator.put_workflow({"name": WORKFLOW, "steps": [{"name": "work", "duration": 3600}]})
        yield emulator


def _status(emulator: Any, instance_id: str) -> str:
    with emulator.api_client() as api:
        return str(api.get(f"/{WORKFLOW}/instances/{instance_id}").json()["result"]["status"])


def test_marking_a_deferred_task_failed_before_its_trigger_runs_terminates_its_instance(
    emulator: Any, tmp_path: Path
) -> None:
    dags = tmp_path / "dags"
    dags.mkdir()
    shutil.copy2(TEST_DAGS / "dag_kill_while_deferred.py", dags)
    conn = {
        "conn_type": "cloudflare_workflows",
        "login": emulator.account_id,
        "password": emulator.api_token,
        "host": emulator.api_base,
    }
    with AirflowStack.running(
        dags_folder=dags, env={"AIRFLOW_CONN_CLOUDFLARE_DEFAULT": json.dumps(conn)}
    ) as stack:
        stack.kill(TRIGGERER, signal.SIGKILL)
        stack.wait_for_dag(DAG_ID)
        stack.unpause(DAG_ID)
        run_id = stack.trigger(DAG_ID)
        stack.wait_for_task_state(DAG_ID, run_id, TASK, "deferred")
        (instance,) = [r["id"] for r in emulator.api_client().get(f"/{WORKFLOW}/instances").json()["result"]]
        assert _status(emulator, instance) == "running"

        answer = stack.api(
            "PATCH", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{TASK}", json={"new_state": "failed"}
        )
        assert answer.status_code == 200, answer.text

        stack.wait_until(
            "the instance to be terminated",
            lambda: True if _status(emulator, instance) == "terminated" else None,
            60,
        )
    terminates = [r for r in emulator.requests_log() if r["endpoint"] == "change_status"]
    assert [r["body"] for r in terminates] == [{"status": "terminate"}]
