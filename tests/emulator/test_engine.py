"""The emulator's simulation, scenario parsing and byte streams, without HTTP."""

from __future__ import annotations

import hashlib

import pytest

from airflow_provider_cfworkflows.emulator import engine
from airflow_provider_cfworkflows.emulator.scenario import (
    BUNDLED_DEMO,
    ScenarioError,
    load_scenario,
    parse_scenario,
    parse_workflow,
)
from airflow_provider_cfworkflows.emulator.streams import iter_stream_bytes, stream_digest


def instance(steps, **workflow):
    spec = parse_workflow({"name": "wf", "steps": steps, **workflow})
    return engine.Instance(id="i", workflow=spec, created_at=1000.0)


def test_steps_run_in_order_and_complete():
    inst = instance(
        [{"name": "a", "duration": 2, "output": 1}, {"name": "b", "duration": 3, "output": 2}], output="done"
    )
    assert engine.simulate(inst, 1001).status == engine.RUNNING
    mid = engine.simulate(inst, 1003)
    assert [(s.logged_name, s.success) for s in mid.steps] == [("a-1", True), ("b-1", None)]
    done = engine.simulate(inst, 1005)
    assert (done.status, done.output, done.end) == (engine.COMPLETE, "done", 1005)


def test_counter_suffix_per_name_and_kind():
    spec = parse_workflow(
        {
            "name": "wf",
            "steps": [
                {"name": "fetch"},
                {"name": "fetch"},
                {"name": "approve"},
                {"name": "approve", "type": "waitForEvent", "event_type": "approve"},
            ],
        }
    )
    assert engine.counted_names(spec) == ["fetch-1", "fetch-2", "approve-1", "approve-1"]


def test_retries_then_success_and_then_failure():
    flaky = instance(
        [
            {
                "name": "f",
                "duration": 1,
                "fail_attempts": 2,
                "retries": {"limit": 3, "delay": 10, "backoff": "exponential"},
                "output": "ok",
            }
        ]
    )
    retrying = engine.simulate(flaky, 1005)
    step = retrying.steps[0]
    assert retrying.status == engine.WAITING
    assert step.retrying
    assert step.error == {"name": "Error", "message": "f failed"}
    # attempts: 1000-1001 fail, wait 10, 1011-1012 fail, wait 20, 1032-1033 success
    done = engine.simulate(flaky, 1033)
    assert [a.success for a in done.steps[0].attempts] == [False, False, True]
    assert done.status == engine.COMPLETE

    doomed = instance(
        [
            {
                "name": "f",
                "duration": 1,
                "fail_attempts": 5,
                "retries": {"limit": 1, "delay": 1, "backoff": "constant"},
            }
        ]
    )
    failed = engine.simulate(doomed, 1010)
    assert (failed.status, failed.error) == (engine.ERRORED, {"name": "Error", "message": "f failed"})


def test_wait_for_event_buffering_and_timeout():
    waiting = instance(
        [
            {"name": "s", "duration": 5},
            {"name": "ok", "type": "waitForEvent", "event_type": "go", "timeout": 60},
        ]
    )
    waiting.events.append(engine.Event("go", {"early": True}, at=1001))  # before the step starts
    done = engine.simulate(waiting, 1006)
    assert done.status == engine.COMPLETE
    assert done.steps[1].output == {"early": True}
    assert done.steps[1].end == 1005

    timed_out = instance([{"name": "ok", "type": "waitForEvent", "event_type": "go", "timeout": 60}])
    assert engine.simulate(timed_out, 1030).status == engine.WAITING
    after = engine.simulate(timed_out, 1061)
    assert after.status == engine.ERRORED
    assert "timed out" in after.error["message"]


def test_pause_freezes_progress_and_terminate_and_restart():
    inst = instance([{"name": "long", "duration": 10}])
    inst.actions += [engine.Action("pause", 1002), engine.Action("resume", 1102)]
    assert engine.simulate(inst, 1050).status == engine.PAUSED
    assert engine.simulate(inst, 1109).status == engine.RUNNING
    assert engine.simulate(inst, 1110).status == engine.COMPLETE

    inst.actions.append(engine.Action("terminate", 1200))  # after completion: stays complete
    inst2 = instance([{"name": "long", "duration": 10}])
    inst2.actions.append(engine.Action("terminate", 1005))
    assert engine.simulate(inst2, 1006).status == engine.TERMINATED
    inst2.actions.append(engine.Action("restart", 1100))
    assert engine.simulate(inst2, 1105).status == engine.RUNNING
    assert engine.simulate(inst2, 1110).status == engine.COMPLETE


def test_restart_from_a_step_replays_earlier_steps():
    inst = instance(
        [{"name": "a", "duration": 50, "output": "A"}, {"name": "b", "duration": 1, "output": "B"}]
    )
    inst.actions.append(engine.Action("restart", 1010, {"name": "b", "count": 1}))
    snapshot = engine.simulate(inst, 1012)
    assert snapshot.status == engine.COMPLETE
    assert [s.output for s in snapshot.steps] == ["A", "B"]


def test_queue_delay():
    inst = instance([{"name": "a", "duration": 1}], queue_delay=5)
    assert engine.simulate(inst, 1004).status == engine.QUEUED
    assert engine.simulate(inst, 1005.5).status == engine.RUNNING


def test_streams_are_deterministic_and_sized():
    chunks = list(iter_stream_bytes(3 * 1024 * 1024 + 17, seed=5, chunk_size=1 << 20))
    data = b"".join(chunks)
    assert len(data) == 3 * 1024 * 1024 + 17
    assert max(len(c) for c in chunks) == 1 << 20
    assert hashlib.sha256(data).hexdigest() == stream_digest(len(data), 5)
    assert stream_digest(1000, 5) != stream_digest(1000, 6)
    assert b"".join(iter_stream_bytes(1000, 5, chunk_size=7)) == data[:1000]


def test_bundled_demo_loads():
    scenario = load_scenario(BUNDLED_DEMO)
    assert {w.name for w in scenario.workflows} >= {
        "demo-pipeline",
        "demo-fan-out",
        "demo-flaky",
        "demo-sensitive",
    }


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"workflows": [{"name": "w", "steps": [{"name": "s", "type": "loop"}]}]}, "type must be one of"),
        (
            {"workflows": [{"name": "w", "steps": [{"name": "s", "duration": -1}]}]},
            "duration must be a number",
        ),
        (
            {"workflows": [{"name": "w", "steps": [{"name": "s", "durration": 1}]}]},
            "unknown field(s) ['durration']",
        ),
        (
            {"workflows": [{"name": "w", "steps": [{"name": "s", "type": "waitForEvent"}]}]},
            "event_type must be",
        ),
        ({"workflows": [{"name": "w"}, {"name": "w"}]}, "names must be unique"),
        ({"account_id": "nope", "workflows": []}, "32 lowercase hex"),
        (
            {"workflows": [{"name": "w", "steps": [{"name": "s", "output": 1, "stream": {"size": 1}}]}]},
            "both 'output' and 'stream'",
        ),
    ],
)
def test_bad_scenarios_name_the_field(document, fragment):
    with pytest.raises(ScenarioError) as caught:
        parse_scenario(document)
    assert fragment in str(caught.value)
