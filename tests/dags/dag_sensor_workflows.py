"""Test DAGs: each sensor in poke, reschedule and deferrable mode, parameters from ``dag_run.conf``.

Each DAG starts its Workflow instance in an upstream task, so the sensor starts waiting right after
the instance starts (not after ``dag.test()``'s start-up). ``conf``: ``workflow_name``,
``instance_id``, ``step_name``, ``step_type`` (default ``step``), ``terminate`` (terminate the
instance right after starting it), ``event_type`` (for the waitForEvent DAGs).
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)

CONF = "{{ dag_run.conf['%s'] }}"
MODES: dict[str, dict[str, Any]] = {
    "poke": {"mode": "poke", "deferrable": False},
    "reschedule": {"mode": "reschedule", "deferrable": False},
    "deferrable": {"deferrable": True},
}
WAIT = {"poke_interval": 1, "timeout": 60}


@task
def start(**context: Any) -> str:
    """Start the instance named in conf (and terminate it at once if conf says so)."""
    conf = context["dag_run"].conf
    hook = CloudflareWorkflowsHook()
    hook.create_instance(conf["workflow_name"], instance_id=conf["instance_id"])
    if conf.get("terminate"):
        hook.change_instance_status(conf["workflow_name"], conf["instance_id"], "terminate")
    return str(conf["instance_id"])


@task
def send_event(**context: Any) -> None:
    """Send the event the waitForEvent step waits for."""
    conf = context["dag_run"].conf
    CloudflareWorkflowsHook().send_event(
        conf["workflow_name"], conf["instance_id"], conf["event_type"], {"approved_by": "test"}
    )


def step_sensor(task_id: str, mode_kwargs: dict[str, Any], **kwargs: Any) -> CloudflareWorkflowStepSensor:
    arguments: dict[str, Any] = {
        "workflow_name": CONF % "workflow_name",
        "instance_id": CONF % "instance_id",
        "step_name": CONF % "step_name",
        "step_type": "{{ dag_run.conf.get('step_type', 'step') }}",
        **WAIT,
        **mode_kwargs,
        **kwargs,
    }
    return CloudflareWorkflowStepSensor(task_id=task_id, **arguments)


for mode, mode_kwargs in MODES.items():
    with DAG(dag_id=f"sensor_step_{mode}", schedule=None, catchup=False):
        start() >> step_sensor("wait", mode_kwargs)

    with DAG(dag_id=f"sensor_step_soft_fail_{mode}", schedule=None, catchup=False):
        start() >> step_sensor("wait", mode_kwargs, soft_fail=True)

    with DAG(dag_id=f"sensor_event_{mode}", schedule=None, catchup=False):
        # Wait until the Workflow is parked at its waitForEvent, send the event, wait for the step.
        ready = step_sensor("ready", mode_kwargs, step_type="waitForEvent", success_states=("waiting",))
        done = step_sensor("done", mode_kwargs, step_type="waitForEvent")
        start() >> ready >> send_event() >> done

    with DAG(dag_id=f"sensor_instance_{mode}", schedule=None, catchup=False):
        start() >> CloudflareWorkflowInstanceSensor(
            task_id="wait",
            workflow_name=CONF % "workflow_name",
            instance_id=CONF % "instance_id",
            **WAIT,
            **mode_kwargs,
        )
