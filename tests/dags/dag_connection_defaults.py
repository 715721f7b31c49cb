"""Test DAG: the connection and the account come only from ``default_args`` (no ``cloudflare_default``).

Create an instance, wait until it waits for its event, send the event, then a mapped fan-out of step
sensors (one step completes, one errors). ``conf``: ``workflow_name``, ``event_type``, ``steps`` (the
step names for the fan-out).
"""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowSendEventOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor

CONF = "{{ dag_run.conf['%s'] }}"
CONN_ID = "cf_media"
ACCOUNT_ID = "0123456789abcdef0123456789abcdef"

with DAG(
    dag_id="connection_from_default_args",
    schedule=None,
    catchup=False,
    default_args={"cloudflare_conn_id": CONN_ID, "account_id": ACCOUNT_ID},
):
    create = CloudflareWorkflowCreateInstanceOperator(task_id="create", workflow_name=CONF % "workflow_name")
    ready = CloudflareWorkflowStepSensor(
        task_id="ready",
        workflow_name=CONF % "workflow_name",
        instance_id=create.output,
        step_name=CONF % "event_type",
        step_type="waitForEvent",
        success_states=("waiting",),
        poke_interval=0.5,
        timeout=60,
    )
    send = CloudflareWorkflowSendEventOperator(
        task_id="send",
        workflow_name=CONF % "workflow_name",
        instance_id=create.output,
        event_type=CONF % "event_type",
        payload={"approved": True},
    )
    steps = CloudflareWorkflowStepSensor.partial(
        task_id="steps",
        workflow_name=CONF % "workflow_name",
        instance_id=create.output,
        poke_interval=0.5,
        timeout=60,
    ).expand(step_name=["publish", "notify"])
    create >> ready >> send >> steps
