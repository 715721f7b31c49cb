"""The components of the fault matrix: every public operator and sensor, run as Airflow runs them.

Each component prepares what it needs on the emulator (through the plain API client, never through the
connection under test), names the one request a fault hits, and runs: ``execute`` with a task-instance
context; for a deferrable task ``execute`` until it defers, then the fault, then its trigger in an event
loop, then the method it resumes in with the trigger's event (what the triggerer and the worker do).
What each run left behind (instances, events, restarts, files) is read back afterwards. A *retried*
component runs the tries Airflow would (:func:`run_tries`): with Airflow's task state store, each error
that allows a retry starts the next try.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowCreateInstancesOperator,
    CloudflareWorkflowDeleteInstancesOperator,
    CloudflareWorkflowSendEventOperator,
    CloudflareWorkflowStepOutputOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import (
    CloudflareWorkflowInstanceSensor,
    CloudflareWorkflowStepSensor,
)
from tests.fakes import FakeTaskStateStore

INSTANT = "rel-instant"  # done as soon as it is created
SLOW = "rel-slow"  # running until the emulated clock moves 1 s
GATE = "rel-gate"  # waits for the "approval" event
FLAKY = "rel-flaky"  # errors at its middle step until it is restarted
INSTANCE = "rel-instance"
BATCH_SIZE = 3
DELETED = ("rel-delete-a", "rel-delete-b")
STREAM_STEP = "blob-1"
# The sensors' and waits' own timeout (unless a fault sets another): every wait ends by then, whatever
# the server does.
WAIT_TIMEOUT = 10.0
POLL_SECONDS = 0.05
# A trigger that has not yielded by its deadline plus this is hung (its own timeout event is late).
TRIGGER_GRACE_SECONDS = 20.0


class TaskInstanceStub:
    """
    A task instance as the operators see it: its ids, its try numbers, and the XComs it pushes (kept in
    :attr:`xcoms`, so a test can read them all).

    :param task_id: the task's id (the run id is derived from it).
    :param retries: the task's retries (``max_tries``).
    """

    def __init__(self, task_id: str, *, retries: int = 2) -> None:
        self.dag_id = "reliability"
        self.run_id = f"manual__{task_id}"
        self.task_id = task_id
        self.map_index = -1
        self.try_number = 1
        self.max_tries = retries
        self.xcoms: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any, **_: Any) -> None:
        self.xcoms[key] = value

    def xcom_pull(self, task_ids: Any = None, key: str = "return_value", **_: Any) -> Any:
        return self.xcoms.get(key)

    def get_first_reschedule_date(self, context: Any) -> None:
        return None


def task_context(task_id: str) -> dict[str, Any]:
    """The parts of an Airflow context the operators and sensors read."""
    return {"ti": TaskInstanceStub(task_id), "outlet_events": None, "task_reschedule_count": 0}


@dataclass
class Run:
    """
    One run of a component under one fault.

    :param emulator: the emulator (its state is reset before each run).
    :param tmp_path: a directory of this run's own (``file://`` targets).
    :param inject: injects the run's fault (the component calls it when the faulted request is next).
    :param wait_timeout: the ``timeout`` of the sensors and waits.
    """

    emulator: Any
    tmp_path: Path
    inject: Callable[[], None]
    wait_timeout: float = WAIT_TIMEOUT
    context: dict[str, Any] = field(default_factory=lambda: task_context("task"))
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ti(self) -> TaskInstanceStub:
        return self.context["ti"]  # type: ignore[no-any-return]

    def create_instance(self, workflow: str, instance_id: str) -> None:
        """Start an instance through the plain API (not through the connection under test)."""
        with self.emulator.api_client() as client:
            answer = client.post(f"/{workflow}/instances", json={"instance_id": instance_id})
        assert answer.status_code == 200, answer.text


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def run_trigger(trigger: Any) -> Any:
    """Run a trigger in a new event loop, as the triggerer does, until its first (only) event."""
    budget = max(0.0, trigger.end_time - time.time()) + TRIGGER_GRACE_SECONDS
    return asyncio.run(asyncio.wait_for(_first_event(trigger), budget))


def execute_deferrable(task: Any, run: Run, *, then_advance: float) -> Any:
    """
    ``execute`` until the task defers (its first look finds the wait pending), then inject the fault,
    move the emulated clock so the awaited thing finishes, run the trigger and resume with its event.
    """
    try:
        task.execute(run.context)
    except TaskDeferred as deferred:
        trigger, method_name = deferred.trigger, deferred.method_name
    else:
        raise AssertionError("the task did not defer: its first look should have found the wait pending")
    run.inject()
    run.emulator.advance(then_advance)
    event = run_trigger(trigger)
    run.facts["trigger_kwargs"] = trigger.serialize()[1]
    run.facts["trigger_event"] = event
    return getattr(task, method_name)(run.context, event)


def run_tries(task: Any, run: Run) -> Any:
    """
    Run ``task``'s tries as Airflow does, with Airflow's task state store: an error that allows a retry
    (not an ``AirflowFailException`` or ``AirflowSensorTimeout``) starts the next try while the task
    instance has tries left. The emulated clock moves on a second between tries, as time passes between
    an Airflow try and its retry.
    """
    run.context["task_state_store"] = FakeTaskStateStore()
    while True:
        try:
            return task.execute(run.context)
        except (AirflowFailException, AirflowSensorTimeout):
            raise
        except Exception:
            if run.ti.try_number > run.ti.max_tries:
                raise
        run.ti.try_number += 1
        run.emulator.advance(1)


def instances_of(emulator: Any, workflow: str) -> list[dict[str, Any]]:
    """Every instance of ``workflow`` on the emulator."""
    with emulator.api_client() as client:
        answer = client.get(f"/{workflow}/instances", params={"per_page": 100})
    assert answer.status_code == 200, answer.text
    return list(answer.json()["result"])


def status_of(emulator: Any, workflow: str, instance_id: str) -> str | None:
    """An instance's status, or None when it does not exist."""
    with emulator.api_client() as client:
        answer = client.get(f"/{workflow}/instances/{instance_id}")
    if answer.status_code == 404:
        return None
    assert answer.status_code == 200, answer.text
    return str(answer.json()["result"]["status"])


def restarts(r: Run) -> int:
    """Restarts that reached the emulator and took effect (answered 2xx, or not answered at all)."""
    return sum(
        1
        for entry in r.emulator.requests_log()
        if entry["endpoint"] == "change_status"
        and (entry["body"] or {}).get("status") == "restart"
        and (entry["status"] is None or 200 <= entry["status"] < 300)
    )


@dataclass(frozen=True)
class Component:
    """
    One public operator or sensor in one mode.

    :param name: its row in the matrix.
    :param faulted: the request the fault hits, in words (for the docs).
    :param method: that request's HTTP method.
    :param path: a regular expression searched in that request's raw path.
    :param body: what its answer carries: ``"json"``, or ``"stream"`` (a step's byte-stream output).
    :param run: prepares, injects the fault, and runs the component; returns what the task returned.
    :param effects: how many times the component's side effect took effect (instances created, events
        delivered, restarts), or None for a component without one.
    :param success_effects: how many side effects a success leaves (one instance, event, restart...).
    :param final_state: checks the end state after a success (e.g. the instance is terminated).
    """

    name: str
    faulted: str
    method: str
    path: str
    run: Callable[[Run], Any]
    body: str = "json"
    effects: Callable[[Run], int] | None = None
    success_effects: int = 1
    final_state: Callable[[Run, Any], None] | None = None


# --- sensors -------------------------------------------------------------------------------------


def _step_sensor(r: Run, deferrable: bool) -> CloudflareWorkflowStepSensor:
    return CloudflareWorkflowStepSensor(
        task_id="task",
        workflow_name=SLOW if deferrable else INSTANT,
        instance_id=INSTANCE,
        step_name="work",
        poke_interval=POLL_SECONDS,
        timeout=r.wait_timeout,
        deferrable=deferrable,
    )


def _instance_sensor(r: Run, deferrable: bool) -> CloudflareWorkflowInstanceSensor:
    return CloudflareWorkflowInstanceSensor(
        task_id="task",
        workflow_name=SLOW if deferrable else INSTANT,
        instance_id=INSTANCE,
        poke_interval=POLL_SECONDS,
        timeout=r.wait_timeout,
        deferrable=deferrable,
    )


def _run_sensor(make: Callable[[Run, bool], Any], deferrable: bool) -> Callable[[Run], Any]:
    def run(r: Run) -> Any:
        sensor = make(r, deferrable)
        r.create_instance(sensor.workflow_name, INSTANCE)
        if deferrable:
            return execute_deferrable(sensor, r, then_advance=5)
        r.inject()
        return sensor.execute(r.context)

    return run


def _summary_is_complete(r: Run, result: Any) -> None:
    assert result["status"] == "complete", result
    assert result["instance_id"] == INSTANCE


# --- create, batch create --------------------------------------------------------------------------


def _create(*, wait: bool, deferrable: bool = False) -> Callable[[Run], Any]:
    def run(r: Run) -> Any:
        operator = CloudflareWorkflowCreateInstanceOperator(
            task_id="task",
            workflow_name=SLOW if deferrable else INSTANT,
            instance_params={"n": 1},
            wait_for_completion=wait,
            deferrable=deferrable,
            poll_interval=POLL_SECONDS,
            timeout=r.wait_timeout,
            retries=2,
        )
        if deferrable:
            return execute_deferrable(operator, r, then_advance=5)
        r.inject()
        return operator.execute(r.context)

    return run


def _created(workflow: str) -> Callable[[Run], int]:
    return lambda r: len(instances_of(r.emulator, workflow))


def _batch(r: Run) -> Any:
    operator = CloudflareWorkflowCreateInstancesOperator(
        task_id="task", workflow_name=INSTANT, instances=[{"params": {"n": n}} for n in range(BATCH_SIZE)]
    )
    r.inject()
    return operator.execute(r.context)


def _batch_created(r: Run, result: Any) -> None:
    assert sorted(result) == sorted(instance["id"] for instance in instances_of(r.emulator, INSTANT))
    assert len(result) == BATCH_SIZE


# --- events, status changes --------------------------------------------------------------------------


def _send_event(r: Run) -> Any:
    r.create_instance(GATE, INSTANCE)
    operator = CloudflareWorkflowSendEventOperator(
        task_id="task", workflow_name=GATE, instance_id=INSTANCE, event_type="approval", payload={"ok": 1}
    )
    r.inject()
    return operator.execute(r.context)


def _send_event_retried(r: Run) -> Any:
    r.create_instance(GATE, INSTANCE)
    operator = CloudflareWorkflowSendEventOperator(
        task_id="task",
        workflow_name=GATE,
        instance_id=INSTANCE,
        event_type="approval",
        payload={"ok": 1},
        retries=2,
    )
    r.inject()
    return run_tries(operator, r)


def _events(r: Run) -> int:
    return int(r.emulator.request_stats()["events"])


def _change_status(action: str) -> Callable[[Run], Any]:
    def run(r: Run) -> Any:
        r.create_instance(GATE, INSTANCE)
        operator = CloudflareWorkflowChangeInstanceStatusOperator(
            task_id="task", workflow_name=GATE, instance_id=INSTANCE, action=action
        )
        r.inject()
        return operator.execute(r.context)

    return run


def _restart_retried(r: Run) -> Any:
    r.create_instance(GATE, INSTANCE)
    r.emulator.advance(1)  # a restart queues the instance again, at a later time than its creation
    operator = CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="task", workflow_name=GATE, instance_id=INSTANCE, action="restart", retries=2
    )
    r.inject()
    return run_tries(operator, r)


def _restart_from_failure(r: Run) -> Any:
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="task",
        workflow_name=FLAKY,
        wait_for_completion=True,
        retry_from_failure=True,
        poll_interval=POLL_SECONDS,
        timeout=r.wait_timeout,
        retries=2,
    )

    def execute(context: dict[str, Any]) -> Any:
        if r.ti.try_number == 2:  # the retry that restarts the errored instance meets the fault
            r.inject()
        return operator.execute(context)

    return run_tries(SimpleTask(execute), r)


@dataclass(frozen=True)
class SimpleTask:
    """A task whose ``execute`` is the given function (to act between tries)."""

    execute: Callable[[dict[str, Any]], Any]


def _restarted_once_and_complete(r: Run, result: Any) -> None:
    (instance,) = instances_of(r.emulator, FLAKY)
    assert result == instance["id"]
    assert status_of(r.emulator, FLAKY, instance["id"]) == "complete"


def _terminated(r: Run, result: Any) -> None:
    assert status_of(r.emulator, GATE, INSTANCE) == "terminated"


def _delete(r: Run) -> Any:
    for instance_id in DELETED:
        r.create_instance(INSTANT, instance_id)
    operator = CloudflareWorkflowDeleteInstancesOperator(
        task_id="task", workflow_name=INSTANT, instance_ids=list(DELETED)
    )
    r.inject()
    return operator.execute(r.context)


def _all_deleted(r: Run, result: Any) -> None:
    assert sorted(result) == sorted(DELETED)
    assert instances_of(r.emulator, INSTANT) == []


# --- step output ---------------------------------------------------------------------------------------


def _output_to_xcom(r: Run) -> Any:
    r.create_instance(INSTANT, INSTANCE)
    operator = CloudflareWorkflowStepOutputOperator(
        task_id="task", workflow_name=INSTANT, instance_id=INSTANCE, step_name="work"
    )
    r.inject()
    return operator.execute(r.context)


def _xcom_is_the_output(r: Run, result: Any) -> None:
    assert result == {"rows": [1, 2, 3]}


def output_target(r: Run) -> Path:
    return r.tmp_path / "out" / "blob.bin"


def _output_to_file(r: Run) -> Any:
    r.create_instance(INSTANT, INSTANCE)
    target = output_target(r)
    target.parent.mkdir()
    operator = CloudflareWorkflowStepOutputOperator(
        task_id="task",
        workflow_name=INSTANT,
        instance_id=INSTANCE,
        step_name="blob",
        output_path=f"file://{target}",
    )
    r.inject()
    return operator.execute(r.context)


def _file_is_complete(r: Run, result: Any) -> None:
    digest = r.emulator.stream_digest(INSTANT, INSTANCE, STREAM_STEP)
    data = output_target(r).read_bytes()
    assert (len(data), hashlib.sha256(data).hexdigest()) == (digest["size"], digest["sha256"])
    assert r.ti.xcoms["sha256"] == digest["sha256"]


def file_left_behind(r: Run) -> tuple[list[str], bool]:
    """The files in the target's directory, and whether the target is complete (False if absent)."""
    folder = output_target(r).parent
    names = sorted(path.name for path in folder.iterdir()) if folder.exists() else []
    if output_target(r).name not in names:
        return names, False
    digest = r.emulator.stream_digest(INSTANT, INSTANCE, STREAM_STEP)
    return names, hashlib.sha256(output_target(r).read_bytes()).hexdigest() == digest["sha256"]


# --- the rows --------------------------------------------------------------------------------------------

_INSTANCE_PATH = rf"/instances/{INSTANCE}$"
COMPONENTS: tuple[Component, ...] = (
    Component(
        name="step sensor",
        faulted="its look (GET the instance or its step)",
        method="GET",
        path=rf"/instances/{INSTANCE}(/step)?$",
        run=_run_sensor(_step_sensor, deferrable=False),
        final_state=_summary_is_complete,
    ),
    Component(
        name="step sensor (deferrable)",
        faulted="the trigger's look",
        method="GET",
        path=rf"/instances/{INSTANCE}(/step)?$",
        run=_run_sensor(_step_sensor, deferrable=True),
        final_state=_summary_is_complete,
    ),
    Component(
        name="instance sensor",
        faulted="its look (GET the instance)",
        method="GET",
        path=_INSTANCE_PATH,
        run=_run_sensor(_instance_sensor, deferrable=False),
        final_state=_summary_is_complete,
    ),
    Component(
        name="instance sensor (deferrable)",
        faulted="the trigger's look",
        method="GET",
        path=_INSTANCE_PATH,
        run=_run_sensor(_instance_sensor, deferrable=True),
        final_state=_summary_is_complete,
    ),
    Component(
        name="create",
        faulted="the create (POST)",
        method="POST",
        path=r"/instances$",
        run=_create(wait=False),
        effects=_created(INSTANT),
    ),
    Component(
        name="create and wait",
        faulted="the wait's look (GET the instance)",
        method="GET",
        path=r"/instances/[^/]+$",
        run=_create(wait=True),
        effects=_created(INSTANT),
    ),
    Component(
        name="create and wait (deferrable)",
        faulted="the trigger's look",
        method="GET",
        path=r"/instances/[^/]+$",
        run=_create(wait=True, deferrable=True),
        effects=_created(SLOW),
    ),
    Component(
        name="batch create",
        faulted="the batch create (POST)",
        method="POST",
        path=r"/instances/batch$",
        run=_batch,
        effects=_created(INSTANT),
        success_effects=BATCH_SIZE,
        final_state=_batch_created,
    ),
    Component(
        name="send event",
        faulted="the event (POST)",
        method="POST",
        path=r"/events/approval$",
        run=_send_event,
        effects=_events,
    ),
    Component(
        name="terminate",
        faulted="the status change (PATCH)",
        method="PATCH",
        path=r"/status$",
        run=_change_status("terminate"),
        final_state=_terminated,
    ),
    Component(
        name="restart",
        faulted="the status change (PATCH)",
        method="PATCH",
        path=r"/status$",
        run=_change_status("restart"),
        effects=restarts,
    ),
    Component(
        name="send event (retried, task state store)",
        faulted="the event (POST)",
        method="POST",
        path=r"/events/approval$",
        run=_send_event_retried,
        effects=_events,
    ),
    Component(
        name="restart (retried, task state store)",
        faulted="the status change (PATCH)",
        method="PATCH",
        path=r"/status$",
        run=_restart_retried,
        effects=restarts,
    ),
    Component(
        name="create and wait, retry_from_failure",
        faulted="the restart from the failed step (PATCH), in the task's retry",
        method="PATCH",
        path=r"/status$",
        run=_restart_from_failure,
        effects=restarts,
        final_state=_restarted_once_and_complete,
    ),
    Component(
        name="delete instances",
        faulted="the batch delete (POST)",
        method="POST",
        path=r"/instances/batch/delete$",
        run=_delete,
        final_state=_all_deleted,
    ),
    Component(
        name="step output to XCom",
        faulted="the output read (GET …/step)",
        method="GET",
        path=r"/step$",
        run=_output_to_xcom,
        final_state=_xcom_is_the_output,
    ),
    Component(
        name="step output to file://",
        faulted="the output read (GET …/step, a byte stream)",
        method="GET",
        path=r"/step$",
        body="stream",
        run=_output_to_file,
        final_state=_file_is_complete,
    ),
)
