"""
Chain Airflow and Cloudflare: start a Workflow, approve it from Airflow, store its binary result.

1. ``CloudflareWorkflowCreateInstanceOperator`` starts an instance of ``demo-pipeline`` (its id is
   derived from the task run, so a retried task never starts a second instance).
2. ``CloudflareWorkflowStepSensor`` (deferrable) waits until the Workflow reaches its
   ``step.waitForEvent("approval")`` step.
3. ``CloudflareWorkflowSendEventOperator`` sends the ``approval`` event, and the Workflow goes on.
4. A second deferrable sensor waits for the ``build report`` step.
5. ``CloudflareWorkflowStepOutputOperator`` streams the step's binary output (a ReadableStream in the
   Workflow) to object storage: ``file://`` here, ``s3://`` or R2 alike.
6. A downstream task reads the stored file back and checks its checksum.

The output location comes from the ``output_base`` param (default: ``$CFWORKFLOWS_EXAMPLE_OUTPUT_BASE``,
else ``file:///tmp/cfworkflows-example``). ``bash scripts/demo.sh`` runs this DAG end to end.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

from airflow.sdk import DAG, ObjectStoragePath, Param, task

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowSendEventOperator,
    CloudflareWorkflowStepOutputOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

WORKFLOW = "{{ params.workflow_name }}"
INSTANCE = "{{ ti.xcom_pull(task_ids='create_instance') }}"
RUN_FOLDER = "{{ dag.dag_id }}/{{ run_id | replace(':', '-') | replace('+', '-') }}"

with DAG(
    dag_id="example_cfworkflows_pipeline",
    schedule=None,
    catchup=False,
    tags=["example", "cloudflare"],
    params={
        "workflow_name": Param("demo-pipeline", type="string"),
        "output_base": Param(
            os.environ.get("CFWORKFLOWS_EXAMPLE_OUTPUT_BASE", "file:///tmp/cfworkflows-example"),
            type="string",
            description="Where step outputs are stored (file://, s3://conn@bucket/prefix, ...)",
        ),
    },
) as dag:
    # [START howto_operator_cloudflare_workflow_create_instance]
    create_instance = CloudflareWorkflowCreateInstanceOperator(
        task_id="create_instance",
        workflow_name=WORKFLOW,
        instance_params={"requested_by": "airflow", "run_id": "{{ run_id }}"},
    )
    # [END howto_operator_cloudflare_workflow_create_instance]

    wait_for_approval_step = CloudflareWorkflowStepSensor(
        task_id="wait_for_approval_step",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        step_name="approval",
        step_type="waitForEvent",
        # "waiting": the Workflow is parked at step.waitForEvent and ready for the event.
        success_states=("waiting", "complete"),
        deferrable=True,
        poke_interval=2,
        timeout=900,
    )

    # [START howto_operator_cloudflare_workflow_send_event]
    approve = CloudflareWorkflowSendEventOperator(
        task_id="approve",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        event_type="approval",
        payload={"approved": True, "approved_by": "airflow", "run_id": "{{ run_id }}"},
    )
    # [END howto_operator_cloudflare_workflow_send_event]

    wait_for_report = CloudflareWorkflowStepSensor(
        task_id="wait_for_report",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        step_name="build report",
        deferrable=True,
        poke_interval=2,
        timeout=900,
    )

    # [START howto_operator_cloudflare_workflow_step_output_storage]
    store_report = CloudflareWorkflowStepOutputOperator(
        task_id="store_report",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        step_name="build report",
        output_path="{{ params.output_base }}/" + RUN_FOLDER + "/report.bin",
    )
    # [END howto_operator_cloudflare_workflow_step_output_storage]

    @task
    def check_report(path: str, **context: Any) -> dict[str, object]:
        """Read the stored report back and compare it with the checksum the operator recorded."""
        digest = hashlib.sha256()
        size = 0
        with ObjectStoragePath(path).open("rb") as report:
            while chunk := report.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        expected = context["ti"].xcom_pull(task_ids="store_report", key="sha256")
        if digest.hexdigest() != expected:
            raise ValueError(f"{path} does not match the checksum recorded while storing it")
        print(f"{path}: {size} bytes, sha256 {expected}")
        return {"path": path, "size_bytes": size, "sha256": expected}

    (create_instance >> wait_for_approval_step >> approve >> wait_for_report >> store_report)
    check_report(store_report.output)
