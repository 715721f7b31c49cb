"""Test DAGs: the create-and-wait operator in the worker and deferred, parameters from ``dag_run.conf``.

``create_and_wait_<mode>`` (``conf``: ``workflow_name``, ``instance_id``): the wait times out after a few
seconds, and the task has retries, so a test can see that a timeout (or an errored instance) fails it
without retry.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator

CONF = "{{ dag_run.conf['%s'] }}"
WAIT_TIMEOUT_SECONDS = 4

for mode, deferrable in (("sync", False), ("deferrable", True)):
    with DAG(dag_id=f"create_and_wait_{mode}", schedule=None, catchup=False):
        CloudflareWorkflowCreateInstanceOperator(
            task_id="run",
            workflow_name=CONF % "workflow_name",
            instance_id=CONF % "instance_id",
            wait_for_completion=True,
            deferrable=deferrable,
            poll_interval=0.2,
            timeout=WAIT_TIMEOUT_SECONDS,
            retries=2,
            retry_delay=timedelta(0),
        )

# ``retry_from_failure_<mode>`` (``conf``: ``workflow_name``): a derived id, one retry that restarts the
# instance from its failed step.
for mode, deferrable in (("sync", False), ("deferrable", True)):
    with DAG(dag_id=f"retry_from_failure_{mode}", schedule=None, catchup=False):
        CloudflareWorkflowCreateInstanceOperator(
            task_id="run",
            workflow_name=CONF % "workflow_name",
            wait_for_completion=True,
            retry_from_failure=True,
            deferrable=deferrable,
            poll_interval=0.2,
            timeout=120,
            retries=1,
            retry_delay=timedelta(0),
        )
