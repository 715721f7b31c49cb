"""Reading instance details: logged step names, step-log entries, failure lines, missing steps."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.instance_details import (
    StepReading,
    explain_missing_step,
    instance_failure_lines,
    read_step_entry,
    received_event_count,
    restart_point,
    step_failure_lines,
    step_name_candidates,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.remote_text import MAX_LISTED_ITEMS, MAX_NAME_CHARS, MAX_REMOTE_ERROR_CHARS
from airflow_provider_cfworkflows.validation import MAX_STEP_NAME_LENGTH, validate_step_name

LABEL = "instance 'i' of workflow 'wf'"
RETRYING = [
    {"success": False, "error": {"name": "Error", "message": "upstream 503"}},
    {"success": None, "error": None},
]


def details(status="running", *entries):
    return {"status": status, "steps": list(entries)}


def entry(name="load-1", kind="step", **fields):
    return {"name": name, "type": kind, **fields}


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        ("fetch data", ("fetch data-1",)),  # as written in code: its first run
        ("fetch data-2", ("fetch data-2", "fetch data-2-1")),  # as logged: its second run
        ("phase-2", ("phase-2", "phase-2-1")),  # a code name ending in -<digits>
        ("x-10", ("x-10", "x-10-1")),
        ("v1.2", ("v1.2-1",)),
        ("end-", ("end--1",)),
        ("run-2\n", ("run-2\n-1",)),  # the counter must end the name: no match before a newline
        ("run-٣", ("run-٣-1",)),  # ASCII digits only
    ],
)
def test_step_name_candidates(name, candidates):
    assert step_name_candidates(name) == candidates


@pytest.mark.parametrize("base", [254, 255, 256])
def test_a_long_logged_name_has_only_candidates_that_are_valid_step_names(base):
    logged = "x" * base + "-1"
    candidates = step_name_candidates(logged)
    assert candidates[0] == logged
    assert len(candidates) == (2 if len(logged) <= MAX_STEP_NAME_LENGTH else 1)
    for name in candidates:
        validate_step_name(name)  # no configuration error after the first request


def test_a_known_name_goes_first_only_when_it_is_a_candidate():
    assert step_name_candidates("phase-2", known_name="phase-2-1") == ("phase-2-1", "phase-2")
    assert step_name_candidates("phase-2", known_name="other-1") == ("phase-2", "phase-2-1")


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"success": None, "attempts": [{"success": None}]}, "running", None),
        ({"success": None, "attempts": RETRYING}, "running", RemoteError("Error", "upstream 503")),
        (
            {"success": True, "attempts": [{"success": False, "error": {"name": "E", "message": "m"}}, {}]},
            "complete",
            None,
        ),
        ({"success": False, "attempts": RETRYING[:1]}, "errored", RemoteError("Error", "upstream 503")),
    ],
)
def test_a_step_entry_reads_as_step_would_report_it(fields, status, error):
    reading = read_step_entry(details("running", entry(**fields)), ("load-1",), "step")
    assert reading == StepReading(settled=True, step=StepOutput(status, error, None), name="load-1")


@pytest.mark.parametrize(
    ("fields", "status", "error"),
    [
        ({"finished": False, "error": None}, "waiting", None),
        ({"finished": True, "error": None}, "complete", None),
        (
            {"finished": True, "error": {"name": "Timeout", "message": "t"}},
            "errored",
            RemoteError("Timeout", "t"),
        ),
    ],
)
def test_a_wait_for_event_entry_reads_as_step_would_report_it(fields, status, error):
    reading = read_step_entry(
        details("waiting", entry(kind="waitForEvent", **fields)), ("load-1",), "waitForEvent"
    )
    assert reading.settled
    assert reading.step == StepOutput(status, error, None)


def test_failure_lines():
    answer = {
        "status": "errored",
        "error": {"name": "Error", "message": "b"},
        "steps": [
            {
                "name": "load-1",
                "type": "step",
                "success": False,
                "attempts": [
                    {"success": False, "error": {"name": "Error", "message": "a"}},
                    {"success": False, "error": {"name": "Error", "message": "b"}},
                ],
            },
            {"name": "load-1", "type": "waitForEvent", "error": {"name": "Timeout", "message": "t"}},
            {"name": "ok-1", "type": "step", "success": True, "attempts": [{"success": False}, {}]},
            {"type": "termination", "trigger": {"source": "api"}},
        ],
    }
    assert step_failure_lines(answer, "load-1", "step") == [
        "instance errored: Error: b",
        "attempt 1: Error: a",
        "attempt 2: Error: b",
    ]
    assert step_failure_lines(answer, "load-1", "waitForEvent")[-1] == "error: Timeout: t"
    assert instance_failure_lines(answer) == [
        "step 'load-1' (step) failed: Error: b (2 failed attempt(s))",
        "step 'load-1' (waitForEvent) failed: Timeout: t",
        "step 'ok-1': 1 failed attempt(s), then went on",
    ]


def explain(answer, attempt=None, step_type="step"):
    return explain_missing_step(
        answer,
        step_label="load",
        tried=("load-1",),
        step_type=step_type,
        instance_label=LABEL,
        attempt=attempt,
    )


def test_messages_about_an_instance_with_40000_steps_stay_small():
    error = {"name": "E" * 5000, "message": "m" * 2_000_000}
    steps = [
        entry(f"step {n}-1", success=False, attempts=[{"success": False, "error": error}])
        for n in range(40_000)
    ]
    steps.append(entry("n" * 5000, success=False, attempts=[{"success": False, "error": error}] * 500))
    huge = details("errored", *steps)

    final, message = explain_missing_step(
        huge, step_label="nope", tried=("nope-1",), step_type="step", instance_label=LABEL
    )
    step_lines = step_failure_lines(huge, "n" * 5000, "step")
    instance_lines = instance_failure_lines(huge)

    assert final
    assert f"… and {40_001 - MAX_LISTED_ITEMS} more steps" in message
    assert len(message) < MAX_LISTED_ITEMS * (MAX_NAME_CHARS + 60) + 1000
    assert len(instance_lines) == MAX_LISTED_ITEMS + 1
    assert instance_lines[-1] == f"… and {40_001 - MAX_LISTED_ITEMS} more steps with failed attempts"
    assert step_lines[-1] == f"… and {500 - MAX_LISTED_ITEMS} more failed attempts"
    assert max(map(len, step_lines + instance_lines)) < 2 * MAX_NAME_CHARS + MAX_REMOTE_ERROR_CHARS + 200


def test_a_missing_step_is_not_started_until_the_instance_ends():
    assert explain(details("running", entry("prepare-1"))) == (
        False,
        f"Step 'load' of {LABEL} has not started yet (the instance is running; steps so far: "
        "'prepare-1' (step)).",
    )
    final, message = explain(details("complete", entry("prepare-1")), step_type="waitForEvent")
    assert final
    assert message.startswith(
        f"The waitForEvent step 'load' of {LABEL} never ran (no step is logged as 'load-1'): the instance "
        "is complete"
    )


def test_an_attempt_past_the_last_is_named_exactly():
    ran_two = entry(success=False, attempts=RETRYING[:1] * 2)
    assert explain(details("errored", ran_two), attempt=3) == (
        True,
        f"Attempt 3 of step 'load' of {LABEL} does not exist: the step ran 2 attempt(s) and the instance is "
        "errored, so there will never be an attempt 3.",
    )
    assert explain(details("running", ran_two), attempt=3) == (
        False,
        f"Attempt 3 of step 'load' of {LABEL} has not started yet (2 attempt(s) so far; the instance is "
        "running).",
    )


# --- where to restart, and events received -------------------------------------------------------------

FAILED_DO = entry(
    "load-2", success=False, attempts=[{"success": False, "error": {"name": "E", "message": "x"}}]
)


@pytest.mark.parametrize(
    ("entries", "point"),
    [
        ((entry("fetch data-1", success=True), FAILED_DO), {"name": "load", "count": 2, "type": "do"}),
        ((entry("phase-2-1", success=False),), {"name": "phase-2", "count": 1, "type": "do"}),
        (
            (
                entry(
                    "gate-1",
                    "waitForEvent",
                    finished=True,
                    error={"name": "WorkflowTimeoutError", "message": "t"},
                ),
            ),
            {"name": "gate", "count": 1, "type": "waitForEvent"},
        ),
        ((entry("a-1", success=False), entry("b-1", success=False)), {"name": "a", "count": 1, "type": "do"}),
        ((entry("a-1", success=True), entry("b-1", success=None)), None),  # nothing failed
        ((entry("undo-1", "rollback", success=False),), None),  # a rollback is not restartable
        ((entry("oddly named", success=False),), None),  # no counter suffix: cannot be named
    ],
)
def test_restart_point_is_the_first_failed_step_by_base_name_and_count(entries, point):
    assert restart_point(details("errored", *entries)) == point


def test_received_event_count_counts_waits_for_the_type_that_got_their_event():
    got = entry("gate-1", "waitForEvent", event_type="approval", finished=True, error=None)
    waiting = entry("gate-2", "waitForEvent", event_type="approval", finished=False, error=None)
    timed_out = entry("gate-3", "waitForEvent", event_type="approval", finished=True, error={"name": "T"})
    other = entry("other-1", "waitForEvent", event_type="other", finished=True, error=None)
    assert received_event_count(details("waiting", got, waiting, timed_out, other), "approval") == 1
    assert received_event_count(details("waiting", entry("x-1", success=True)), "approval") == 0
    assert received_event_count({"status": "waiting"}, "approval") is None  # no step log
    unlabelled = entry("gate-1", "waitForEvent", finished=True, error=None)
    assert received_event_count(details("waiting", unlabelled), "approval") is None
