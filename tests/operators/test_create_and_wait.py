"""CloudflareWorkflowCreateInstanceOperator(wait_for_completion=True) against the emulator.

It waits as the instance sensor does: a transient 5xx during the wait does not fail it, a timeout fails
it without retry in the worker and after a deferral alike, and killing the task terminates the instance
it created (never one it merely found). A retry reconnects to its instance, and with
``retry_from_failure`` restarts an errored one from its failed step (issue 16 items 2 and 3).
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from typing import Any
from unittest import mock

import pytest
from airflow.sdk.exceptions import AirflowTaskTerminated, TaskDeferred

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceFailedError,
    CloudflareWorkflowInstanceRestartableError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_ids import derive_instance_id
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowCreateInstanceOperator
from airflow_provider_cfworkflows.task_waits import DEFERRAL_GRACE_SECONDS
from tests.fakes import FakeTaskStateStore

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_retry_waits")]
MODES = ("sync", "deferrable")
LOOKING_AGAIN = "Cloudflare did not answer usably this time; looking again later"


def workflow(emulator: Any, duration: float) -> dict[str, str]:
    """A fresh one-step workflow; returns the ``dag_run.conf`` that runs it under a new instance id."""
    name = f"caw-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "steps": [{"name": "work", "duration": duration}]})
    return {"workflow_name": name, "instance_id": f"i-{uuid.uuid4().hex[:8]}"}


def requests_to(emulator: Any, method: str, instance_id: str, suffix: str = "") -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.requests_log()
        if r["method"] == method and r["raw_path"].endswith(f"/instances/{instance_id}{suffix}")
    ]


def wait_until(condition: Any, what: str, deadline_seconds: float = 30.0) -> None:
    """Wait for ``condition()`` to hold, failing after a deadline."""
    deadline = time.monotonic() + deadline_seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


# --- in real DAG runs ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_transient_5xx_during_the_wait_does_not_fail_it(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(cloudflare_conn, duration=2)
    # Every try the hook makes for one look (1 + max_retries=3) fails: the wait must look again later.
    cloudflare_conn.inject_fault(
        kind="server_error", status=503, method="GET", path=f"/instances/{conf['instance_id']}$", count=4
    )

    result = run_dag(f"create_and_wait_{mode}", conf)

    out = capsys.readouterr().out
    assert result.state == "success", result.task_states()
    assert result.xcom("run") == conf["instance_id"]
    looks = requests_to(cloudflare_conn, "GET", conf["instance_id"])
    assert [r["status"] for r in looks[:4]] == [503] * 4
    assert looks[-1]["status"] == 200
    assert LOOKING_AGAIN in out
    assert cloudflare_conn.faults() == []
    if mode == "sync":  # each change of status logged once, not every poll
        waiting = re.findall(r"The instance is \w+; still waiting\.", out)
        assert waiting
        assert len(waiting) == len(set(waiting))
        assert len(looks) > len(waiting) + 4


@pytest.mark.parametrize("mode", MODES)
def test_a_timeout_fails_without_retry_the_same_way_in_both_modes(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(cloudflare_conn, duration=3600)

    result = run_dag(f"create_and_wait_{mode}", conf)

    (ti,) = result.dag_run.get_task_instances()
    assert (str(ti.state), ti.try_number) == ("failed", 1)  # retries=2, yet not retried
    expected = (
        f"Sensor timed out: Timed out waiting for instance {conf['instance_id']!r} of workflow "
        f"{conf['workflow_name']!r}; last seen: The instance is running; still waiting."
    )
    assert expected in capsys.readouterr().out
    creates = [r for r in cloudflare_conn.requests_log() if r["method"] == "POST"]
    assert len(creates) == 1  # one try: no second create, no second wait


# --- on_kill ---------------------------------------------------------------------------------------


@pytest.fixture
def context() -> dict[str, Any]:
    ti = mock.MagicMock(
        dag_id="etl",
        run_id=f"manual__{uuid.uuid4().hex[:6]}",
        task_id="run",
        map_index=-1,
        try_number=1,
        max_tries=0,
    )
    return {"ti": ti, "outlet_events": None}


def create_and_wait(workflow_name: str, **kwargs: Any) -> CloudflareWorkflowCreateInstanceOperator:
    return CloudflareWorkflowCreateInstanceOperator(
        task_id="run", workflow_name=workflow_name, wait_for_completion=True, poll_interval=0.1, **kwargs
    )


def run_in_thread(operator: CloudflareWorkflowCreateInstanceOperator, context: Any) -> Any:
    outcome: dict[str, BaseException] = {}

    def target() -> None:
        try:
            operator.execute(context)
        except BaseException as error:  # AirflowTaskTerminated is a BaseException
            outcome["error"] = error

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


def terminations(emulator: Any, instance_id: str) -> list[dict[str, Any]]:
    return requests_to(emulator, "PATCH", instance_id, "/status")


@pytest.mark.parametrize("terminate_on_kill", [True, False])
def test_killing_the_wait_terminates_the_instance_it_created(cloudflare_conn, context, terminate_on_kill):
    conf = workflow(cloudflare_conn, duration=3600)
    instance_id = derive_instance_id("etl", context["ti"].run_id, "run", -1)
    operator = create_and_wait(conf["workflow_name"], terminate_on_kill=terminate_on_kill)
    thread, outcome = run_in_thread(operator, context)
    wait_until(lambda: requests_to(cloudflare_conn, "GET", instance_id), "the wait's first look")

    operator.on_kill()
    thread.join(timeout=30)

    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), AirflowTaskTerminated)
    status = CloudflareWorkflowsHook().get_instance(conf["workflow_name"], instance_id)["status"]
    if terminate_on_kill:
        assert [r["body"] for r in terminations(cloudflare_conn, instance_id)] == [{"status": "terminate"}]
        assert status == "terminated"
    else:
        assert terminations(cloudflare_conn, instance_id) == []
        assert status == "running"


def test_killing_the_wait_leaves_an_instance_it_merely_found(cloudflare_conn, context):
    conf = workflow(cloudflare_conn, duration=3600)
    hook = CloudflareWorkflowsHook()
    hook.create_instance(conf["workflow_name"], instance_id=conf["instance_id"])  # someone else's
    operator = create_and_wait(conf["workflow_name"], instance_id=conf["instance_id"])
    thread, outcome = run_in_thread(operator, context)
    # One look when the create finds it exists, then the wait's own.
    wait_until(lambda: len(requests_to(cloudflare_conn, "GET", conf["instance_id"])) >= 2, "the wait")

    operator.on_kill()
    thread.join(timeout=30)

    assert isinstance(outcome.get("error"), AirflowTaskTerminated)
    assert terminations(cloudflare_conn, conf["instance_id"]) == []
    assert hook.get_instance(conf["workflow_name"], conf["instance_id"])["status"] == "running"


async def test_killing_the_deferred_task_terminates_the_instance_it_created(cloudflare_conn, context):
    conf = workflow(cloudflare_conn, duration=3600)
    operator = create_and_wait(conf["workflow_name"], instance_id=conf["instance_id"], deferrable=True)
    before = time.time()
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger = deferred.value.trigger
    kwargs = trigger.serialize()[1]
    assert kwargs["terminate_on_kill"] is True
    # The same grace period as the sensors: the trigger's deadline plus DEFERRAL_GRACE_SECONDS.
    grace = deferred.value.timeout.total_seconds() - (kwargs["end_time"] - before)
    assert DEFERRAL_GRACE_SECONDS - 5 < grace <= DEFERRAL_GRACE_SECONDS

    await trigger.on_kill()  # what the triggerer calls when a user kills the deferred task

    assert [r["body"] for r in terminations(cloudflare_conn, conf["instance_id"])] == [
        {"status": "terminate"}
    ]
    status = (await CloudflareWorkflowsHook().aget_instance(conf["workflow_name"], conf["instance_id"]))[
        "status"
    ]
    assert status == "terminated"


async def test_a_deferred_wait_on_a_found_instance_does_not_terminate_it(cloudflare_conn, context):
    conf = workflow(cloudflare_conn, duration=3600)
    CloudflareWorkflowsHook().create_instance(conf["workflow_name"], instance_id=conf["instance_id"])
    operator = create_and_wait(conf["workflow_name"], instance_id=conf["instance_id"], deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        operator.execute(context)
    trigger = deferred.value.trigger
    assert trigger.serialize()[1]["terminate_on_kill"] is False

    await trigger.on_kill()

    assert terminations(cloudflare_conn, conf["instance_id"]) == []


# --- retries: reconnect, and restart from the failed step (retry_from_failure) ---------------------------


def flaky_workflow(emulator: Any, duration: float = 0.3) -> str:
    """Three steps; the middle one errors in the instance's first run only (until it is restarted)."""
    name = f"flaky-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "extract", "duration": duration, "output": {"rows": 3}},
        {
            "name": "transform",
            "duration": duration,
            "fail_runs": 1,
            "retries": {"limit": 0, "delay": 0},
            "error": {"name": "Error", "message": "bad row 7"},
        },
        {"name": "load", "duration": duration},
    ]
    emulator.put_workflow({"name": name, "steps": steps})
    return name


def posts_of_creates(emulator: Any, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in emulator.requests_log()
        if r["method"] == "POST" and r["raw_path"].endswith(f"/{name}/instances")
    ]


def status_changes(emulator: Any) -> list[Any]:
    return [r["body"] for r in emulator.requests_log() if r["endpoint"] == "change_status"]


@pytest.mark.parametrize("mode", MODES)
def test_retry_from_failure_restarts_the_failed_step_once_and_succeeds(
    run_dag, cloudflare_conn, mode, capsys
):
    name = flaky_workflow(cloudflare_conn)

    result = run_dag(f"retry_from_failure_{mode}", {"workflow_name": name})

    assert result.state == "success", result.task_states()
    assert result.tries() == {"run": (2, 1)}
    instance_id = result.xcom("run")
    assert len(posts_of_creates(cloudflare_conn, name)) == 1  # one instance, created by try 1
    assert status_changes(cloudflare_conn) == [
        {"status": "restart", "from": {"name": "transform", "count": 1, "type": "do"}}
    ]
    details = CloudflareWorkflowsHook().get_instance(name, instance_id)
    assert details["status"] == "complete"
    assert [step["name"] for step in details["steps"]] == ["extract-1", "transform-1", "load-1"]
    out = capsys.readouterr().out
    assert "retry_from_failure: Airflow retries the task" in out
    assert f"Restarted instance {instance_id!r} from step 'transform' (run 1, type do)" in out
    if mode == "deferrable":  # both tries deferred: the trigger saw the failure, then the completion
        assert out.count("Resumed after deferral; the trigger reported") == 2


@pytest.mark.parametrize("mode", MODES)
def test_by_default_an_errored_instance_still_fails_without_retry(run_dag, cloudflare_conn, mode):
    name = flaky_workflow(cloudflare_conn)

    result = run_dag(
        f"create_and_wait_{mode}", {"workflow_name": name, "instance_id": f"i-{uuid.uuid4().hex[:8]}"}
    )

    assert result.task_states() == {"run": "failed"}
    assert result.tries() == {"run": (1, 2)}  # retries=2, none used
    assert status_changes(cloudflare_conn) == []


def try_context(
    store: FakeTaskStateStore, try_number: int, max_tries: int = 1, run_id: str = "r"
) -> dict[str, Any]:
    ti = mock.MagicMock(
        dag_id="etl", run_id=run_id, task_id="run", map_index=-1, try_number=try_number, max_tries=max_tries
    )
    return {"ti": ti, "outlet_events": None, "task_state_store": store}


def test_retry_from_failure_never_restarts_on_a_first_try_or_after_a_clear(cloudflare_conn):
    name = flaky_workflow(cloudflare_conn, duration=0)
    CloudflareWorkflowsHook().create_instance(name, instance_id="errored-already")  # errors at once
    operator = create_and_wait(name, instance_id="errored-already", retry_from_failure=True, retries=1)
    store = FakeTaskStateStore()

    with pytest.raises(CloudflareWorkflowInstanceRestartableError, match="bad row 7"):  # try 1: with retry
        operator.execute(try_context(store, 1))
    with pytest.raises(CloudflareWorkflowInstanceRestartableError):  # cleared after try 1: a new series
        operator.execute(try_context(store, 2, max_tries=2))
    without_retries = create_and_wait(name, instance_id="errored-already", retry_from_failure=True)
    with pytest.raises(CloudflareWorkflowInstanceFailedError):  # no retry to restart it: no retry at all
        without_retries.execute(try_context(FakeTaskStateStore(), 1, max_tries=0))

    assert status_changes(cloudflare_conn) == []


def test_a_retry_reconnects_to_its_instance_without_creating_it_again(cloudflare_conn):
    conf = workflow(cloudflare_conn, duration=3600)
    operator = create_and_wait(
        conf["workflow_name"], instance_id=conf["instance_id"], deferrable=True, retries=2
    )
    store = FakeTaskStateStore()
    with pytest.raises(TaskDeferred):
        operator.execute(try_context(store, 1, max_tries=2))  # the worker is lost while deferred

    with pytest.raises(TaskDeferred) as reconnected:
        operator.execute(try_context(store, 2, max_tries=2))
    assert reconnected.value.trigger.serialize()[1]["terminate_on_kill"] is True  # still its own instance
    cloudflare_conn.advance(3600)
    assert operator.execute(try_context(store, 3, max_tries=2)) == conf["instance_id"]  # complete: no wait

    assert len(posts_of_creates(cloudflare_conn, conf["workflow_name"])) == 1
