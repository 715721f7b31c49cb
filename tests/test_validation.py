"""Checks of user-facing parameters: whole-string patterns, dot segments, reserved ids, durations."""

from __future__ import annotations

import math
import re
from datetime import timedelta

import pytest

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.validation import (
    validate_attempt,
    validate_event_payload,
    validate_event_type,
    validate_instance_id,
    validate_instance_retention,
    validate_new_instance_id,
    validate_positive_seconds,
    validate_step_name,
    validate_workflow_name,
)


@pytest.mark.parametrize(
    ("check", "value"),
    [
        (validate_event_type, "approval\n"),
        (validate_new_instance_id, "run-1\n"),
        (validate_instance_id, "run-1\n"),
        (validate_workflow_name, "wf\n"),
        (validate_step_name, "load\n"),
        (validate_step_name, "load-1\n"),
    ],
)
def test_a_trailing_newline_is_refused(check, value):
    with pytest.raises(CloudflareWorkflowsConfigurationError):
        check(value)


@pytest.mark.parametrize(
    "check",
    [
        validate_workflow_name,
        validate_instance_id,
        validate_new_instance_id,
        validate_step_name,
        validate_event_type,
    ],
)
@pytest.mark.parametrize("value", [".", ".."])
def test_dot_segments_are_refused_as_any_name_or_id(check, value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="not allowed"):
        check(value)


def test_names_with_dots_inside_are_still_names():
    assert validate_workflow_name("etl.v2") == "etl.v2"
    assert validate_instance_id("...") == "..."
    assert validate_step_name("load rows.csv") == "load rows.csv"


def test_step_name_counter_comes_on_top_of_the_256_characters():
    assert validate_step_name("x" * 255 + "-1") == "x" * 255 + "-1"
    assert validate_step_name("x" * 256 + "-12") == "x" * 256 + "-12"
    assert validate_step_name("x" * 256) == "x" * 256
    for too_long in ("x" * 257, "x" * 257 + "-1", "x" * 250 + "-" + "1" * 11):
        with pytest.raises(CloudflareWorkflowsConfigurationError, match="at most 256 characters"):
            validate_step_name(too_long)


@pytest.mark.parametrize("value", ["batch", "terminate", "terminateAll"])
def test_route_names_are_refused_as_new_instance_ids(value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="name of an API route"):
        validate_new_instance_id(value)


@pytest.mark.parametrize("value", ["None", "null"])
def test_a_rendered_missing_value_is_refused_as_a_new_instance_id(value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="missing XCom"):
        validate_new_instance_id(value)


def test_similar_ids_stay_valid():
    for value in ("Batch", "batch-1", "terminate_all", "none-1", "nullable"):
        assert validate_new_instance_id(value) == value


@pytest.mark.parametrize(
    ("value", "expected"), [("3", 3), (" 12 ", 12), ("", None), ("None", None), (2, 2), (None, None)]
)
def test_attempt_accepts_ascii_digits_and_none(value, expected):
    assert validate_attempt(value) == expected


@pytest.mark.parametrize("value", ["१", "٣", "²", "1.0", "-1", "0", 0, True, 1.5])
def test_attempt_refuses_other_digits_and_non_integers(value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="attempt must be a whole number"):
        validate_attempt(value)


def test_event_without_payload_sends_an_empty_object():
    assert validate_event_payload(None) == b"{}"
    assert validate_event_payload([]) == b"[]"
    assert validate_event_payload(0) == b"0"


@pytest.mark.parametrize(("value", "expected"), [(5, 5.0), (0.25, 0.25), (timedelta(minutes=2), 120.0)])
def test_positive_seconds(value, expected):
    assert validate_positive_seconds(value, "timeout") == expected


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, 0, -1, timedelta(0), True, "10", None])
def test_positive_seconds_refuses_nan_inf_and_non_numbers(value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="poke_interval must be"):
        validate_positive_seconds(value, "poke_interval")


@pytest.mark.parametrize(
    "value",
    [
        None,
        {},
        {"success_retention": "5 minutes", "error_retention": 60_000},
        {"error_retention": "1 day"},
        {"success_retention": "2.5 weeks"},
        {"success_retention": "30 days"},
    ],
)
def test_instance_retention_valid_shapes(value):
    assert validate_instance_retention(value) == value


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("forever", "must be a dict"),
        (7, "must be a dict"),
        (["success_retention"], "must be a dict"),
        ({"retention": "1 day"}, "unknown keys \\['retention'\\]"),
        ({"success_retention": "forever"}, "must be a number of milliseconds"),
        ({"success_retention": "5 minutes\n"}, "must be a number of milliseconds"),
        ({"success_retention": "5minutes"}, "must be a number of milliseconds"),
        ({"success_retention": "0 days"}, "must be a number of milliseconds"),
        ({"success_retention": -5}, "must be a number of milliseconds"),
        ({"success_retention": math.nan}, "must be a number of milliseconds"),
        ({"success_retention": True}, "must be a number of milliseconds"),
    ],
)
def test_instance_retention_refused_with_a_clear_message(value, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        validate_instance_retention(value)


# --- a missing value rendered into a template --------------------------------------------------------

UPSTREAM_HINT = "is the task that pushes it upstream of this task, and did it push a value?"


def test_a_python_none_asks_for_the_upstream_task():
    with pytest.raises(CloudflareWorkflowsConfigurationError) as refused:
        validate_instance_id(None)
    assert str(refused.value).startswith("instance_id must be a non-empty string, got None. It looks like")
    assert UPSTREAM_HINT in str(refused.value)
    with pytest.raises(CloudflareWorkflowsConfigurationError) as refused:
        validate_instance_id(["i"])
    assert UPSTREAM_HINT not in str(refused.value)


@pytest.mark.parametrize("task", ["step sensor", "send event", "change status", "step output"])
def test_an_instance_id_rendered_as_none_gets_the_404_explained(task, mocked_api_conn, requests_mock):
    from airflow_provider_cfworkflows.operators.workflows import (
        CloudflareWorkflowChangeInstanceStatusOperator,
        CloudflareWorkflowSendEventOperator,
        CloudflareWorkflowStepOutputOperator,
    )
    from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
    from tests.fakes import RecordingTaskInstance
    from tests.helpers import ACCOUNT_ID

    for method in ("GET", "POST", "PATCH"):
        requests_mock.register_uri(
            method,
            re.compile(rf"{re.escape(mocked_api_conn)}/accounts/{ACCOUNT_ID}/workflows/wf/instances/None.*"),
            status_code=404,
            json={"success": False, "errors": [{"code": 10400, "message": "not_found"}], "result": None},
        )
    common = {"task_id": "t", "workflow_name": "wf", "instance_id": "None"}
    operator = {
        "step sensor": lambda: CloudflareWorkflowStepSensor(step_name="load", **common),
        "send event": lambda: CloudflareWorkflowSendEventOperator(event_type="go", **common),
        "change status": lambda: CloudflareWorkflowChangeInstanceStatusOperator(action="pause", **common),
        "step output": lambda: CloudflareWorkflowStepOutputOperator(step_name="load", **common),
    }[task]()

    with pytest.raises(CloudflareWorkflowsNotFoundError) as failed:
        operator.execute({"ti": RecordingTaskInstance()})

    assert failed.value.message == (
        "Instance 'None' of workflow 'wf' was not found: check workflow_name, instance_id and the account "
        "(account_id or the connection's login). It looks like a missing value rendered into a template (a "
        f"missing XCom renders as None, 'None' or 'null'): {UPSTREAM_HINT}"
    )
