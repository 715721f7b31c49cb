"""Test DAGs: each sensor in poke, reschedule and deferrable mode, parameters from dag_run.conf."""

from __future__ import annotations

from airflow.sdk import DAG

from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)

CONF = "{{ dag_run.conf['%s'] }}"
MODES = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}

for mode, mode_kwargs in MODES.items():
    with DAG(dag_id=f"sensor_step_{mode}", schedule=None, catchup=False):
        CloudflareWorkflowStepSensor(
            task_id="wait",
            workflow_name=CONF % "workflow_name",
            instance_id=CONF % "instance_id",
            step_name=CONF % "step_name",
            step_type="{{ dag_run.conf.get('step_type', 'step') }}",
            poke_interval=1,
            timeout=90,
            soft_fail=False,
            **mode_kwargs,
        )
    with DAG(dag_id=f"sensor_step_soft_fail_{mode}", schedule=None, catchup=False):
        CloudflareWorkflowStepSensor(
            task_id="wait",
            workflow_name=CONF % "workflow_name",
            instance_id=CONF % "instance_id",
            step_name=CONF % "step_name",
            poke_interval=1,
            timeout=90,
            soft_fail=True,
            **mode_kwargs,
        )
    with DAG(dag_id=f"sensor_instance_{mode}", schedule=None, catchup=False):
        CloudflareWorkflowInstanceSensor(
            task_id="wait",
            workflow_name=CONF % "workflow_name",
            instance_id=CONF % "instance_id",
            poke_interval=1,
            timeout=90,
            **mode_kwargs,
        )
