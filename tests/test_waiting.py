"""The pure decisions shared by sensors and triggers."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.models import RemoteError, StepOutput
from airflow_provider_cfworkflows.statuses import InstanceStatus
from airflow_provider_cfworkflows.waiting import (
    Verdict,
    check_states,
    evaluate_instance,
    evaluate_step,
    instance_failure_lines,
    small_output,
    step_failure_lines,
    step_name_candidates,
)

SUCCESS, FAILURE = ("complete",), ("errored",)
ALL_STATUSES = [status.value for status in InstanceStatus]


def step(status, error=None, output=None):
    return StepOutput(status=status, error=RemoteError("Error", error) if error else None, output=output)


def decide(found, instance_status=None, details=None, success=SUCCESS, failure=FAILURE):
    return evaluate_step(
        found,
        step_label="load",
        step_name="load-1" if found else None,
        instance_status=instance_status,
        instance_details=details,
        success_states=success,
        failure_states=failure,
    )


@pytest.mark.parametrize(
    ("name", "candidates"),
    [
        ("fetch data", ("fetch data-1",)),
        ("fetch data-2", ("fetch data-2", "fetch data-2-1")),
        ("phase-2", ("phase-2", "phase-2-1")),
        ("v1.2", ("v1.2-1",)),
    ],
)
def test_step_name_candidates(name, candidates):
    assert step_name_candidates(name) == candidates


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_status_of_a_step_with_a_running_instance(status):
    check = decide(step(status), instance_status="running")
    expected = {"complete": Verdict.SUCCESS, "errored": Verdict.FAILURE, "terminated": Verdict.PENDING}.get(
        status, Verdict.PENDING
    )
    assert check.verdict is expected
    assert check.status == status


@pytest.mark.parametrize("instance_status", ALL_STATUSES)
def test_every_instance_status_while_the_step_is_not_final(instance_status):
    check = decide(step("running"), instance_status=instance_status)
    terminal = instance_status in ("complete", "errored", "terminated")
    assert check.verdict is (Verdict.FAILURE if terminal else Verdict.PENDING)
    if terminal:
        assert "cannot finish" in check.message


def test_retrying_step_is_pending_and_says_why():
    check = decide(step("running", error="upstream 503"), instance_status="waiting")
    assert check.verdict is Verdict.PENDING
    assert "retrying after a failed attempt: Error: upstream 503" in check.message


def test_unknown_status_is_pending_not_a_crash():
    check = decide(step("hibernating"), instance_status="running")
    assert check.verdict is Verdict.PENDING
    assert "does not know ('hibernating')" in check.message


def test_missing_step_pending_until_the_instance_ends():
    details = {
        "steps": [{"name": "prepare-1", "type": "step"}, {"name": "approval-1", "type": "waitForEvent"}]
    }
    pending = decide(None, instance_status="running", details=details)
    assert pending.verdict is Verdict.PENDING
    never = decide(None, instance_status="complete", details=details)
    assert never.verdict is Verdict.FAILURE
    assert "Step 'load' never ran" in never.message
    assert "'prepare-1' (step), 'approval-1' (waitForEvent)" in never.message


def test_branching_configuration_succeeds_on_either():
    for status in ("complete", "errored"):
        assert decide(step(status), success=("complete", "errored"), failure=()).verdict is Verdict.SUCCESS


def test_terminal_step_in_neither_set_fails():
    check = decide(step("complete"), success=("waiting",), failure=())
    assert check.verdict is Verdict.FAILURE
    assert "neither a success state" in check.message


@pytest.mark.parametrize("status", ALL_STATUSES)
def test_every_instance_status(status):
    check = evaluate_instance(
        {"status": status, "error": {"name": "E", "message": "m"}, "output": 1},
        success_states=("complete",),
        failure_states=("errored", "terminated"),
    )
    expected = {"complete": Verdict.SUCCESS, "errored": Verdict.FAILURE, "terminated": Verdict.FAILURE}
    assert check.verdict is expected.get(status, Verdict.PENDING)


def test_state_validation():
    assert check_states(["complete"], []) == (("complete",), ())
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="overlap on \\['errored'\\]"):
        check_states(("complete", "errored"), ("errored",))
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="list or tuple of statuses"):
        check_states("complete", ())
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="status must be one of"):
        check_states(("done",), ())
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="at least one"):
        check_states((), ("errored",))


def test_failure_lines():
    details = {
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
        ]
    }
    assert step_failure_lines(details, "load-1", "step") == ["attempt 1: Error: a", "attempt 2: Error: b"]
    assert step_failure_lines(details, "load-1", "waitForEvent") == ["error: Timeout: t"]
    assert instance_failure_lines(details) == [
        "step 'load-1' (step) failed: Error: b",
        "step 'load-1' (waitForEvent) failed: Timeout: t",
    ]


def test_small_output():
    assert small_output({"a": 1}) == ({"a": 1}, False)
    assert small_output("x" * 70_000) == (None, True)
    assert small_output({1, 2}) == (None, True)
