"""
The provider's Airflow plugin: a task-instance listener that terminates the instance of a deferred
create-and-wait task that a user marks failed, success or skipped *before its trigger ever ran*.

Why a listener: Airflow calls ``BaseTrigger.on_kill`` only for a trigger running in a triggerer (it
cancels it when the task leaves the deferred state; ``airflow.jobs.triggerer_job_runner``), and a
deferred task has no worker process whose ``on_kill`` could run. A triggerer picks new triggers up
once per loop, about every second, and drops a trigger whose task is no longer deferred before it
starts (``Trigger.clean_unused``, and ``build_trigger_workloads`` skips a trigger without a deferred
task): a kill in that window reached nothing, and the instance ran on. The API server, which records
the user's change of state, calls the task-instance listeners (``on_task_instance_failed`` /
``_success`` / ``_skipped``) with the task instance, whose ``trigger_id`` still names the trigger; this
listener reads that trigger and, if it is a :class:`~.triggers.workflows.CloudflareWorkflowInstanceTrigger`
with ``terminate_on_kill``, runs that trigger's own :meth:`on_kill` (one ``PATCH … terminate``), in a
thread, so the user's request does not wait for Cloudflare. When the trigger was already running, the
triggerer calls ``on_kill`` too: that second terminate meets a 409 that the hook accepts once a GET shows
the instance terminated. A clear of a deferred task calls no listener; there only the triggerer's
``on_kill`` acts (see the README's "Retries and side effects").

Everywhere else (workers, the triggerer, the scheduler) the listener finds no ``trigger_id`` and does
nothing; it imports nothing heavy until it acts.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from airflow.listeners import hookimpl
from airflow.plugins_manager import AirflowPlugin

log = logging.getLogger(__name__)


def _instance_trigger_kwargs(task_instance: Any) -> dict[str, Any] | None:
    """The kwargs of the task's instance trigger when it should terminate on kill, else None."""
    trigger_id = getattr(task_instance, "trigger_id", None)
    if trigger_id is None:  # not deferred, or a worker's RuntimeTaskInstance
        return None
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowInstanceTrigger

    classpath = (
        f"{CloudflareWorkflowInstanceTrigger.__module__}.{CloudflareWorkflowInstanceTrigger.__qualname__}"
    )
    with create_session() as session:
        trigger = session.get(Trigger, trigger_id)
        if trigger is None or trigger.classpath != classpath:
            return None
        kwargs = dict(trigger.kwargs)
    return kwargs if kwargs.get("terminate_on_kill") else None


def _terminate(kwargs: dict[str, Any], task: str) -> None:
    from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowInstanceTrigger

    try:
        asyncio.run(CloudflareWorkflowInstanceTrigger(**kwargs).on_kill())
    except Exception:
        log.exception(
            "Could not terminate instance %r of the killed task %s.", kwargs.get("instance_id"), task
        )


class DeferredKillListener:
    """Terminates the instance of a deferred create-and-wait task that a user kills (see the module)."""

    def _killed(self, task_instance: Any) -> None:
        try:
            kwargs = _instance_trigger_kwargs(task_instance)
        except Exception:
            log.exception("Could not read the trigger of the killed task %s.", task_instance)
            return
        if kwargs is None:
            return
        task = f"{task_instance.dag_id}.{task_instance.task_id} ({task_instance.run_id})"
        log.warning(
            "Task %s was deferred waiting for instance %r of workflow %r, which it created, when its state "
            "was set by hand: terminating the instance (terminate_on_kill=True).",
            task,
            kwargs.get("instance_id"),
            kwargs.get("workflow_name"),
        )
        threading.Thread(
            target=_terminate, args=(kwargs, task), name="cfworkflows-terminate-on-kill", daemon=True
        ).start()

    @hookimpl
    def on_task_instance_failed(self, previous_state: Any, task_instance: Any, error: Any) -> None:
        self._killed(task_instance)

    @hookimpl
    def on_task_instance_success(self, previous_state: Any, task_instance: Any) -> None:
        self._killed(task_instance)

    @hookimpl
    def on_task_instance_skipped(self, previous_state: Any, task_instance: Any) -> None:
        self._killed(task_instance)


class CloudflareWorkflowsPlugin(AirflowPlugin):
    """The provider's plugin: :class:`DeferredKillListener`."""

    name = "cloudflare_workflows"
    listeners = [DeferredKillListener()]
