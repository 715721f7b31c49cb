"""Test DAGs: approvals answered in Airflow and sent to a waiting Workflow instance.

``conf``: ``workflow_name`` and ``instance_id`` (``approval_rejected`` and ``approval_ended`` also take
``other_instance_id``). Each approval waits for the event type ``approval``.

- ``approval_form``: a form (``params``); then a sensor waits for the instance to complete.
  ``retries=1``, so a test can see what a retry does after a lost answer.
- ``approval_rejected``: ``reject`` skips its downstream task; ``reject_fails`` has ``fail_on_reject``.
- ``approval_timeout``: nobody answers within a second; the defaults go to the instance.
- ``approval_ended``: ``already_ended`` asks about an instance that has ended; ``ends_while_deciding``
  about one that ends while the person decides.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG, Param, task

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowApprovalOperator
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowInstanceSensor

CONF = "{{ dag_run.conf['%s'] }}"
WORKFLOW = CONF % "workflow_name"
INSTANCE = CONF % "instance_id"
OTHER_INSTANCE = CONF % "other_instance_id"


@task
def after_approval() -> str:
    return "ran"


with DAG(dag_id="approval_form", schedule=None, catchup=False):
    approve = CloudflareWorkflowApprovalOperator(
        task_id="approve",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        event_type="approval",
        params={
            "note": Param("", type="string", description="Why"),
            "limit": Param(100, type="integer", minimum=0),
        },
        retries=1,
        retry_delay=timedelta(0),
    )
    done = CloudflareWorkflowInstanceSensor(
        task_id="done", workflow_name=WORKFLOW, instance_id=INSTANCE, poke_interval=1, timeout=120
    )
    approve >> done

with DAG(dag_id="approval_rejected", schedule=None, catchup=False):
    reject = CloudflareWorkflowApprovalOperator(
        task_id="reject", workflow_name=WORKFLOW, instance_id=INSTANCE, event_type="approval"
    )
    reject >> after_approval()
    CloudflareWorkflowApprovalOperator(
        task_id="reject_fails",
        workflow_name=WORKFLOW,
        instance_id=OTHER_INSTANCE,
        event_type="approval",
        fail_on_reject=True,
    )

with DAG(dag_id="approval_timeout", schedule=None, catchup=False):
    CloudflareWorkflowApprovalOperator(
        task_id="approve",
        workflow_name=WORKFLOW,
        instance_id=INSTANCE,
        event_type="approval",
        subject="Release the report?",
        defaults="Approve",
        params={"note": Param("nobody objected", type="string")},
        response_timeout=timedelta(seconds=1),
    )

with DAG(dag_id="approval_ended", schedule=None, catchup=False):
    for task_id, instance_id in (("already_ended", INSTANCE), ("ends_while_deciding", OTHER_INSTANCE)):
        CloudflareWorkflowApprovalOperator(
            task_id=task_id, workflow_name=WORKFLOW, instance_id=instance_id, event_type="approval"
        )
