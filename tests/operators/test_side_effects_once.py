"""Side effects happen once (issue 12 items 1, 8, 13; issue 10 item 1; issue 16 item 1), against the emulator.

An event or restart whose answer was lost is not repeated: with the task state store the task's retry
ends in success when the instance shows it took effect, and fails without retry when the instance cannot
tell; without the store the task fails without retry at once. A terminate or pause whose answer was lost
is accepted on its retry; "already exists" (400 or 409) after a lost create is success; a retry after a
crash finds the instance its earlier try created, and a clear starts a new one.
"""

from __future__ import annotations

import uuid
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutcomePendingError,
    CloudflareWorkflowOutcomeUnknownError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsError,
)
from airflow_provider_cfworkflows.instance_ids import derive_instance_id, first_try_of_series
from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowDeleteInstancesOperator,
    CloudflareWorkflowSendEventOperator,
)
from tests.fakes import FakeTaskStateStore

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_retry_waits")]


def gate_workflow(emulator: Any, gates: int = 2) -> str:
    """A workflow with ``gates`` waitForEvent("approval") steps in a row."""
    name = f"gates-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": f"gate {n}", "type": "waitForEvent", "event_type": "approval", "timeout": 3600}
        for n in range(gates)
    ]
    emulator.put_workflow({"name": name, "steps": steps})
    return name


def events_sent(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.requests_log() if r["endpoint"] == "send_event"]


def context() -> dict[str, Any]:
    ti = mock.MagicMock(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1, max_tries=0)
    return {"ti": ti, "outlet_events": None}


def try_context(store: FakeTaskStateStore, try_number: int, max_tries: int = 2) -> dict[str, Any]:
    """The context of one try of a task with retries=2 and Airflow's task state store."""
    ti = mock.MagicMock(
        dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=try_number, max_tries=max_tries
    )
    return {"ti": ti, "outlet_events": None, "task_state_store": store}


def start(emulator: Any, name: str, instance_id: str) -> None:
    with emulator.api_client() as api:
        api.post(f"/{name}/instances", json={"instance_id": instance_id}).raise_for_status()


def steps_of(emulator: Any, name: str, instance_id: str) -> dict[str, Any]:
    with emulator.api_client() as api:
        return dict(api.get(f"/{name}/instances/{instance_id}").json()["result"])


def restarts(emulator: Any) -> list[dict[str, Any]]:
    return [r for r in emulator.requests_log() if r["endpoint"] == "change_status"]


# --- events and restarts ---------------------------------------------------------------------------


def test_an_event_whose_answer_was_lost_succeeds_on_its_retry_with_one_event(
    run_dag, cloudflare_conn, capsys
):
    name = gate_workflow(cloudflare_conn)
    instance = "gated"
    cloudflare_conn.inject_fault(kind="lost_answer", method="POST", path="/events/approval$", count=1)
    start(cloudflare_conn, name, instance)
    cloudflare_conn.advance(1)

    result = run_dag(
        "send_event_once", {"workflow_name": name, "instance_id": instance, "event_type": "approval"}
    )

    assert result.task_states() == {"approve": "success"}
    assert result.tries() == {"approve": (2, 1)}  # the retry decided, without sending
    assert len(events_sent(cloudflare_conn)) == 1  # exactly one event arrived
    assert "the instance shows it took effect: not doing it again" in capsys.readouterr().out
    cloudflare_conn.advance(1)
    details = steps_of(cloudflare_conn, name, instance)
    steps = details["steps"]
    assert steps[0]["finished"] is True  # the one event passed the first gate...
    assert [step.get("finished") for step in steps[1:]] in ([], [False])  # ...and not the second
    assert details["status"] == "waiting"


def test_a_restart_whose_answer_was_lost_succeeds_on_its_retry_with_one_restart(run_dag, cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    start(cloudflare_conn, name, "to-restart")
    cloudflare_conn.advance(1)  # the restart queues the instance again at a later time
    cloudflare_conn.inject_fault(kind="lost_answer", method="PATCH", path="/status$", count=1)

    result = run_dag("restart_once", {"workflow_name": name, "instance_id": "to-restart"})

    assert result.task_states() == {"restart": "success"}
    assert result.tries() == {"restart": (2, 1)}
    assert [r["body"] for r in restarts(cloudflare_conn)] == [{"status": "restart"}]


def test_an_event_that_the_instance_cannot_show_yet_fails_its_retry_without_sending(cloudflare_conn):
    # The event is buffered: the instance sleeps before its waitForEvent, so nothing shows it arrived.
    name = f"late-gate-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "nap", "type": "sleep", "duration": 3600},
        {"name": "gate", "type": "waitForEvent", "event_type": "approval", "timeout": 3600},
    ]
    cloudflare_conn.put_workflow({"name": name, "steps": steps})
    start(cloudflare_conn, name, "late")
    store = FakeTaskStateStore()
    operator = CloudflareWorkflowSendEventOperator(
        task_id="t", workflow_name=name, instance_id="late", event_type="approval", retries=2
    )
    cloudflare_conn.inject_fault(kind="lost_answer", method="POST", path="/events/approval$", count=1)

    with pytest.raises(CloudflareWorkflowOutcomePendingError, match="may have been delivered"):
        operator.execute(try_context(store, 1))
    with pytest.raises(CloudflareWorkflowOutcomeUnknownError, match="try 1 of this task sent the request"):
        operator.execute(try_context(store, 2))

    assert len(events_sent(cloudflare_conn)) == 1


def test_a_retry_after_a_sent_event_sends_nothing_and_a_clear_sends_again(cloudflare_conn):
    name = gate_workflow(cloudflare_conn)
    start(cloudflare_conn, name, "twice")
    store = FakeTaskStateStore()
    operator = CloudflareWorkflowSendEventOperator(
        task_id="t",
        workflow_name=name,
        instance_id="twice",
        event_type="approval",
        payload={"note": "payload-stays-out-of-the-store"},
        retries=2,
    )
    operator.execute(try_context(store, 1))
    operator.execute(try_context(store, 2))  # e.g. the worker died after the event, before success
    assert len(events_sent(cloudflare_conn)) == 1

    operator.execute(try_context(store, 3, max_tries=4))  # cleared after try 2: a new series
    assert len(events_sent(cloudflare_conn)) == 2
    assert "payload-stays-out-of-the-store" not in repr(store.values)
    assert sorted(store.values) == [
        f"cfworkflows/s1/event/{name}/twice/approval",
        f"cfworkflows/s3/event/{name}/twice/approval",
    ]


def test_the_event_error_says_it_may_have_arrived_and_how_to_check(cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name, instance_id="i1").execute(
        context()
    )
    cloudflare_conn.inject_fault(kind="server_error", status=502, method="POST", path="/events/", count=1)
    operator = CloudflareWorkflowSendEventOperator(
        task_id="t", workflow_name=name, instance_id="i1", event_type="approval"
    )
    with pytest.raises(CloudflareWorkflowOutcomeUnknownError) as caught:
        operator.execute(context())
    message = str(caught.value)
    assert "may have been delivered" in message
    assert "fails without retry" in message
    assert f"/workers/workflows/{name}/instance/i1" in message
    assert "HTTP 502" in message


def test_an_event_refused_by_a_429_is_sent_again_by_the_hook(cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name, instance_id="i2").execute(
        context()
    )
    cloudflare_conn.inject_fault(kind="rate_limit", retry_after="1", method="POST", path="/events/", count=1)
    CloudflareWorkflowSendEventOperator(
        task_id="t", workflow_name=name, instance_id="i2", event_type="approval"
    ).execute(context())
    assert [r["status"] for r in events_sent(cloudflare_conn)] == [429, 200]


def test_without_the_store_a_restart_whose_answer_was_lost_fails_without_retry(cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name, instance_id="i3").execute(
        context()
    )
    cloudflare_conn.advance(1)
    cloudflare_conn.inject_fault(kind="lost_answer", method="PATCH", path="/status$", count=1)
    operator = CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="t", workflow_name=name, instance_id="i3", action="restart"
    )
    with pytest.raises(
        CloudflareWorkflowOutcomeUnknownError, match=r"restart of instance 'i3'.*may have happened"
    ):
        operator.execute(context())
    assert len(restarts(cloudflare_conn)) == 1


@pytest.mark.parametrize(("action", "reached"), [("terminate", "terminated"), ("pause", "paused")])
def test_a_terminate_or_pause_whose_answer_was_lost_succeeds(cloudflare_conn, action, reached):
    name = gate_workflow(cloudflare_conn, gates=1)
    CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name, instance_id="i4").execute(
        context()
    )
    cloudflare_conn.advance(1)
    cloudflare_conn.inject_fault(kind="lost_answer", method="PATCH", path="/status$", count=1)
    result = CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="t", workflow_name=name, instance_id="i4", action=action
    ).execute(context())
    assert result["status"] == reached
    patches = [r["status"] for r in cloudflare_conn.requests_log() if r["endpoint"] == "change_status"]
    assert patches[0] is None  # the lost answer; the retry met 409 (terminate) or 200 (pause, idempotent)
    assert len(patches) == 2


# --- creates ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [409, 400])
def test_create_accepts_already_exists_as_either_status(cloudflare_conn, status):
    cloudflare_conn.set_options(already_exists_status=status)
    name = gate_workflow(cloudflare_conn, gates=1)
    operator = CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name, instance_id="twice")
    assert operator.execute(context()) == "twice"
    assert operator.execute(context()) == "twice"  # a second try: "already exists", confirmed by a GET
    answers = [
        r["status"] for r in cloudflare_conn.requests_log() if r["endpoint"] in ("create", "get_instance")
    ]
    assert answers == [200, status, 200]
    assert cloudflare_conn.request_stats()["creates"] == 1


@pytest.mark.parametrize("status", [409, 400])
def test_create_whose_answer_was_lost_starts_one_instance(cloudflare_conn, status, capsys):
    cloudflare_conn.set_options(already_exists_status=status)
    name = gate_workflow(cloudflare_conn, gates=1)
    cloudflare_conn.inject_fault(kind="lost_answer", method="POST", path="/instances$", count=1)
    operator = CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name=name)
    instance_id = operator.execute(context())
    assert instance_id == derive_instance_id("d", "r", "t")
    assert cloudflare_conn.request_stats()["creates"] == 1
    assert "Started instance" in capsys.readouterr().out  # created in this try: it owns it


def test_create_refuses_a_bad_location_hint_or_retention_before_any_call(cloudflare_conn):
    for kwargs in ({"location_hint": "mars"}, {"instance_retention": {"success_retention": "forever"}}):
        operator = CloudflareWorkflowCreateInstanceOperator(task_id="c", workflow_name="wf", **kwargs)
        with pytest.raises(CloudflareWorkflowsConfigurationError):
            operator.execute(context())
    assert cloudflare_conn.requests_log() == []


def clear_with_airflow(result: Any) -> dict[str, tuple[int, int]]:
    """Clear a run's finished tasks with Airflow's own code (what the UI and ``airflow tasks clear`` call)."""
    from airflow.models.taskinstance import clear_task_instances
    from airflow.utils.session import create_session

    with create_session() as session:
        clear_task_instances(result.dag_run.get_task_instances(session=session), session)
    return result.tries()


def next_try(result: Any, task_id: str, try_number: int, max_tries: int) -> dict[str, Any]:
    """The context of a task's next try as the scheduler starts it (try_number + 1, max_tries kept)."""
    ti = mock.MagicMock(
        dag_id=result.dag_run.dag_id,
        run_id=result.run_id,
        task_id=task_id,
        map_index=-1,
        try_number=try_number + 1,
        max_tries=max_tries,
    )
    return {"ti": ti, "outlet_events": None}


def test_a_retry_finds_the_instance_and_a_clear_starts_a_new_one(run_dag, cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    first = run_dag("create_cleared", {"workflow_name": name})
    assert first.state == "success"
    assert first.tries() == {"start": (1, 0), "crash_once": (2, 1)}
    first_ids = {task: first.xcom(task) for task in ("start", "crash_once")}
    # crash_once created its instance, then failed; its retry found that instance (no second one).
    assert cloudflare_conn.request_stats()["creates"] == 2

    # dag.test() cannot rerun a cleared run (it replaces the run), so the clear is Airflow's own and
    # the next tries run the operators with the try numbers Airflow's bookkeeping gives them.
    cleared = clear_with_airflow(first)
    assert cleared == {"start": (1, 1), "crash_once": (2, 3)}  # max_tries = try_number + retries
    start = CloudflareWorkflowCreateInstanceOperator(task_id="start", workflow_name=name)
    crash_once = CloudflareWorkflowCreateInstanceOperator(task_id="crash_once", workflow_name=name, retries=1)
    second_start = start.execute(next_try(first, "start", *cleared["start"]))
    second_crash = crash_once.execute(next_try(first, "crash_once", *cleared["crash_once"]))
    # ... and a retry in that new series (try 4 of crash_once) finds what try 3 created.
    retried_crash = crash_once.execute(next_try(first, "crash_once", 3, cleared["crash_once"][1]))

    assert second_start != first_ids["start"]  # the clear started a new instance
    assert second_crash != first_ids["crash_once"]
    assert "-t2-" in second_start
    assert "-t3-" in second_crash
    assert retried_crash == second_crash
    assert cloudflare_conn.request_stats()["creates"] == 4


def test_first_try_of_series_follows_airflows_clear_rule():
    assert [first_try_of_series(t, 2, 2) for t in (1, 2, 3)] == [1, 1, 1]  # retries of one series
    assert [first_try_of_series(t, 5, 2) for t in (4, 5, 6)] == [4, 4, 4]  # cleared after try 3
    assert first_try_of_series(1, 0, 3) == 1  # retries raised after the run started: never below 1


# --- deleting --------------------------------------------------------------------------------------


def test_delete_instances_operator(cloudflare_conn):
    name = gate_workflow(cloudflare_conn, gates=1)
    for instance_id in ("a", "b"):
        CloudflareWorkflowCreateInstanceOperator(
            task_id="c", workflow_name=name, instance_id=instance_id
        ).execute(context())
    operator = CloudflareWorkflowDeleteInstancesOperator(
        task_id="d", workflow_name=name, instance_ids=["a", "b", "gone"]
    )
    assert sorted(operator.execute(context())) == ["a", "b", "gone"]  # "gone" did not exist: deleted
    assert sorted(operator.execute(context())) == ["a", "b", "gone"]  # a retry finds them gone: success
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="instance_ids must be a list"):
        CloudflareWorkflowDeleteInstancesOperator(task_id="d", workflow_name=name, instance_ids="a").execute(
            context()
        )
    with pytest.raises(CloudflareWorkflowsError):
        CloudflareWorkflowDeleteInstancesOperator(
            task_id="d", workflow_name=name + "x", instance_ids=["a"]
        ).execute(context())
