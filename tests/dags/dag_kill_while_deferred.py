"""Test DAG of ``tests/multiprocess/test_kill_while_deferred.py``: a deferrable create-and-wait on the
Workflow ``kill-me`` (which the test defines to run for an hour), so that a user can kill it while it is
deferred."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator

WORKFLOW = "kill-me"

with DAG(dag_id="kill_while_deferred", schedule=None, catchup=False):
    CloudflareWorkflowCreateInstanceOperator(
        task_id="run",
        workflow_name=WORKFLOW,
        wait_for_completion=True,
        deferrable=True,
        poll_interval=1,
        timeout=3600,
    )
