"""Request building, response parsing and retry decisions, without any I/O."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
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
    CloudflareWorkflowsResponseTooDeepError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.remote_text import MAX_API_ERROR_CHARS, MAX_API_ERRORS, MAX_NAME_CHARS

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
        (lambda: protocol.get_version_graph_request(ACCOUNT, "wf", ".."), "version_id '..' is not allowed"),
        (lambda: protocol.get_version_graph_request(ACCOUNT, "wf", "v" * 101), "at most 100 characters"),
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


def test_json_nested_too_deeply_to_read_is_a_typed_error_not_retried():
    deep = b'{"success":true,"errors":[],"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}"  # 195 KiB

    with pytest.raises(
        CloudflareWorkflowsResponseTooDeepError, match="nests lists or objects too deeply"
    ) as caught:
        protocol.parse_envelope(GET, 200, {}, deep)
    assert isinstance(caught.value, CloudflareWorkflowsResponseError)
    assert not caught.value.is_transient  # a retry would get the same answer
    # An error answer that deep keeps its status's type (its details cannot be read).
    error = protocol.error_for_response(GET, 503, {}, b'{"errors":' + b"[" * 100_000 + b"]" * 100_000 + b"}")
    assert isinstance(error, CloudflareWorkflowsServerError)
    assert error.errors == ()


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
    asked = CloudflareWorkflowsRateLimitError("x", retry_after=4.0)
    assert protocol.retry_delay(1, asked, jitter=0.0) == 4.0
    capped = protocol.retry_delay(1, CloudflareWorkflowsRateLimitError("x", retry_after=300.0), jitter=0.0)
    assert capped == protocol.RETRY_AFTER_MAX_SECONDS


def test_retry_after_waits_get_jitter_on_top():
    # Without jitter, every trigger told "Retry-After: 4" comes back in the same instant (issue 12 item 14).
    asked = CloudflareWorkflowsRateLimitError("x", retry_after=4.0)
    assert protocol.retry_delay(1, asked, jitter=1.0) == 5.0  # + 25 %, at least the backoff base
    zero = CloudflareWorkflowsRateLimitError("x", retry_after=0.0)
    assert protocol.retry_delay(1, zero, jitter=1.0) == protocol.BACKOFF_BASE_SECONDS
    drawn = {protocol.retry_delay(1, asked) for _ in range(50)}
    assert len(drawn) > 1
    assert all(4.0 <= wait < 5.0 for wait in drawn)


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


# --- dates, direction, params encoding ---------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=2))), "2026-01-01T10:00:00Z"),
        (datetime(2026, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=-5))), "2026-01-01T05:30:00Z"),
        (datetime(2026, 1, 1, 12, 0, 0, 123456, tzinfo=UTC), "2026-01-01T12:00:00.123Z"),
        ("2026-01-01", "2026-01-01T00:00:00Z"),
        ("2026-01-01T12:00:00", "2026-01-01T12:00:00Z"),
        ("2026-01-01T12:00:00Z", "2026-01-01T12:00:00Z"),
        ("2026-01-01T12:00:00+02:00", "2026-01-01T10:00:00Z"),
    ],
)
def test_date_filters_are_sent_in_utc(value, expected):
    request = protocol.list_instances_request(ACCOUNT, "wf", date_start=value, date_end=value)
    assert dict(request.query)["date_start"] == expected
    assert dict(request.query)["date_end"] == expected


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        (datetime(2026, 1, 1, 12, 0), "naive datetime"),
        ("yesterday", "must be an ISO 8601 date"),
        ("2026-01-01T12:00:00Z\nx", "must be an ISO 8601 date"),
        (1767225600, "timezone-aware datetime or an ISO 8601 string"),
    ],
)
def test_bad_date_filters_are_refused(value, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=f"date_end.*{fragment}|{fragment}"):
        protocol.list_instances_request(ACCOUNT, "wf", date_end=value)


def test_direction_is_sent_only_with_a_cursor():
    first = protocol.list_instances_request(ACCOUNT, "wf", direction="desc")
    later = protocol.list_instances_request(ACCOUNT, "wf", cursor="c2", direction="desc")
    assert "direction" not in dict(first.query)
    assert dict(later.query)["direction"] == "desc"


def test_params_encoding_object_and_string():
    as_object = protocol.create_instance_request(ACCOUNT, "wf", instance_id="r", params={"a": [1, "é"]})
    as_string = protocol.create_instance_request(
        ACCOUNT, "wf", instance_id="r", params={"a": [1, "é"]}, params_encoding="string"
    )
    assert json.loads(as_object.body)["params"] == {"a": [1, "é"]}
    assert json.loads(as_string.body)["params"] == '{"a":[1,"é"]}'
    assert as_string.params_encoding is protocol.ParamsEncoding.STRING
    assert protocol.create_instance_request(ACCOUNT, "wf", instance_id="r").params_encoding is None

    batch = protocol.create_instances_batch_request(
        ACCOUNT,
        "wf",
        [{"instance_id": "a", "params": {"n": 1}}, {"instance_id": "b"}],
        params_encoding=protocol.ParamsEncoding.STRING,
    )
    assert json.loads(batch.body) == [{"instance_id": "a", "params": '{"n":1}'}, {"instance_id": "b"}]
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="params_encoding must be"):
        protocol.create_instance_request(ACCOUNT, "wf", params={}, params_encoding="json")


def test_a_create_400_about_params_names_the_setting():
    create = protocol.create_instance_request(ACCOUNT, "wf", instance_id="r", params={"a": 1})
    body = envelope(
        None, success=False, errors=[{"code": 10021, "message": "Invalid 'params': expected string"}]
    )

    error = protocol.error_for_response(create, 400, {}, body)
    assert "params_encoding='object'" in str(error)
    assert "to 'string'" in str(error)
    assert error.error_codes == (10021,)

    other = envelope(
        None, success=False, errors=[{"code": 10021, "message": "Provided Workflow ID is not valid."}]
    )
    assert "params_encoding" not in str(protocol.error_for_response(create, 400, {}, other))
    assert "params_encoding" not in str(protocol.error_for_response(GET, 400, {}, body))
    no_params = protocol.create_instance_request(ACCOUNT, "wf", instance_id="r")
    assert "params_encoding" not in str(protocol.error_for_response(no_params, 400, {}, body))


# --- validation reaches every request builder --------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: protocol.get_workflow_request(ACCOUNT, ".."),
        lambda: protocol.get_instance_request(ACCOUNT, "wf", "."),
        lambda: protocol.get_instance_request(ACCOUNT, ".", "i"),
        lambda: protocol.send_event_request(ACCOUNT, "wf", "i", ".."),
        lambda: protocol.step_output_request(ACCOUNT, "wf", "..", "s"),
        lambda: protocol.send_event_request(ACCOUNT, "wf", "i", "approval\n"),
        lambda: protocol.get_instance_request(ACCOUNT, "wf", "i-1\n"),
        lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_id="run-1\n"),
        lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_id="None"),
        lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_id="terminateAll"),
        lambda: protocol.create_instance_request(ACCOUNT, "wf", instance_retention="forever"),
        lambda: protocol.create_instances_batch_request(ACCOUNT, "wf", [{"instance_id": "batch"}]),
        lambda: protocol.create_instances_batch_request(ACCOUNT, "wf", [{"instance_retention": {"x": 1}}]),
        lambda: protocol.encode_segment(".."),
    ],
)
def test_unsafe_names_ids_and_shapes_are_refused_by_the_builders(call):
    with pytest.raises(CloudflareWorkflowsConfigurationError):
        call()


def test_long_logged_step_names_and_empty_events_are_sent():
    request = protocol.step_output_request(ACCOUNT, "wf", "i", "x" * 255 + "-1")
    assert dict(request.query)["name"] == "x" * 255 + "-1"
    assert json.loads(protocol.send_event_request(ACCOUNT, "wf", "i", "approval").body) == {}


def test_step_requests_ask_for_identity_encoding():
    request = protocol.step_output_request(ACCOUNT, "wf", "i", "s")
    assert request.headers()["Accept-Encoding"] == "identity"
    assert "Accept-Encoding" not in protocol.get_instance_request(ACCOUNT, "wf", "i").headers()


def test_json_body_cap():
    protocol.check_json_body_size(GET, protocol.MAX_JSON_BODY_BYTES)
    with pytest.raises(CloudflareWorkflowsResponseError, match="larger than 16 MiB") as caught:
        protocol.check_json_body_size(GET, protocol.MAX_JSON_BODY_BYTES + 1, http_status=200)
    assert caught.value.http_status == 200
    assert caught.value.path == GET.path


# --- auth errors as Cloudflare sends them -------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "fragment"),
    [
        (400, 9106, "received no credentials"),
        (401, 9106, "received no credentials"),
        (400, 6003, "could not read the credentials headers"),
        (403, 9109, "rejected the API token"),
        (400, 10000, "check the account id"),
        (403, 10000, "token has the Workflows permissions"),
    ],
)
def test_auth_error_codes_map_to_auth_errors_with_advice(status, code, fragment):
    body = envelope(None, success=False, errors=[{"code": code, "message": "Authentication error"}])
    error = protocol.error_for_response(GET, status, {}, body)
    assert type(error) is CloudflareWorkflowsAuthError
    assert fragment in str(error)
    assert error.http_status == status
    assert not error.is_transient


def test_other_400_codes_stay_generic_errors():
    body = envelope(None, success=False, errors=[{"code": 7000, "message": "No route for that URI"}])
    error = protocol.error_for_response(GET, 400, {}, body)
    assert type(error) is CloudflareWorkflowsError


def test_error_chain_is_rendered_into_the_details():
    body = envelope(
        None,
        success=False,
        errors=[
            {
                "code": 6003,
                "message": "Invalid request headers",
                "error_chain": [{"code": 6111, "message": "Invalid format for Authorization header"}],
            }
        ],
    )
    error = protocol.error_for_response(GET, 400, {}, body)
    assert isinstance(error, CloudflareWorkflowsAuthError)
    assert "6003: Invalid request headers (6111: Invalid format for Authorization header)" in str(error)
    assert error.error_codes == (6003,)
    nested = envelope(
        None,
        success=False,
        errors=[
            {
                "code": 1,
                "message": "a",
                "error_chain": [{"message": "b", "error_chain": [{"code": 3, "message": "c"}]}],
            }
        ],
    )
    assert "1: a (b (3: c))" in str(protocol.error_for_response(GET, 400, {}, nested))


def test_cloudflare_error_texts_are_cut_where_they_are_read():
    huge = "m" * 2_000_000
    chain = [{"code": 1, "message": huge}, *({"code": n, "message": "cause"} for n in range(10_000))]
    body = envelope(
        None,
        success=False,
        errors=[
            {"code": 10001, "message": huge, "error_chain": chain},
            *({"code": n, "message": "more"} for n in range(10_000)),
        ],
    )

    error = protocol.error_for_response(GET, 503, {}, body)

    assert len(error.errors) == MAX_API_ERRORS + 1
    assert error.errors[-1].message == f"… and {10_001 - MAX_API_ERRORS} more errors cut"
    assert all(len(detail.message) <= MAX_API_ERROR_CHARS + 40 for detail in error.errors)
    assert error.errors[0].message.startswith("m" * 100)
    assert "more characters cut" in error.errors[0].message
    causes = envelope(None, False, [{"code": 1, "message": "m", "error_chain": chain[1:]}])
    assert "… and 9995 more causes" in str(protocol.error_for_response(GET, 503, {}, causes))
    assert len(str(error)) < (MAX_API_ERRORS + 1) * (MAX_API_ERROR_CHARS + 50) + 200


def test_step_results_are_cut_where_they_are_read():
    step = protocol.parse_step_output(
        {
            "status": "s" * 10_000,
            "error": {"name": "n" * 10_000, "message": "\ud83d" * 10},
            "event_type": "e" * 999,
        }
    )
    assert len(step.status) < MAX_NAME_CHARS + 40
    assert len(step.event_type or "") < MAX_NAME_CHARS + 40
    assert step.error is not None
    assert len(step.error.name) < MAX_NAME_CHARS + 40
    assert step.error.message == "\\ud83d" * 10  # each lone surrogate as the characters of its escape
    with pytest.raises(CloudflareWorkflowsResponseError) as caught:
        protocol.parse_step_output({"output": "o" * 2_000_000})
    assert len(str(caught.value)) < 1000


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
