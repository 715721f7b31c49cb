"""The pure decisions shared by sensors, operators and triggers: states, the step-check plan, verdicts."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.checks import (
    MAX_SUMMARY_OUTPUT_BYTES,
    InstanceQuery,
    StepQuery,
    Verdict,
    check_states,
    evaluate_instance,
    evaluate_step,
    instance_not_found_error,
    plan_step_check,
    summary_output,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsUnknownWorkflowError,
)
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.remote_text import (
    MAX_XCOM_DEPTH,
)
from airflow_provider_cfworkflows.statuses import InstanceStatus

SUCCESS, FAILURE = ("complete",), ("errored",)
ALL_STATUSES = [status.value for status in InstanceStatus]
TERMINAL = ("complete", "errored", "terminated")
LABEL = "instance 'i' of workflow 'wf'"


def step(status, error=None, output=None):
    return StepOutput(status=status, error=RemoteError("Error", error) if error else None, output=output)


def decide(found, instance_status=None, success=SUCCESS, failure=FAILURE):
    return evaluate_step(
        found,
        step_name="load-1",
        instance_label=LABEL,
        instance_status=instance_status,
        success_states=success,
        failure_states=failure,
    )


def drive(answers, step_name="load", success=SUCCESS, failure=FAILURE, known_name=None, step_type="step"):
    """Run the plan against ``answers`` (a callable: query -> answer, or a list consumed in order)."""
    plan = plan_step_check(
        step_name,
        step_type=step_type,
        success_states=success,
        failure_states=failure,
        instance_label=LABEL,
        known_name=known_name,
    )
    queries, answer = [], None
    while True:
        try:
            query = plan.send(answer)
        except StopIteration as done:
            return done.value, queries
        queries.append(query)
        answer = answers(query) if callable(answers) else answers.pop(0)


# --- states --------------------------------------------------------------------------------------


def test_state_validation():
    success, failure = check_states([InstanceStatus.COMPLETE], [])
    assert (success, failure) == (("complete",), ())
    assert type(success[0]) is str  # plain strings: they go into trigger kwargs and XCom
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=r"overlap on \['errored'\]"):
        check_states(("complete", "errored"), ("errored",))
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="list or tuple of statuses"):
        check_states("complete", ())
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="status must be one of"):
        check_states(("done",), ())
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="at least one"):
        check_states((), ("errored",))


# --- evaluate_step -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_status_of_a_step_with_a_running_instance(status):
    check = decide(step(status), instance_status="running")
    expected = {"complete": Verdict.SUCCESS, "errored": Verdict.FAILURE}.get(status, Verdict.PENDING)
    assert check.verdict is expected
    assert check.status == status
    assert check.step_name == "load-1"


@pytest.mark.parametrize("instance_status", ALL_STATUSES)
def test_every_instance_status_while_the_step_is_not_final(instance_status):
    check = decide(step("waiting"), instance_status=instance_status)
    assert check.verdict is (Verdict.FAILURE if instance_status in TERMINAL else Verdict.PENDING)
    if instance_status in TERMINAL:
        assert f"the instance is {instance_status}: the step cannot finish" in check.message


def test_retrying_step_is_pending_and_says_why():
    check = decide(step("running", error="upstream 503"), instance_status="waiting")
    assert check.verdict is Verdict.PENDING
    assert check.error == RemoteError("Error", "upstream 503")
    assert "retrying after a failed attempt: Error: upstream 503" in check.message


@pytest.mark.parametrize("instance_status", ["hibernating", None])
def test_unknown_statuses_are_pending_not_a_crash(instance_status):
    check = decide(step("sleepwalking"), instance_status=instance_status)
    assert check.verdict is Verdict.PENDING
    assert "does not know ('sleepwalking')" in check.message


def test_missing_step_pending_until_the_instance_ends():
    entries = [{"name": "prepare-1", "type": "step"}, {"name": "approval-1", "type": "waitForEvent"}]
    pending, _ = drive([{"status": "running", "steps": entries}])
    assert pending.verdict is Verdict.PENDING
    assert f"Step 'load' of {LABEL} has not started yet" in pending.message
    assert "'prepare-1' (step), 'approval-1' (waitForEvent)" in pending.message
    for status in TERMINAL:
        never, _ = drive([{"status": status, "steps": entries}])
        assert never.verdict is Verdict.FAILURE
        assert (
            f"Step 'load' of {LABEL} never ran (no step is logged as 'load-1'): the instance is {status}"
            in (never.message)
        )
        assert "'prepare-1' (step), 'approval-1' (waitForEvent)" in never.message


def test_branching_configuration_succeeds_on_either():
    for status in ("complete", "errored"):
        check = decide(
            step(status, error="x" if status == "errored" else None), success=TERMINAL[:2], failure=()
        )
        assert (check.verdict, check.status) == (Verdict.SUCCESS, status)


def test_failure_message_carries_the_remote_error():
    check = decide(step("errored", error="upstream 503"))
    assert check.message == f"Step 'load-1' of {LABEL} is errored: Error: upstream 503."


def test_a_remote_message_that_ends_a_sentence_gets_no_second_full_stop():
    too_large = "Step load output is too large. Maximum allowed size is 1MiB."
    assert decide(step("errored", error=too_large)).message == (
        f"Step 'load-1' of {LABEL} is errored: Error: {too_large}"
    )
    assert decide(step("running", error="Is it down?")).message == (
        f"Step 'load-1' of {LABEL} is retrying after a failed attempt: Error: Is it down?"
    )


def test_terminal_step_in_neither_set_fails():
    check = decide(step("complete"), success=("waiting",), failure=())
    assert check.verdict is Verdict.FAILURE
    assert "neither a success state ['waiting']" in check.message


# --- plan_step_check: which calls, in which order ------------------------------------------------

FULL = InstanceQuery()
RETRYING = [
    {"success": False, "error": {"name": "Error", "message": "upstream 503"}},
    {"success": None, "error": None},
]


def details(status="running", *entries):
    return {"status": status, "steps": list(entries)}


def entry(name="load-1", kind="step", **fields):
    return {"name": name, "type": kind, **fields}


@pytest.mark.parametrize(
    "answer",
    [
        details("running", entry(attempts=[])),  # no success field
        details("running", entry(success="yes")),
        details("running", entry(success=False, attempts=[{"success": False, "error": None}])),  # no error
        details("running", entry(kind="waitForEvent")),  # no finished field
        details("running", entry(success=None), entry(success=True)),  # two entries under one name
    ],
)
def test_entries_the_details_cannot_read_are_asked_of_step(answer):
    step_type = answer["steps"][0]["type"]
    check, queries = drive([answer, ("load-1", step("complete"))], step_type=step_type)
    assert queries == [FULL, StepQuery(("load-1",))]
    assert (check.verdict, check.step_name) == (Verdict.SUCCESS, "load-1")


def test_the_entry_of_the_other_kind_is_not_the_step():
    answer = details("running", entry(kind="waitForEvent", finished=True, error=None))
    check, queries = drive([answer])
    assert queries == [FULL]
    assert (check.verdict, check.status) == (Verdict.PENDING, None)


@pytest.mark.parametrize(
    ("answer", "status"),
    [
        (details("running"), None),  # not started
        (details("waiting", entry(success=None, attempts=RETRYING)), "running"),  # retrying
        (details("running", entry(success=None, attempts=[])), "running"),
        (details("waiting", entry(kind="waitForEvent", finished=False, error=None)), "waiting"),
    ],
)
def test_a_look_at_a_step_not_finished_costs_one_request(answer, status):
    step_type = answer["steps"][0]["type"] if answer["steps"] else "step"
    check, queries = drive([answer], step_type=step_type)
    assert queries == [FULL]
    assert (check.verdict, check.status) == (Verdict.PENDING, status)


def test_a_finished_step_is_decided_from_the_details():
    check, queries = drive([details("running", entry(success=True, attempts=[]))])
    assert queries == [FULL]
    assert (check.verdict, check.status, check.step_name, check.message) == (
        Verdict.SUCCESS,
        "complete",
        "load-1",
        f"Step 'load-1' of {LABEL} is complete.",
    )
    failed = details("errored", entry(success=False, attempts=RETRYING[:1]))
    check, queries = drive([failed])
    assert queries == [FULL]
    assert check.message == f"Step 'load-1' of {LABEL} is errored: Error: upstream 503."


def test_retrying_is_read_from_the_attempts():
    check, _ = drive([details("waiting", entry(success=None, attempts=RETRYING))])
    assert "retrying after a failed attempt: Error: upstream 503" in check.message
    assert check.error == RemoteError("Error", "upstream 503")


def test_code_name_with_digits_falls_back_and_the_known_name_goes_first():
    answer = details("running", entry("phase-2-1", success=True, attempts=[]))
    check, queries = drive([answer], step_name="phase-2")
    assert queries == [FULL]  # both names are read from the one answer
    assert check.step_name == "phase-2-1"
    as_given = details("running", entry("phase-2", success=True), entry("phase-2-1", success=None))
    assert drive([as_given], step_name="phase-2")[0].step_name == "phase-2"
    assert drive([as_given], step_name="phase-2", known_name="phase-2-1")[0].step_name == "phase-2-1"


def test_never_ran_is_decided_from_one_snapshot():
    finished = details("complete", entry("other-1", success=True))
    check, queries = drive([finished])
    assert queries == [FULL]
    assert check.verdict is Verdict.FAILURE
    assert "never ran" in check.message
    assert "'other-1' (step)" in check.message


def test_a_step_not_final_on_a_final_instance_cannot_finish():
    answer = details("terminated", entry(kind="waitForEvent", finished=False, error=None))
    check, queries = drive([answer], step_type="waitForEvent")
    assert queries == [FULL]
    assert check.verdict is Verdict.FAILURE
    assert "the instance is terminated: the step cannot finish" in check.message


def test_details_without_steps_fall_back_to_step_under_each_name():
    check, queries = drive([{"status": "running"}, ("phase-2-1", step("complete"))], step_name="phase-2")
    assert queries == [FULL, StepQuery(("phase-2", "phase-2-1"))]
    assert check.step_name == "phase-2-1"
    check, queries = drive([{"status": "errored"}, None])
    assert queries == [FULL, StepQuery(("load-1",))]
    assert "never ran" in check.message


def test_an_entry_that_cannot_be_read_is_asked_for_first():
    answer = details("running", entry("phase-2-1", success="yes"))
    _, queries = drive([answer, ("phase-2-1", step("running"))], step_name="phase-2")
    assert queries == [FULL, StepQuery(("phase-2-1", "phase-2"))]


def test_a_step_check_carries_the_details_it_was_decided_on():
    answer = details("running", entry(success=True))
    check, _ = drive([answer])
    assert check.details is answer


# --- evaluate_instance ---------------------------------------------------------------------------


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_instance_status(status):
    check = evaluate_instance(
        {"status": status, "error": {"name": "E", "message": "m"}, "output": 1},
        success_states=("complete",),
        failure_states=("errored", "terminated"),
    )
    expected = {"complete": Verdict.SUCCESS, "errored": Verdict.FAILURE, "terminated": Verdict.FAILURE}
    assert check.verdict is expected.get(status, Verdict.PENDING)
    assert check.status == status
    if status == "complete":
        assert check.output == 1
    if status == "errored":
        assert check.message == "The instance is errored: E: m."


@pytest.mark.parametrize("details", [{"status": "hibernating"}, {}, {"status": 7}])
def test_unknown_or_missing_instance_status_is_pending(details):
    check = evaluate_instance(details, success_states=("complete",), failure_states=("errored",))
    assert check.verdict is Verdict.PENDING


def test_terminal_instance_status_in_neither_set_fails():
    check = evaluate_instance({"status": "terminated"}, success_states=("complete",), failure_states=())
    assert check.verdict is Verdict.FAILURE
    assert "neither a success state" in check.message


# --- failure details and summaries ---------------------------------------------------------------


def test_summary_output():
    assert summary_output({"a": 1}) == {"output": {"a": 1}}
    assert summary_output(None) == {"output": None}
    big = "x" * MAX_SUMMARY_OUTPUT_BYTES
    assert summary_output(big) == {"output": None, "output_truncated": True, "output_bytes": len(big) + 2}
    assert summary_output({1, 2}) == {"output": None, "output_truncated": True, "output_bytes": None}


def test_summary_output_is_what_xcom_can_carry():
    deep: object = 1
    for _ in range(MAX_XCOM_DEPTH + 1):
        deep = [deep]
    assert summary_output(deep) == {"output": None, "output_truncated": True, "output_bytes": None}
    assert summary_output(deep[0]) == {"output": deep[0]}  # type: ignore[index]
    assert summary_output({"text": "cut \ud83d"}) == {"output": {"text": "cut \\ud83d"}}


def test_instance_not_found_error_says_what_was_looked_for():
    error = instance_not_found_error(
        CloudflareWorkflowsNotFoundError("Not found", http_status=404, method="GET", path="/x"), "wf", "i-1"
    )
    assert isinstance(error, CloudflareWorkflowsNotFoundError)
    assert error.http_status == 404
    assert "Instance 'i-1' of workflow 'wf' was not found" in str(error)


def test_an_unknown_workflow_keeps_the_hooks_message_listing_the_workflows():
    unknown = CloudflareWorkflowsUnknownWorkflowError("Workflow 'wf' was not found: the account has 'wf2'")
    assert instance_not_found_error(unknown, "wf", "i-1") is unknown
    plain = instance_not_found_error(CloudflareWorkflowsNotFoundError("Not found"), "wf", "i-1")
    assert "Instance 'i-1' of workflow 'wf' was not found" in str(plain)
