"""Test DAGs: calls with side effects happen once, across hook retries, task retries and clears.

``send_event_once``: one send-event task with ``retries=1`` (``conf``: ``workflow_name``,
``instance_id``, ``event_type``), so a test can see what its retry does after a lost answer.
``restart_once``: the same for a restart (``conf``: ``workflow_name``, ``instance_id``).
``create_cleared``: ``start`` creates an instance under the derived id; ``crash_once`` creates one and
then fails its odd tries, so its retry must find the same instance (``conf``: ``workflow_name``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowSendEventOperator,
)

CONF = "{{ dag_run.conf['%s'] }}"


class CrashAfterCreateOperator(CloudflareWorkflowCreateInstanceOperator):
    """Creates its instance, then fails on odd tries: a worker lost after the create, in effect."""

    def execute(self, context: Any) -> str:
        instance_id = super().execute(context)
        if context["ti"].try_number % 2 == 1:
            raise RuntimeError(f"crashed after creating {instance_id}")
        return instance_id


with DAG(dag_id="send_event_once", schedule=None, catchup=False):
    CloudflareWorkflowSendEventOperator(
        task_id="approve",
        workflow_name=CONF % "workflow_name",
        instance_id=CONF % "instance_id",
        event_type=CONF % "event_type",
        payload={"approved": True},
        retries=1,
        retry_delay=timedelta(0),
    )

with DAG(dag_id="restart_once", schedule=None, catchup=False):
    CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="restart",
        workflow_name=CONF % "workflow_name",
        instance_id=CONF % "instance_id",
        action="restart",
        retries=1,
        retry_delay=timedelta(0),
    )

with DAG(dag_id="create_cleared", schedule=None, catchup=False):
    CloudflareWorkflowCreateInstanceOperator(task_id="start", workflow_name=CONF % "workflow_name")
    CrashAfterCreateOperator(
        task_id="crash_once", workflow_name=CONF % "workflow_name", retries=1, retry_delay=timedelta(0)
    )
