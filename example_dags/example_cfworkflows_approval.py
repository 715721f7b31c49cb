"""
Approve a Cloudflare Workflow in Airflow: a person answers under Required Actions, the Workflow goes on.

1. ``CloudflareWorkflowCreateInstanceOperator`` starts an instance of ``demo-payout``, which computes a
   payout and then waits in ``step.waitForEvent({type: "payout_approval"})``.
2. ``CloudflareWorkflowStepSensor`` (deferrable) waits until the Workflow is there, so the question can
   show what it computed. (Without it the answer is still delivered: an event sent early is kept.)
3. ``CloudflareWorkflowApprovalOperator`` asks in Airflow (Browse → Required Actions, or the REST API):
   Approve or Reject, with a note. The question shows the instance, its dashboard link and the payout the
   Workflow computed. The answer goes to the instance as the ``payout_approval`` event, once; a reject is
   sent too (the Workflow decides what it means) and skips the downstream tasks here.
4. ``CloudflareWorkflowInstanceSensor`` (deferrable) waits until the Workflow has finished.

On Airflow 3.3 the approval task waits in ``awaiting_input``: no worker slot, no triggerer.
``bash scripts/demo.sh --airflow`` runs this DAG and answers it through the REST API.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowApprovalOperator,
    CloudflareWorkflowCreateInstanceOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)

WORKFLOW = "{{ params.workflow_name }}"
INSTANCE = "{{ ti.xcom_pull(task_ids='create_instance') }}"

with DAG(
    dag_id="example_cfworkflows_approval",
    schedule=None,
    catchup=False,
    tags=["example", "cloudflare"],
    params={"workflow_name": Param("demo-payout", type="string")},
) as dag:
    create_instance = CloudflareWorkflowCreateInstanceOperator(
        task_id="create_instance",
        workflow_name=WORKFLOW,
        instance_params={"requested_by": "airflow", "run_id": "{{ run_id }}"},
    )

    wait_for_question = CloudflareWorkflowStepSensor(
        task_id="wait_for_question",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        step_name="approval",
        step_type="waitForEvent",
        success_states=("waiting", "complete"),  # "waiting": parked at step.waitForEvent
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )

    # [START howto_operator_cloudflare_workflow_approval]
    approve_payout = CloudflareWorkflowApprovalOperator(
        task_id="approve_payout",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        event_type="payout_approval",
        subject="Release the payout computed by {{ params.workflow_name }}?",
        params={"note": Param("", type="string", description="Sent to the Workflow with the answer")},
        response_timeout=timedelta(days=2),
    )
    # [END howto_operator_cloudflare_workflow_approval]

    wait_for_payout = CloudflareWorkflowInstanceSensor(
        task_id="wait_for_payout",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        deferrable=True,
        poke_interval=2,
        timeout=600,
    )

    create_instance >> wait_for_question >> approve_payout >> wait_for_payout
