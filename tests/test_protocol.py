"""Request building, response parsing and retry decisions, without any I/O."""

from __future__ import annotations

import json
from email.utils import formatdate

import pytest

from airflow_provider_cfworkflows import protocol
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsResponseError,
    CloudflareWorkflowsServerError,
)

ACCOUNT = "0123456789abcdef0123456789abcdef"
CRON_ID = "*/5 * * * *-1786599900000"
GET = protocol.ApiRequest("GET", "/accounts/x/workflows")


def envelope(result=None, success=True, errors=(), **extra) -> bytes:
    return json.dumps(
        {"success": success, "errors": list(errors), "messages": [], "result": result, **extra}
    ).encode()


def test_every_path_segment_is_percent_encoded():
    request = protocol.step_output_request(ACCOUNT, "my wf", CRON_ID, "fetch data/1-1", "step", attempt=2)

    assert request.path == (
        f"/accounts/{ACCOUNT}/workflows/my%20wf/instances/%2A%2F5%20%2A%20%2A%20%2A%20%2A-1786599900000/step"
    )
    assert request.url("https://h/client/v4") == (
        f"https://h/client/v4{request.path}?name=fetch%20data%2F1-1&type=step&attempt=2"
    )
    assert request.method == "GET"
    assert request.idempotent


def test_create_instance_is_idempotent_only_with_an_id():
    with_id = protocol.create_instance_request(ACCOUNT, "wf", instance_id="run-1", params={"a": 1})
    without_id = protocol.create_instance_request(ACCOUNT, "wf", params={"a": 1})

    assert json.loads(with_id.body) == {"instance_id": "run-1", "params": {"a": 1}}
    assert with_id.idempotent
    assert json.loads(without_id.body) == {"params": {"a": 1}}
    assert not without_id.idempotent
    assert with_id.headers() == {"Content-Type": "application/json"}


def test_send_event_is_never_retried_and_body_is_the_payload():
    request = protocol.send_event_request(ACCOUNT, "wf", "i-1", "approval", {"ok": True})

    assert request.method == "POST"
    assert request.path.endswith("/instances/i-1/events/approval")
    assert json.loads(request.body) == {"ok": True}
    assert not request.idempotent


@pytest.mark.parametrize(
    ("action", "kwargs", "body", "idempotent"),
    [
        ("pause", {}, {"status": "pause"}, True),
        ("resume", {}, {"status": "resume"}, True),
        ("terminate", {"rollback": True}, {"status": "terminate", "rollback": True}, True),
        (
            "restart",
            {"restart_from": {"name": "load", "count": 2}},
            {"status": "restart", "from": {"name": "load", "count": 2}},
            False,
        ),
    ],
)
def test_status_change_bodies(action, kwargs, body, idempotent):
    request = protocol.change_instance_status_request(ACCOUNT, "wf", "i-1", action, **kwargs)

    assert request.method == "PATCH"
    assert request.path.endswith("/instances/i-1/status")
    assert json.loads(request.body) == body
    assert request.idempotent is idempotent


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (
            lambda: protocol.change_instance_status_request(ACCOUNT, "wf", "i", "stop"),
            "action must be one of",
        ),
        (
            lambda: protocol.change_instance_status_request(ACCOUNT, "wf", "i", "pause", rollback=True),
            "rollback applies only",
        ),
        (
            lambda: protocol.step_output_request(ACCOUNT, "wf", "i", "s", "waitForEvent", attempt=1),
            "attempt is not supported",
        ),
        (lambda: protocol.step_output_request(ACCOUNT, "wf", "i", "s", "sleep"), "step_type must be one of"),
        (
            lambda: protocol.step_output_request(ACCOUNT, "wf", "i", "s", attempt=0),
            "attempt must be a whole number",
        ),
        (lambda: protocol.step_output_request(ACCOUNT, "wf", "i", "a\nb"), "control characters"),
        (lambda: protocol.get_workflow_request(ACCOUNT, "w" * 65), "at most 64 characters"),
        (lambda: protocol.get_instance_request(ACCOUNT, "wf", ""), "instance_id must be a non-empty string"),
        (lambda: protocol.list_instances_request(ACCOUNT, "wf", status="done"), "status must be one of"),
        (lambda: protocol.list_instances_request(ACCOUNT, "wf", per_page=500), "per_page must be"),
        (lambda: protocol.list_instances_request(ACCOUNT, "wf", direction="up"), "direction must be"),
        (lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_id="-bad"), "is not allowed"),
        (lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_id="cf_" + "a" * 64), "reserved"),
        (
            lambda: protocol.create_instance_request(ACCOUNT, "wf", params={"x": object()}),
            "JSON-serializable",
        ),
        (lambda: protocol.create_instances_batch_request(ACCOUNT, "wf", [{}] * 101), "1 to 100 instances"),
        (
            lambda: protocol.send_event_request(ACCOUNT, "wf", "i", "my.event"),
            "event_type 'my.event' is not allowed",
        ),
        (
            lambda: protocol.send_event_request(ACCOUNT, "wf", "i", "e", "x" * (1024 * 1024)),
            "at most 1048576",
        ),
    ],
)
def test_bad_parameters_fail_before_any_request(call, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        call()


def test_list_instances_query():
    request = protocol.list_instances_request(
        ACCOUNT,
        "wf",
        cursor="abc",
        direction="desc",
        status="complete",
        date_start="2026-01-01T00:00:00Z",
        per_page=10,
    )
    assert request.query == (
        ("per_page", "10"),
        ("cursor", "abc"),
        ("direction", "desc"),
        ("status", "complete"),
        ("date_start", "2026-01-01T00:00:00Z"),
    )


def test_envelope_result_and_info():
    parsed = protocol.parse_envelope(GET, 200, {}, envelope([1, 2], result_info={"cursor": "n"}))
    assert parsed.result == [1, 2]
    assert protocol.next_cursor(parsed.result_info) == "n"
    assert protocol.next_cursor({"cursor": ""}) is None
    assert protocol.next_cursor({}) is None


def test_success_false_with_http_200_is_an_error():
    body = envelope(
        {"status": "complete"},
        success=False,
        errors=[{"code": 10001, "message": "workflows.api.error.internal_server"}],
    )

    with pytest.raises(CloudflareWorkflowsServerError) as caught:
        protocol.parse_envelope(GET, 200, {"cf-ray": "abc-KIX"}, body)
    assert caught.value.error_codes == (10001,)
    assert caught.value.cf_ray == "abc-KIX"
    assert "success=false" in str(caught.value)
    assert caught.value.is_transient


def test_malformed_json_is_a_response_error():
    with pytest.raises(CloudflareWorkflowsResponseError, match="not a JSON envelope"):
        protocol.parse_envelope(GET, 200, {}, b'{"success": tr')


@pytest.mark.parametrize(
    ("status", "error_type", "transient"),
    [
        (400, CloudflareWorkflowsError, False),
        (401, CloudflareWorkflowsAuthError, False),
        (403, CloudflareWorkflowsAuthError, False),
        (404, CloudflareWorkflowsNotFoundError, False),
        (408, CloudflareWorkflowsServerError, True),
        (409, CloudflareWorkflowsConflictError, False),
        (429, CloudflareWorkflowsRateLimitError, True),
        (500, CloudflareWorkflowsServerError, True),
        (503, CloudflareWorkflowsServerError, True),
        (501, CloudflareWorkflowsServerError, False),
    ],
)
def test_http_errors_map_to_types(status, error_type, transient):
    body = envelope(None, success=False, errors=[{"code": 7003, "message": "nope"}])

    with pytest.raises(error_type) as caught:
        protocol.parse_envelope(GET, status, {"CF-Ray": "ray-1"}, body)
    error = caught.value
    assert type(error) is error_type
    assert (error.http_status, error.error_codes, error.cf_ray) == (status, (7003,), "ray-1")
    assert f"HTTP {status}" in str(error)
    assert "7003: nope" in str(error)
    assert "GET /accounts/x/workflows" in str(error)
    assert error.is_transient is transient


def test_string_error_items_are_kept():
    body = json.dumps(
        {"success": False, "errors": [], "messages": ["Instance not found."], "result": None}
    ).encode()
    error = protocol.error_for_response(GET, 404, {}, body)
    assert isinstance(error, CloudflareWorkflowsNotFoundError)
    body = json.dumps({"success": False, "errors": ["bad thing"], "result": None}).encode()
    assert "bad thing" in str(protocol.error_for_response(GET, 400, {}, body))


def test_retry_after_seconds_and_http_date():
    assert protocol.parse_retry_after("7") == 7.0
    assert protocol.parse_retry_after(None) is None
    assert protocol.parse_retry_after("soon") is None
    date = formatdate(1_000_030, usegmt=True)
    assert protocol.parse_retry_after(date, now=1_000_000) == pytest.approx(30.0)
    assert protocol.parse_retry_after(formatdate(1_000_000 - 60, usegmt=True), now=1_000_000) == 0.0

    error = protocol.error_for_response(GET, 429, {"Retry-After": "3"}, b"")
    assert isinstance(error, CloudflareWorkflowsRateLimitError)
    assert error.retry_after == 3.0


def test_retry_delay_honours_retry_after_with_a_cap():
    assert protocol.retry_delay(1, CloudflareWorkflowsRateLimitError("x", retry_after=4.0)) == 4.0
    capped = protocol.retry_delay(1, CloudflareWorkflowsRateLimitError("x", retry_after=300.0))
    assert capped == protocol.RETRY_AFTER_MAX_SECONDS


def test_retry_delay_is_exponential_with_jitter_and_capped():
    no_jitter = [protocol.retry_delay(n, None, jitter=0.0) for n in (1, 2, 3, 4)]
    assert no_jitter == [0.5, 1.0, 2.0, 4.0]
    assert protocol.retry_delay(2, None, jitter=1.0) == 0.75
    assert protocol.retry_delay(30, None, jitter=0.0) == protocol.BACKOFF_MAX_SECONDS


def test_step_output_parsing():
    retrying = protocol.parse_step_output(
        {"status": "running", "error": {"name": "Error", "message": "503"}, "output": None}
    )
    assert retrying.is_retrying
    assert str(retrying.error) == "Error: 503"
    done = protocol.parse_step_output({"status": "complete", "error": None, "output": "[REDACTED]"})
    assert done.output == "[REDACTED]"
    assert not done.is_retrying
    waiting = protocol.parse_step_output({"status": "waiting", "error": None, "event_type": "approval"})
    assert waiting.event_type == "approval"
    with pytest.raises(CloudflareWorkflowsResponseError, match="no status"):
        protocol.parse_step_output({"output": 1})
    assert protocol.stream_step_status().is_stream


@pytest.mark.parametrize(
    ("status", "content_type", "expected"),
    [
        (200, "application/octet-stream", True),
        (206, "Application/Octet-Stream; charset=binary", True),
        (200, "application/json", False),
        (200, "", False),
        (404, "application/octet-stream", False),  # an error is read as an envelope, whatever its type
        (503, "application/octet-stream", False),
        (302, "application/octet-stream", False),
    ],
)
def test_byte_stream_means_success_and_octet_stream(status, content_type, expected):
    assert protocol.is_byte_stream(status, {"Content-Type": content_type}) is expected
