"""Step output through XCom: the operator returns the JSON output, a downstream task receives it whole."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator


@dag(
    dag_id="output_xcom",
    schedule=None,
    catchup=False,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=0)},
)
def output_xcom() -> None:
    fetch = CloudflareWorkflowStepOutputOperator(
        task_id="fetch_output",
        workflow_name="{{ dag_run.conf['workflow_name'] }}",
        instance_id="{{ dag_run.conf['instance_id'] }}",
        step_name="{{ dag_run.conf['step_name'] }}",
    )

    @task
    def consume(value: Any) -> dict[str, Any]:
        return {"type": type(value).__name__, "json_length": len(json.dumps(value)), "value": value}

    consume(fetch.output)


output_xcom()
