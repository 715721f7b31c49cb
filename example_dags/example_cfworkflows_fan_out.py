"""
Fan out: one Workflow instance per region with dynamic task mapping, then combine their outputs.

``CloudflareWorkflowCreateInstanceOperator`` is mapped over a list of params; each mapped task derives
its own instance id (dag, run, task and map index), so retries stay idempotent per region. The step
sensor and the output operator are mapped over the created ids, and a final task combines the results.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, Param, task

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowStepOutputOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

with DAG(
    dag_id="example_cfworkflows_fan_out",
    schedule=None,
    catchup=False,
    tags=["example", "cloudflare"],
    params={
        "workflow_name": Param("demo-fan-out", type="string"),
        "regions": Param(["emea", "amer", "apac"], type="array"),
    },
) as dag:

    @task
    def region_params(**context: Any) -> list[dict[str, str]]:
        """One set of Workflow params per region."""
        return [{"region": region} for region in context["params"]["regions"]]

    # [START howto_operator_cloudflare_workflow_fan_out]
    created = CloudflareWorkflowCreateInstanceOperator.partial(
        task_id="create_instance", workflow_name="{{ params.workflow_name }}"
    ).expand(instance_params=region_params())

    waited = CloudflareWorkflowStepSensor.partial(
        task_id="wait_for_summary",
        workflow_name="{{ params.workflow_name }}",
        step_name="summarize",
        deferrable=True,
        poke_interval=2,
        timeout=600,
    ).expand(instance_id=created.output)

    outputs = CloudflareWorkflowStepOutputOperator.partial(
        task_id="fetch_summary", workflow_name="{{ params.workflow_name }}", step_name="summarize"
    ).expand(instance_id=created.output)
    # [END howto_operator_cloudflare_workflow_fan_out]

    @task
    def combine(summaries: list[dict[str, Any]]) -> dict[str, Any]:
        """One result for the whole fan-out."""
        return {"instances": len(summaries), "summaries": list(summaries)}

    waited >> outputs
    combine(outputs.output)
