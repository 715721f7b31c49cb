"""Test DAG: the create operator with ``openlineage_inject_parent_info`` (conf: ``instance_id``)."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator

with DAG(dag_id="lineage_parent_info", schedule=None, catchup=False):
    CloudflareWorkflowCreateInstanceOperator(
        task_id="create",
        workflow_name="demo-fan-out",
        instance_id="{{ dag_run.conf['instance_id'] }}",
        instance_params={"region": "emea", "openlineage": {"keep": "me"}},
        openlineage_inject_parent_info=True,
    )
