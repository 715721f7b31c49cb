"""Test DAGs: each sensor on its own (no upstream task makes a call), and the step-output operator alone.

For tasks whose first API call must go wrong (an unreachable API, a bad account id, a server that
answers too slowly). ``conf``: ``workflow_name``, ``instance_id``, ``step_name`` (step sensor and
output operator), ``account_id`` (optional: the connection's login when empty).
DAG ids: ``alone_<step|instance>_<mode>`` (timeout ``LONG_TIMEOUT`` s) and
``alone_<step|instance>_<mode>_short`` (timeout ``SHORT_TIMEOUT`` s), mode ``poke``, ``reschedule`` or
``deferrable``; ``alone_step_output``.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)

SHORT_TIMEOUT = 6
LONG_TIMEOUT = 3600
CONF = "{{ dag_run.conf['%s'] }}"
COMMON = {
    "workflow_name": CONF % "workflow_name",
    "instance_id": CONF % "instance_id",
    "account_id": "{{ dag_run.conf.get('account_id', '') }}",
}
MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}

for mode, mode_kwargs in MODES.items():
    for suffix, timeout in (("", LONG_TIMEOUT), ("_short", SHORT_TIMEOUT)):
        wait = {"poke_interval": 1, "timeout": timeout, **mode_kwargs, **COMMON}
        with DAG(dag_id=f"alone_step_{mode}{suffix}", schedule=None, catchup=False):
            CloudflareWorkflowStepSensor(task_id="wait", step_name=CONF % "step_name", **wait)
        with DAG(dag_id=f"alone_instance_{mode}{suffix}", schedule=None, catchup=False):
            CloudflareWorkflowInstanceSensor(task_id="wait", **wait)

with DAG(dag_id="alone_step_output", schedule=None, catchup=False):
    CloudflareWorkflowStepOutputOperator(task_id="output", step_name=CONF % "step_name", **COMMON)
