"""Test DAGs for the chaining operators: a create that "crashes" after creating, and waits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowCreateInstancesOperator,
)

CONF = "{{ dag_run.conf['%s'] }}"


class CrashAfterCreateOperator(CloudflareWorkflowCreateInstanceOperator):
    """Dies on its first try right after the instance was created, as a worker crash would."""

    def execute(self, context: Any) -> str:
        instance_id = super().execute(context)
        if context["ti"].try_number == 1:
            raise RuntimeError("simulated worker crash after the create call")
        return instance_id


with DAG(dag_id="chaining_create_crash_retry", schedule=None, catchup=False):
    CrashAfterCreateOperator(
        task_id="create_instance",
        workflow_name=CONF % "workflow_name",
        instance_params={"run": "{{ run_id }}"},
        retries=1,
        retry_delay=timedelta(seconds=0),
    )

for deferrable in (False, True):
    with DAG(
        dag_id=f"chaining_create_and_wait_{'deferrable' if deferrable else 'sync'}",
        schedule=None,
        catchup=False,
    ):
        CloudflareWorkflowCreateInstanceOperator(
            task_id="create_instance",
            workflow_name=CONF % "workflow_name",
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=1,
            timeout=120,
        )

with DAG(dag_id="chaining_batch_and_terminate", schedule=None, catchup=False):
    batch = CloudflareWorkflowCreateInstancesOperator(
        task_id="create_instances",
        workflow_name=CONF % "workflow_name",
        instances=[{"params": {"n": n}} for n in range(3)] + [{"instance_id": "explicit-id"}],
    )
    terminate = CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="terminate_explicit",
        workflow_name=CONF % "workflow_name",
        instance_id="explicit-id",
        action="terminate",
    )
    batch >> terminate
