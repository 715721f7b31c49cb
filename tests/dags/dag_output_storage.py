"""Step output to object storage: the operator writes it to ``output_path`` and returns the path."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Asset, ObjectStoragePath, dag, task

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator

STEP_OUTPUT_ASSET = Asset(name="cfwf_test_step_output", uri="file:///cfwf-test/step-output")


@dag(dag_id="output_storage", schedule=None, catchup=False)
def output_storage() -> None:
    fetch = CloudflareWorkflowStepOutputOperator(
        task_id="fetch_output",
        workflow_name="{{ dag_run.conf['workflow_name'] }}",
        instance_id="{{ dag_run.conf['instance_id'] }}",
        step_name="{{ dag_run.conf['step_name'] }}",
        output_path="{{ dag_run.conf['output_path'] }}",
        outlets=[STEP_OUTPUT_ASSET],
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

    @task
    def describe(path: str) -> dict[str, Any]:
        """What a downstream task sees: a path string it can open with ObjectStoragePath."""
        return {"path": path, "size": ObjectStoragePath(path).size()}

    describe(fetch.output)


output_storage()
