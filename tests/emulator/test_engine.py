"""The emulator's simulation without HTTP: statuses over emulated time, retries, events, pause, restart."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_cfworkflows.emulator import engine
from airflow_provider_cfworkflows.emulator.scenario import RetryPolicy, parse_workflow

T0 = 1000.0


def instance(steps: list[dict[str, Any]], **workflow: Any) -> engine.Instance:
    spec = parse_workflow({"name": "wf", "steps": steps, **workflow})
    return engine.Instance(id="i", workflow=spec, created_at=T0)


def at(inst: engine.Instance, seconds: float) -> engine.Snapshot:
    return engine.simulate(inst, T0 + seconds)


def act(inst: engine.Instance, action: str, seconds: float, **kwargs: Any) -> None:
    inst.actions.append(engine.Action(action, T0 + seconds, **kwargs))


def test_steps_run_in_order_and_complete_with_the_output():
    inst = instance(
        [{"name": "a", "duration": 2, "output": 1}, {"name": "b", "duration": 3, "output": 2}], output="done"
    )
    assert at(inst, 1).status == engine.RUNNING
    middle = at(inst, 3)
    assert [(s.logged_name, s.success) for s in middle.steps] == [("a-1", True), ("b-1", None)]
    assert middle.output is None
    done = at(inst, 5)
    assert (done.status, done.output, done.start, done.end) == (engine.COMPLETE, "done", T0, T0 + 5)
    assert at(inst, 500).end == T0 + 5  # nothing changes afterwards


def test_counter_suffix_per_name_and_kind():
    spec = parse_workflow(
        {
            "name": "wf",
            "steps": [
                {"name": "fetch"},
                {"name": "fetch"},
                {"name": "approve"},
                {"name": "approve", "type": "waitForEvent", "event_type": "approve"},
                {"name": "nap", "type": "sleep"},
                {"name": "fetch"},
            ],
        }
    )
    assert engine.counted_names(spec) == ["fetch-1", "fetch-2", "approve-1", "approve-1", "nap-1", "fetch-3"]
    assert engine.find_step_index(spec, "fetch", 2) == 1
    assert engine.find_step_index(spec, "approve", 1, "waitForEvent") == 3
    assert engine.find_step_index(spec, "approve", 1) == 2
    assert engine.find_step_index(spec, "fetch", 4) is None


def test_queue_delay_keeps_the_instance_queued():
    inst = instance([{"name": "a", "duration": 1}], queue_delay=5)
    assert at(inst, 4.9).status == engine.QUEUED
    assert at(inst, 4.9).start is None
    assert at(inst, 5.5).status == engine.RUNNING
    assert at(inst, 6).status == engine.COMPLETE


def test_retries_wait_between_attempts_then_succeed():
    flaky = instance(
        [
            {
                "name": "f",
                "duration": 1,
                "fail_attempts": 2,
                "error": {"name": "Upstream", "message": "503"},
                "retries": {"limit": 3, "delay": 10, "backoff": "exponential"},
                "output": "ok",
            }
        ]
    )
    # attempts: 0-1 fails, wait 10, 11-12 fails, wait 20, 32-33 succeeds
    first_wait = at(flaky, 5)
    assert first_wait.status == engine.WAITING
    assert first_wait.steps[0].retrying
    assert first_wait.steps[0].error == {"name": "Upstream", "message": "503"}
    second_attempt = at(flaky, 11.5)
    assert second_attempt.status == engine.RUNNING
    assert [a.success for a in second_attempt.steps[0].attempts] == [False, None]
    assert at(flaky, 31.9).status == engine.WAITING
    done = at(flaky, 33)
    assert done.status == engine.COMPLETE
    assert [(a.start - T0, a.success) for a in done.steps[0].attempts] == [
        (0, False),
        (11, False),
        (32, True),
    ]


def test_retries_exhausted_error_the_step_and_the_instance():
    doomed = instance(
        [
            {
                "name": "f",
                "duration": 1,
                "fail_attempts": 5,
                "retries": {"limit": 1, "delay": 1, "backoff": "constant"},
            },
            {"name": "never"},
        ]
    )
    failed = at(doomed, 10)
    assert (failed.status, failed.error, failed.end) == (
        engine.ERRORED,
        {"name": "Error", "message": "f failed"},
        T0 + 3,
    )
    assert [s.logged_name for s in failed.steps] == ["f-1"]
    assert len(failed.steps[0].attempts) == 2


@pytest.mark.parametrize(
    ("backoff", "waits"),
    [("constant", [4, 4, 4]), ("linear", [4, 8, 12]), ("exponential", [4, 8, 16])],
)
def test_backoff_delays(backoff, waits):
    policy = RetryPolicy(limit=3, delay=4, backoff=backoff)
    assert [policy.delay_before(n) for n in (1, 2, 3)] == waits


def test_sleep_waits_for_its_duration():
    inst = instance([{"name": "nap", "type": "sleep", "duration": 60}, {"name": "after"}])
    sleeping = at(inst, 30)
    assert sleeping.status == engine.WAITING
    assert sleeping.steps[0].planned_end == T0 + 60
    assert at(inst, 60).status == engine.COMPLETE


def test_wait_for_event_receives_a_buffered_early_event():
    waiting = instance(
        [
            {"name": "s", "duration": 5},
            {"name": "ok", "type": "waitForEvent", "event_type": "go", "timeout": 60},
        ]
    )
    waiting.events.append(engine.Event("other", {"ignored": True}, at=T0 + 0.5))
    waiting.events.append(engine.Event("go", {"early": True}, at=T0 + 1))  # before the step starts
    waiting.events.append(engine.Event("go", {"second": True}, at=T0 + 2))
    done = at(waiting, 6)
    assert done.status == engine.COMPLETE
    assert done.steps[1].output == {"early": True}
    assert done.steps[1].end == T0 + 5


def test_each_event_is_consumed_once():
    inst = instance(
        [
            {"name": "w", "type": "waitForEvent", "event_type": "go", "timeout": 60},
            {"name": "w", "type": "waitForEvent", "event_type": "go", "timeout": 60},
        ]
    )
    inst.events.append(engine.Event("go", 1, at=T0 + 1))
    assert at(inst, 5).status == engine.WAITING
    inst.events.append(engine.Event("go", 2, at=T0 + 10))
    done = at(inst, 10)
    assert [s.output for s in done.steps] == [1, 2]
    assert [s.logged_name for s in done.steps] == ["w-1", "w-2"]


def test_wait_for_event_times_out():
    inst = instance([{"name": "ok", "type": "waitForEvent", "event_type": "go", "timeout": 60}])
    assert at(inst, 59).status == engine.WAITING
    after = at(inst, 61)
    assert after.status == engine.ERRORED
    assert after.error is not None
    assert after.error["name"] == engine.EVENT_TIMEOUT_ERROR_NAME
    assert "go" in after.error["message"]
    inst.events.append(engine.Event("go", 1, at=T0 + 70))  # too late
    assert at(inst, 80).status == engine.ERRORED


def test_pause_freezes_progress_and_resume_continues():
    inst = instance([{"name": "long", "duration": 10}])
    act(inst, engine.PAUSE, 2)
    act(inst, engine.RESUME, 102)
    assert at(inst, 50).status == engine.PAUSED
    assert at(inst, 109).status == engine.RUNNING
    done = at(inst, 110)
    assert (done.status, done.end) == (engine.COMPLETE, T0 + 110)


def test_pause_also_freezes_a_timeout_and_defers_an_event():
    inst = instance([{"name": "w", "type": "waitForEvent", "event_type": "go", "timeout": 10}])
    act(inst, engine.PAUSE, 5)
    inst.events.append(engine.Event("go", "payload", at=T0 + 20))  # arrives while paused
    assert at(inst, 100).status == engine.PAUSED
    act(inst, engine.RESUME, 200)
    done = at(inst, 200)
    assert done.status == engine.COMPLETE
    assert done.steps[0].end == T0 + 200


def test_pausing_a_queued_instance():
    inst = instance([{"name": "a", "duration": 1}], queue_delay=5)
    act(inst, engine.PAUSE, 1)
    assert at(inst, 100).status == engine.PAUSED
    act(inst, engine.RESUME, 100)
    assert at(inst, 103).status == engine.QUEUED
    assert at(inst, 104.5).status == engine.RUNNING


def test_terminate_leaves_steps_in_flight_unfinished():
    inst = instance([{"name": "long", "duration": 10}, {"name": "next"}])
    act(inst, engine.TERMINATE, 5, rollback=True)
    snapshot = at(inst, 50)
    assert (snapshot.status, snapshot.end, snapshot.rollback) == (engine.TERMINATED, T0 + 5, True)
    assert [(s.logged_name, s.end, s.success) for s in snapshot.steps] == [("long-1", None, None)]
    assert snapshot.steps[0].attempts[0].end is None


def test_restart_from_the_beginning_erases_state_and_events():
    inst = instance([{"name": "a", "duration": 1}, {"name": "w", "type": "waitForEvent", "event_type": "go"}])
    inst.events.append(engine.Event("go", "old", at=T0 + 0.5))
    assert at(inst, 2).status == engine.COMPLETE
    act(inst, engine.RESTART, 100)
    restarted = at(inst, 100.5)
    assert (restarted.status, restarted.queued, restarted.start, restarted.end) == (
        engine.RUNNING,
        T0 + 100,
        T0 + 100,
        None,
    )
    assert [s.logged_name for s in restarted.steps] == ["a-1"]
    assert at(inst, 105).status == engine.WAITING  # the old event was erased
    inst.events.append(engine.Event("go", "new", at=T0 + 106))
    assert at(inst, 106).steps[1].output == "new"


def test_restart_from_a_step_keeps_the_steps_before_it():
    inst = instance(
        [{"name": "a", "duration": 5, "output": "A"}, {"name": "b", "duration": 50, "output": "B"}]
    )
    first_run = at(inst, 10)
    act(inst, engine.RESTART, 10, kept_steps=tuple(first_run.steps[:1]))
    snapshot = at(inst, 11)
    assert snapshot.status == engine.RUNNING
    assert [(s.logged_name, s.start, s.success) for s in snapshot.steps] == [
        ("a-1", T0, True),
        ("b-1", T0 + 10, None),
    ]
    assert at(inst, 60).status == engine.COMPLETE


def test_a_step_with_fail_runs_errors_until_the_instance_is_restarted():
    inst = instance(
        [
            {"name": "a", "duration": 1, "output": "A"},
            {"name": "b", "duration": 1, "output": "B", "fail_runs": 1, "retries": {"limit": 1, "delay": 1}},
            {"name": "c", "duration": 1},
        ]
    )
    first_run = at(inst, 10)
    assert first_run.status == engine.ERRORED
    assert [a.success for a in first_run.steps[1].attempts] == [False, False]  # every attempt failed
    act(inst, engine.RESTART, 10, kept_steps=tuple(first_run.steps[:1]))
    second_run = at(inst, 20)
    assert second_run.status == engine.COMPLETE
    assert [(s.logged_name, s.success) for s in second_run.steps] == [
        ("a-1", True),
        ("b-1", True),
        ("c-1", True),
    ]
    assert [a.success for a in second_run.steps[1].attempts] == [True]
    assert second_run.steps[0].start == T0  # the kept step's record, from the first run


def test_restart_clears_a_pause_and_a_termination():
    inst = instance([{"name": "a", "duration": 10}])
    act(inst, engine.PAUSE, 1)
    act(inst, engine.TERMINATE, 2)
    assert at(inst, 3).status == engine.TERMINATED
    act(inst, engine.RESTART, 20)
    assert at(inst, 25).status == engine.RUNNING
    assert at(inst, 30).status == engine.COMPLETE
