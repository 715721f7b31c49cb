"""
Wait for a Cloudflare Workflow step, fetch its full output, and hand it to the next task.

Shows the core job: ``CloudflareWorkflowStepSensor`` (reschedule mode: no worker slot held while
waiting) -> ``CloudflareWorkflowStepOutputOperator`` (the full, untruncated JSON output through the
``/step`` endpoint, returned as XCom) -> a downstream ``@task`` that uses it.

Trigger it with ``{"instance_id": "<an instance of the demo-pipeline workflow>"}``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

with DAG(
    dag_id="example_cfworkflows_step_output",
    schedule=None,
    catchup=False,
    tags=["example", "cloudflare"],
    params={
        "workflow_name": Param("demo-pipeline", type="string"),
        "instance_id": Param("demo-instance", type="string", description="The Workflow instance to read"),
    },
) as dag:
    # [START howto_sensor_cloudflare_workflow_step]
    wait_for_prepare = CloudflareWorkflowStepSensor(
        task_id="wait_for_prepare",
        workflow_name="{{ params.workflow_name }}",
        instance_id="{{ params.instance_id }}",
        step_name="prepare",  # the name as written in the Workflow code; "prepare-1" works too
        mode="reschedule",
        poke_interval=2,
        timeout=600,
    )
    # [END howto_sensor_cloudflare_workflow_step]

    # [START howto_operator_cloudflare_workflow_step_output_xcom]
    fetch_prepare_output = CloudflareWorkflowStepOutputOperator(
        task_id="fetch_prepare_output",
        workflow_name="{{ params.workflow_name }}",
        instance_id="{{ params.instance_id }}",
        step_name="prepare",
    )
    # [END howto_operator_cloudflare_workflow_step_output_xcom]

    @task
    def count_rows(output: dict[str, Any]) -> int:
        """Use the step's output like any other upstream value."""
        rows = output["rows"]
        print(f"The prepare step produced {len(rows)} rows.")
        return len(rows)

    wait_for_prepare >> fetch_prepare_output
    count_rows(fetch_prepare_output.output)
