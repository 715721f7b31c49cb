"""The provider's plugin: registered for every Airflow component, and its listener terminates the
instance of a deferred task killed by hand (the real multi-process case:
``tests/multiprocess/test_kill_while_deferred.py``)."""

from __future__ import annotations

import time
import uuid
from importlib.metadata import entry_points
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.plugins.workflows import CloudflareWorkflowsPlugin, DeferredKillListener
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)

pytestmark = pytest.mark.integration


def test_the_plugin_is_an_airflow_plugins_entry_point():
    (entry,) = [e for e in entry_points(group="airflow.plugins") if e.name == "cloudflare_workflows"]
    assert entry.load() is CloudflareWorkflowsPlugin
    assert [type(listener) for listener in CloudflareWorkflowsPlugin.listeners] == [DeferredKillListener]


def stored_trigger(trigger: Any) -> int:
    """Save ``trigger`` as the triggerer would find it (a row of the metadata DB); its id."""
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        row = Trigger.from_object(trigger)
        session.add(row)
        session.flush()
        return int(row.id)


def killed_task(trigger_id: int | None) -> SimpleNamespace:
    """A task instance as the API server hands it to listeners after a user set its state."""
    return SimpleNamespace(trigger_id=trigger_id, dag_id="d", task_id="t", run_id="r")


def status(name: str, instance_id: str) -> str:
    return str(CloudflareWorkflowsHook().get_instance(name, instance_id, simple=True)["status"])


def test_the_listener_terminates_only_an_instance_its_deferred_task_created(airflow_db, cloudflare_conn):
    name = f"kill-{uuid.uuid4().hex[:8]}"
    cloudflare_conn.put_workflow({"name": name, "steps": [{"name": "work", "duration": 3600}]})
    hook = CloudflareWorkflowsHook()
    for instance_id in ("owned", "found", "stepped"):
        hook.create_instance(name, instance_id=instance_id)
    common = {"workflow_name": name, "success_states": ["complete"], "failure_states": ["errored"]}
    common |= {"end_time": time.time() + 3600, "poll_interval": 1}
    owned = stored_trigger(
        CloudflareWorkflowInstanceTrigger(instance_id="owned", terminate_on_kill=True, **common)
    )
    found = stored_trigger(CloudflareWorkflowInstanceTrigger(instance_id="found", **common))
    stepped = stored_trigger(CloudflareWorkflowStepTrigger(instance_id="stepped", step_name="work", **common))
    listener = DeferredKillListener()

    listener.on_task_instance_success(None, killed_task(found))
    listener.on_task_instance_skipped(None, killed_task(stepped))
    listener.on_task_instance_failed(None, killed_task(None), "a worker's task instance: no trigger")
    listener.on_task_instance_failed(None, killed_task(owned), "marked failed")

    deadline = time.monotonic() + 30
    while status(name, "owned") != "terminated":
        assert time.monotonic() < deadline, "the owned instance was not terminated"
        time.sleep(0.05)
    assert (status(name, "found"), status(name, "stepped")) == ("running", "running")
    changes = [r["raw_path"] for r in cloudflare_conn.requests_log() if r["endpoint"] == "change_status"]
    assert len(changes) == 1
    assert changes[0].endswith("/instances/owned/status")
