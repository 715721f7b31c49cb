"""CloudflareWorkflowsHook against a mocked wire: exact request shapes, parsing, retries, errors."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest
import requests

from airflow_provider_cfworkflows import deadlines, protocol
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsAuthError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsRateLimitError,
    CloudflareWorkflowsResponseError,
    CloudflareWorkflowsResponseTooDeepError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

ACCOUNT = "0123456789abcdef0123456789abcdef"
TOKEN = "unit-test-token-4c1d"
BASE = "https://api.cloudflare.test/client/v4"
WF = f"{BASE}/accounts/{ACCOUNT}/workflows"
REAL_RETRY_DELAY = protocol.retry_delay


def ok(result=None, **extra):
    return {"success": True, "errors": [], "messages": [], "result": result, **extra}


@pytest.fixture
def delays(monkeypatch):
    """Record retry waits instead of sleeping them."""
    recorded: list[float] = []

    real_delay = protocol.retry_delay

    def fake_delay(attempt, error, jitter=None):
        recorded.append(real_delay(attempt, error, jitter=0.0))
        return 0.0

    monkeypatch.setattr(protocol, "retry_delay", fake_delay)
    return recorded


@pytest.fixture
def hook(monkeypatch, delays, limiter_clock):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT,
                "password": TOKEN,
                "host": BASE,
                "extra": {"max_retries": 3},
            }
        ),
    )
    return CloudflareWorkflowsHook()


def only_request(requests_mock):
    assert requests_mock.call_count == 1
    return requests_mock.request_history[0]


def test_get_instance_request_shape(hook, requests_mock):
    requests_mock.get(f"{WF}/my%20wf/instances/%2A%2F5%20%2A-17", json=ok({"status": "running"}))

    result = hook.get_instance("my wf", "*/5 *-17", simple=True, order="desc")

    sent = only_request(requests_mock)
    assert result == {"status": "running"}
    assert sent.method == "GET"
    assert sent.path == f"/client/v4/accounts/{ACCOUNT}/workflows/my%20wf/instances/%2a%2f5%20%2a-17"
    assert sent.query == "simple=true&order=desc"
    assert sent.headers["Authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["User-Agent"].startswith("airflow-provider-cfworkflows/")
    assert sent.body is None


def test_create_instance_request_shape(hook, requests_mock):
    requests_mock.post(f"{WF}/wf/instances", json=ok({"id": "run-1", "status": "queued"}))

    result = hook.create_instance(
        "wf",
        instance_id="run-1",
        params={"date": "2026-01-01"},
        instance_retention={"success_retention": "1 day"},
    )

    sent = only_request(requests_mock)
    assert result["id"] == "run-1"
    assert sent.headers["Content-Type"] == "application/json"
    assert sent.json() == {
        "instance_id": "run-1",
        "params": {"date": "2026-01-01"},
        "instance_retention": {"success_retention": "1 day"},
    }


def test_batch_status_event_and_versions(hook, requests_mock):
    requests_mock.post(f"{WF}/wf/instances/batch", json=ok([{"id": "a"}, {"id": "b"}]))
    requests_mock.patch(f"{WF}/wf/instances/a/status", json=ok({"status": "terminated", "timestamp": "t"}))
    requests_mock.post(f"{WF}/wf/instances/a/events/approval", json=ok({}))
    requests_mock.get(f"{WF}/wf/versions", json=ok([{"id": "v1"}], result_info={"page": 1, "total_pages": 1}))
    requests_mock.get(f"{WF}/wf", json=ok({"name": "wf"}))
    requests_mock.get(f"{WF}/wf/versions/v1/graph", json=ok({"id": "v1", "graph": None}))

    assert [
        i["id"] for i in hook.create_instances_batch("wf", [{"instance_id": "a"}, {"instance_id": "b"}])
    ] == ["a", "b"]
    assert hook.change_instance_status("wf", "a", "terminate", rollback=False)["status"] == "terminated"
    assert hook.send_event("wf", "a", "approval", {"approved": True}) == {}
    assert [v["id"] for v in hook.list_versions("wf")] == ["v1"]
    assert hook.get_workflow("wf") == {"name": "wf"}
    assert hook.get_version_graph("wf", "v1") == {"id": "v1", "graph": None}

    batch, status, event, versions, workflow, graph = requests_mock.request_history
    assert batch.json() == [{"instance_id": "a"}, {"instance_id": "b"}]
    assert (status.method, status.json()) == ("PATCH", {"status": "terminate", "rollback": False})
    assert (event.method, event.json()) == ("POST", {"approved": True})
    assert versions.query == "page=1&per_page=100"
    assert workflow.path.endswith("/workflows/wf")
    assert (graph.method, graph.path) == (
        "GET",
        f"/client/v4/accounts/{ACCOUNT}/workflows/wf/versions/v1/graph",
    )


def test_list_instances_follows_the_cursor(hook, requests_mock):
    requests_mock.get(
        f"{WF}/wf/instances",
        [
            {"json": ok([{"id": "1"}, {"id": "2"}], result_info={"cursor": "c2"})},
            {"json": ok([{"id": "3"}], result_info={"cursor": ""})},
        ],
    )

    ids = [item["id"] for item in hook.list_instances("wf", status="complete", direction="asc", per_page=2)]

    assert ids == ["1", "2", "3"]
    first, second = requests_mock.request_history
    # direction goes only with a cursor (API reference); the first page has the server's default order
    assert first.qs == {"per_page": ["2"], "status": ["complete"]}
    assert second.qs == {"per_page": ["2"], "cursor": ["c2"], "direction": ["asc"], "status": ["complete"]}


def test_list_workflows_pages(hook, requests_mock):
    requests_mock.get(
        WF,
        [
            {"json": ok([{"name": "a"}], result_info={"page": 1, "total_pages": 2})},
            {"json": ok([{"name": "b"}], result_info={"page": 2, "total_pages": 2})},
        ],
    )
    assert [w["name"] for w in hook.list_workflows(search="a")] == ["a", "b"]
    assert [r.qs["page"] for r in requests_mock.request_history] == [["1"], ["2"]]


def test_account_id_argument_overrides_login(hook, requests_mock):
    other = "fedcba9876543210fedcba9876543210"
    requests_mock.get(f"{BASE}/accounts/{other}/workflows/wf", json=ok({"name": "wf"}))
    assert hook.get_workflow("wf", account_id=other) == {"name": "wf"}


def test_missing_account_id_is_a_clear_error(monkeypatch, delays):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_NO_ACCOUNT",
        json.dumps({"conn_type": "cloudflare_workflows", "password": TOKEN, "host": BASE}),
    )
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="No Cloudflare account id"):
        CloudflareWorkflowsHook("cf_no_account").get_workflow("wf")


def test_legacy_auth_headers(monkeypatch, requests_mock, delays):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_LEGACY",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT,
                "host": BASE,
                "extra": {"email": "a@b.c", "api_key": "legacy-key-77"},
            }
        ),
    )
    requests_mock.get(f"{WF}/wf", json=ok({}))
    CloudflareWorkflowsHook("cf_legacy").get_workflow("wf")
    sent = only_request(requests_mock)
    assert sent.headers["X-Auth-Email"] == "a@b.c"
    assert sent.headers["X-Auth-Key"] == "legacy-key-77"
    assert "Authorization" not in sent.headers


def test_rate_limit_is_retried_honouring_retry_after(hook, requests_mock, delays, limiter_clock, capsys):
    requests_mock.get(
        f"{WF}/wf",
        [
            {
                "status_code": 429,
                "headers": {"Retry-After": "7"},
                "json": {"success": False, "errors": [{"code": 971, "message": "slow down"}]},
            },
            {
                "status_code": 503,
                "json": {"success": False, "errors": [{"code": 10001, "message": "internal"}]},
            },
            {"json": ok({"name": "wf"})},
        ],
    )
    assert hook.get_workflow("wf") == {"name": "wf"}
    assert requests_mock.call_count == 3
    # The 429's wait is the rate limiter's (whole Retry-After plus jitter), not the retry backoff.
    assert delays == [1.0]
    assert len(limiter_clock.slept) == 1
    assert 7.0 <= limiter_clock.slept[0] <= 7.0 * 1.1
    retry_logs = [line for line in capsys.readouterr().out.splitlines() if "Retrying" in line]
    assert len(retry_logs) == 2
    assert "HTTP 429" in retry_logs[0]
    assert "HTTP 503" in retry_logs[1]


def test_retries_give_up_with_the_last_error(hook, requests_mock):
    requests_mock.get(
        f"{WF}/wf", status_code=502, json={"success": False, "errors": []}, headers={"cf-ray": "r-9"}
    )
    with pytest.raises(CloudflareWorkflowsServerError) as caught:
        hook.get_workflow("wf")
    assert requests_mock.call_count == 4  # 1 + max_retries=3
    assert caught.value.cf_ray == "r-9"


@pytest.mark.parametrize(
    "response",
    [
        {
            "json": ok(
                {"x": 1},
                success=False,
                errors=[{"code": 10001, "message": "workflows.api.error.internal_server"}],
            )
        },
        {"text": '{"success": true, "resu', "headers": {"Content-Type": "application/json"}},
        {"exc": requests.exceptions.ConnectionError("reset by peer")},
        {"exc": requests.exceptions.ReadTimeout("read timed out")},
    ],
    ids=["success-false", "malformed-json", "connection-error", "timeout"],
)
def test_transient_faults_on_gets_are_retried(hook, requests_mock, response):
    requests_mock.get(f"{WF}/wf", [response, {"json": ok({"name": "wf"})}])
    assert hook.get_workflow("wf") == {"name": "wf"}
    assert requests_mock.call_count == 2


@pytest.mark.parametrize(
    "failure",
    [
        {"status_code": 503, "json": {"success": False, "errors": []}},
        {"text": "<html>bad gateway</html>", "status_code": 502},
        {"json": ok({}, success=False)},
        {"exc": requests.exceptions.ReadTimeout("read timed out")},
        {"exc": requests.exceptions.ConnectionError("Connection aborted: RemoteDisconnected")},
    ],
    ids=["503", "html-502", "success-false", "read-timeout", "dropped-after-sending"],
)
def test_calls_that_must_not_run_twice_are_not_retried_once_they_may_have_arrived(
    hook, requests_mock, failure
):
    requests_mock.post(f"{WF}/wf/instances", [failure, {"json": ok({"id": "x"})}])
    requests_mock.post(f"{WF}/wf/instances/i/events/go", [failure, {"json": ok({})}])
    requests_mock.patch(f"{WF}/wf/instances/i/status", [failure, {"json": ok({})}])

    for call in (
        lambda: hook.create_instance("wf", params={"a": 1}),
        lambda: hook.send_event("wf", "i", "go", {}),
        lambda: hook.change_instance_status("wf", "i", "restart"),
    ):
        with pytest.raises(CloudflareWorkflowsError) as caught:
            call()
        assert caught.value.may_have_taken_effect
    assert requests_mock.call_count == 3


@pytest.mark.parametrize(
    "refusal",
    [
        {"status_code": 429, "headers": {"Retry-After": "1"}, "json": {"success": False}},
        {"exc": requests.exceptions.ConnectTimeout("connect timed out")},
    ],
    ids=["429", "connect-timeout"],
)
def test_calls_that_must_not_run_twice_are_retried_when_nothing_arrived(hook, requests_mock, refusal):
    requests_mock.post(f"{WF}/wf/instances/i/events/go", [refusal, {"json": ok({})}])
    assert hook.send_event("wf", "i", "go", {}) == {}
    assert requests_mock.call_count == 2


def test_create_with_explicit_id_is_retried(hook, requests_mock):
    requests_mock.post(
        f"{WF}/wf/instances", [{"status_code": 500, "json": {"success": False}}, {"json": ok({"id": "x"})}]
    )
    assert hook.create_instance("wf", instance_id="x")["id"] == "x"
    assert requests_mock.call_count == 2


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (401, CloudflareWorkflowsAuthError),
        (403, CloudflareWorkflowsAuthError),
        (404, CloudflareWorkflowsNotFoundError),
    ],
)
def test_client_errors_are_not_retried(hook, requests_mock, status, error_type):
    requests_mock.get(
        f"{WF}/wf/instances/i",
        status_code=status,
        json={"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]},
    )
    with pytest.raises(error_type):
        hook.get_instance("wf", "i")
    assert requests_mock.call_count == 1


def test_step_output_json(hook, requests_mock):
    requests_mock.get(
        f"{WF}/wf/instances/i/step",
        json=ok({"status": "complete", "error": None, "output": {"rows": list(range(500))}}),
    )
    step = hook.get_step_output("wf", "i", "fetch data-1", attempt=2)

    sent = only_request(requests_mock)
    assert sent.query == "name=fetch%20data-1&type=step&attempt=2"
    assert step.status == "complete"
    assert step.output == {"rows": list(range(500))}
    assert not step.is_stream


def test_step_output_octet_stream_whole_and_streamed(hook, requests_mock):
    payload = bytes(range(256)) * 4096
    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(len(payload))}
    requests_mock.get(f"{WF}/wf/instances/i/step", content=payload, headers=headers)

    whole = hook.get_step_output("wf", "i", "blob-1")
    assert (whole.status, whole.output, whole.is_stream) == ("complete", payload, True)

    with hook.stream_step_output("wf", "i", "blob-1", chunk_size=65536) as stream:
        chunks = list(stream.chunks)
    assert stream.content_length == len(payload)
    assert max(len(c) for c in chunks) <= 65536
    assert b"".join(chunks) == payload


def test_step_stream_shorter_than_content_length_is_an_error(hook, requests_mock):
    headers = {"Content-Type": "application/octet-stream", "Content-Length": "1000"}
    requests_mock.get(f"{WF}/wf/instances/i/step", content=b"x" * 10, headers=headers)
    with (
        pytest.raises(CloudflareWorkflowsConnectionError),
        hook.stream_step_output("wf", "i", "blob-1") as stream,
    ):
        b"".join(stream.chunks)


def test_step_not_found_names_the_logged_forms_tried_and_the_steps_the_instance_has(hook, requests_mock):
    requests_mock.get(
        f"{WF}/wf/instances/i/step",
        status_code=404,
        json={"success": False, "errors": [{"code": 10404, "message": "Step not found for instance 'i'"}]},
    )
    details = {"status": "complete", "steps": [{"name": "load rows-1", "type": "step"}]}
    requests_mock.get(f"{WF}/wf/instances/i", json=ok(details))

    with pytest.raises(CloudflareWorkflowsNotFoundError) as caught:
        hook.get_step_output("wf", "i", "x-1")

    message = str(caught.value)
    assert "never ran (no step is logged as 'x-1' or 'x-1-1'): the instance is complete" in message
    assert "Steps the instance has: 'load rows-1' (step)" in message
    assert "10404: Step not found" in message
    steps = [r.qs["name"] for r in requests_mock.request_history if r.path.endswith("/step")]
    assert steps == [["x-1"], ["x-1-1"]]
    assert requests_mock.call_count == 3  # two names, then one look at the instance


def test_step_output_accepts_the_name_as_written(hook, requests_mock):
    requests_mock.get(f"{WF}/wf/instances/i/step", json=ok({"status": "complete", "output": 5}))
    assert hook.get_step_output("wf", "i", "load rows").output == 5
    assert only_request(requests_mock).qs["name"] == ["load rows-1"]


def test_test_connection(hook, requests_mock, capsys):
    requests_mock.get(WF, json=ok([]))
    reached = f"Connected to Cloudflare Workflows at {BASE} for account {ACCOUNT}."
    assert hook.test_connection() == (True, reached)
    assert only_request(requests_mock).qs == {"page": ["1"], "per_page": ["1"]}
    assert reached in capsys.readouterr().out  # `airflow connections test` prints only "Connection success!"

    requests_mock.get(
        WF,
        status_code=403,
        json={"success": False, "errors": [{"code": 10000, "message": "Authentication error"}]},
    )
    success, message = hook.test_connection()
    assert not success
    assert "HTTP 403" in message
    assert "10000: Authentication error" in message
    assert TOKEN not in message


# --- async twins -------------------------------------------------------------------------------


@pytest.fixture
async def async_hook(hook):
    sent: list[httpx.Request] = []
    responses: list[httpx.Response] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return responses.pop(0)

    hook.async_transport = httpx.MockTransport(handler)
    yield hook, sent, responses
    await hook.aclose()


async def test_async_instance_and_step(async_hook, limiter_clock):
    hook, sent, responses = async_hook
    responses.extend(
        [
            httpx.Response(429, headers={"Retry-After": "2"}, json={"success": False, "errors": []}),
            httpx.Response(200, json=ok({"status": "waiting"})),
            httpx.Response(
                200,
                json=ok({"status": "running", "error": {"name": "Error", "message": "boom"}, "output": None}),
            ),
            httpx.Response(200, headers={"Content-Type": "application/octet-stream"}, content=b"\x00" * 10),
        ]
    )

    instance = await hook.aget_instance("wf", "a b", simple=True)
    step = await hook.aget_step_output("wf", "a b", "load-1", "step")
    stream = await hook.aget_step_output("wf", "a b", "blob-1")

    assert instance == {"status": "waiting"}
    assert 2.0 <= sum(limiter_clock.slept) <= 2.0 * 1.1  # the 429's Retry-After, waited by the limiter
    assert step.is_retrying
    assert (stream.status, stream.is_stream, stream.output) == ("complete", True, None)
    assert [str(r.url) for r in sent[:2]] == [f"{WF}/wf/instances/a%20b?simple=true"] * 2
    assert str(sent[2].url) == f"{WF}/wf/instances/a%20b/step?name=load-1&type=step"
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in sent)


DEEP = b'{"success":true,"errors":[],"result":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def test_an_answer_nested_too_deeply_is_a_typed_error_without_retries(hook, requests_mock):
    requests_mock.get(f"{WF}/wf/instances/i", content=DEEP)

    with pytest.raises(CloudflareWorkflowsResponseTooDeepError):
        hook.get_instance("wf", "i")
    assert requests_mock.call_count == 1


async def test_async_answer_nested_too_deeply_is_a_typed_error_without_retries(async_hook):
    hook, sent, responses = async_hook
    responses.append(httpx.Response(200, content=DEEP))

    with pytest.raises(CloudflareWorkflowsResponseTooDeepError):
        await hook.aget_instance("wf", "i")
    assert len(sent) == 1


async def test_async_transport_errors_are_typed(hook):
    def refuse(request):
        raise httpx.ConnectError("refused", request=request)

    hook.async_transport = httpx.MockTransport(refuse)
    with pytest.raises(CloudflareWorkflowsConnectionError, match="ConnectError"):
        await hook.aget_instance("wf", "i")
    await hook.aclose()


async def test_async_not_found_is_not_retried(async_hook):
    hook, sent, responses = async_hook
    responses.append(
        httpx.Response(404, json={"success": False, "errors": [{"code": 10400, "message": "nope"}]})
    )
    with pytest.raises(CloudflareWorkflowsNotFoundError):
        await hook.aget_step_output("wf", "i", "s-1")
    assert len(sent) == 1


def test_malformed_non_json_body_error_names_the_start(hook, requests_mock):
    requests_mock.get(f"{WF}/wf", text="<html>gateway</html>", headers={"Content-Type": "text/html"})
    with pytest.raises(CloudflareWorkflowsResponseError, match="<html>gateway"):
        hook.get_workflow("wf")


# --- connection extras, header errors ---------------------------------------------------------------


@pytest.fixture
def remote_http_conn(monkeypatch, delays):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_REMOTE_HTTP",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT,
                "password": TOKEN,
                "host": "http://cfw-emulator.test:8787",
                "extra": {"allow_http": True},
            }
        ),
    )
    return "cf_remote_http"


def test_allow_http_warns_each_time_a_hook_is_built(remote_http_conn, capsys):
    for _ in range(2):
        assert CloudflareWorkflowsHook(remote_http_conn).settings.base_url.startswith("http://cfw-emulator")
    warnings = [line for line in capsys.readouterr().out.splitlines() if "unencrypted" in line]
    assert len(warnings) == 2
    assert "cfw-emulator.test" in warnings[0]


async def test_allow_http_warns_for_the_async_side_too(remote_http_conn, capsys):
    hook = CloudflareWorkflowsHook(remote_http_conn)
    await hook.aget_settings()
    await hook.aget_settings()  # cached: one hook, one warning
    assert sum("unencrypted" in line for line in capsys.readouterr().out.splitlines()) == 1


def test_no_warning_for_https_or_loopback(hook, capsys):
    assert hook.settings.base_url.startswith("https://")
    assert "unencrypted" not in capsys.readouterr().out


SECRET_IN_HEADER = "Bearer s3cr3t-token-with-newline\n"


def test_a_header_error_never_shows_its_text(hook, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise requests.exceptions.InvalidHeader(
            f"Invalid return character in header value: {SECRET_IN_HEADER!r}"
        )

    monkeypatch.setattr(hook.session, "request", refuse)
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        hook.get_workflow("wf")
    assert "s3cr3t" not in str(caught.value)
    assert "header could not be built" in str(caught.value)


def test_a_header_value_error_from_http_client_is_typed_and_silent(hook, monkeypatch):
    def refuse(*_args, **_kwargs):
        raise ValueError(f"Invalid header value {SECRET_IN_HEADER.encode()!r}")

    monkeypatch.setattr(hook.session, "request", refuse)
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        hook.get_workflow("wf")
    assert "s3cr3t" not in str(caught.value)


async def test_an_async_header_error_never_shows_its_text(hook):
    def refuse(request):
        raise httpx.LocalProtocolError(f"Illegal header value {SECRET_IN_HEADER.encode()!r}")

    hook.async_transport = httpx.MockTransport(refuse)
    with pytest.raises(CloudflareWorkflowsConfigurationError) as caught:
        await hook.aget_instance("wf", "i")
    assert "s3cr3t" not in str(caught.value)
    await hook.aclose()


@pytest.mark.parametrize(("encoding", "sent"), [("object", {"a": 1}), ("string", '{"a":1}')])
def test_params_encoding_is_used_by_create_and_batch(monkeypatch, requests_mock, delays, encoding, sent):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CF_PARAMS",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT,
                "password": TOKEN,
                "host": BASE,
                "extra": {"params_encoding": encoding},
            }
        ),
    )
    requests_mock.post(f"{WF}/wf/instances", json=ok({"id": "a"}))
    requests_mock.post(f"{WF}/wf/instances/batch", json=ok([{"id": "b"}]))
    hook = CloudflareWorkflowsHook("cf_params")
    hook.create_instance("wf", instance_id="a", params={"a": 1})
    hook.create_instances_batch("wf", [{"instance_id": "b", "params": {"a": 1}}])
    create, batch = requests_mock.request_history
    assert create.json()["params"] == sent
    assert batch.json()[0]["params"] == sent


def test_location_hint_on_create_and_batch(hook, requests_mock):
    requests_mock.post(f"{WF}/wf/instances", json=ok({"id": "a"}))
    requests_mock.post(f"{WF}/wf/instances/batch", json=ok([{"id": "b"}]))
    hook.create_instance("wf", instance_id="a", location_hint="weur")
    hook.create_instances_batch("wf", [{"instance_id": "b", "location_hint": "apac-ne"}])
    create, batch = requests_mock.request_history
    assert create.json() == {"instance_id": "a", "location_hint": "weur"}
    assert batch.json() == [{"instance_id": "b", "location_hint": "apac-ne"}]


def test_an_unknown_location_hint_is_refused_before_any_call(hook, requests_mock):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="location_hint must be one of 'wnam'"):
        hook.create_instance("wf", instance_id="a", location_hint="europe")
    assert requests_mock.call_count == 0


# --- the JSON body: size cap, deadline --------------------------------------------------------------


def test_an_oversized_json_answer_is_refused_unread_and_not_retried(hook, requests_mock):
    class Body(io.BytesIO):
        read_when_closed: list[int] = []

        def close(self):
            if not self.closed:
                self.read_when_closed.append(self.tell())
            super().close()

    too_big = protocol.MAX_JSON_BODY_BYTES + 1
    requests_mock.get(f"{WF}/wf", body=Body(b"{}"), headers={"Content-Length": str(too_big)})
    with pytest.raises(CloudflareWorkflowsResponseError, match="larger than 16 MiB"):
        hook.get_workflow("wf")
    assert requests_mock.call_count == 1
    assert Body.read_when_closed == [0]  # refused on the announced length, not a byte read


def test_a_retry_after_past_the_deadline_is_not_waited(hook, requests_mock, monkeypatch, limiter_clock):
    monkeypatch.setattr(protocol, "retry_delay", REAL_RETRY_DELAY)
    requests_mock.get(
        f"{WF}/wf", status_code=429, headers={"Retry-After": "60"}, json={"success": False, "errors": []}
    )
    with deadlines.calls_end_by(time.time() + 5), pytest.raises(CloudflareWorkflowsRateLimitError):
        hook.get_workflow("wf")
    assert requests_mock.call_count == 1
    assert limiter_clock.slept == []  # the 60 s wait would end past the deadline: no retry


def test_no_request_is_sent_once_the_deadline_has_passed(hook, requests_mock):
    requests_mock.get(f"{WF}/wf", json=ok({}))
    with deadlines.calls_end_by(time.time() - 1), pytest.raises(CloudflareWorkflowsConnectionError) as caught:
        hook.get_workflow("wf")
    assert not caught.value.may_have_taken_effect
    assert requests_mock.call_count == 0


async def test_no_async_request_is_sent_once_the_deadline_has_passed(async_hook):
    hook, sent, _responses = async_hook
    with deadlines.calls_end_by(time.time() - 1), pytest.raises(CloudflareWorkflowsConnectionError):
        await hook.aget_instance("wf", "i")
    assert sent == []


# --- answers that need a second look ----------------------------------------------------------------

ALREADY_EXISTS = {
    "status_code": 409,
    "json": {"success": False, "errors": [{"code": 10405, "message": "instance.already_exists"}]},
}


def test_a_retried_create_that_finds_its_instance_returns_it(hook, requests_mock):
    requests_mock.post(
        f"{WF}/wf/instances", [{"exc": requests.exceptions.ReadTimeout("read timed out")}, ALREADY_EXISTS]
    )
    requests_mock.get(f"{WF}/wf/instances/x", json=ok({"status": "running"}))
    assert hook.create_instance("wf", instance_id="x") == {"id": "x", "status": "running"}
    assert [r.method for r in requests_mock.request_history] == ["POST", "POST", "GET"]


def test_already_exists_on_the_first_create_is_raised(hook, requests_mock):
    requests_mock.post(f"{WF}/wf/instances", [ALREADY_EXISTS])
    with pytest.raises(CloudflareWorkflowsError) as caught:
        hook.create_instance("wf", instance_id="x")
    assert caught.value.is_already_exists
    assert requests_mock.call_count == 1


CONFLICT = {"status_code": 409, "json": {"success": False, "errors": [{"code": 10409, "message": "state"}]}}


@pytest.mark.parametrize(
    ("action", "status", "accepted"),
    [
        ("terminate", "terminated", True),
        ("pause", "paused", True),
        ("pause", "waitingForPause", True),
        ("terminate", "complete", False),
        ("pause", "errored", False),
    ],
)
def test_a_409_is_accepted_when_the_instance_already_is_there(hook, requests_mock, action, status, accepted):
    requests_mock.patch(f"{WF}/wf/instances/i/status", [CONFLICT])
    requests_mock.get(f"{WF}/wf/instances/i", json=ok({"status": status}))
    if accepted:
        assert hook.change_instance_status("wf", "i", action)["status"] == status
    else:
        with pytest.raises(CloudflareWorkflowsError, match="HTTP 409"):
            hook.change_instance_status("wf", "i", action)
    assert [r.method for r in requests_mock.request_history] == ["PATCH", "GET"]


def test_a_409_to_resume_or_restart_is_raised_without_a_look(hook, requests_mock):
    requests_mock.patch(f"{WF}/wf/instances/i/status", [CONFLICT])
    for action in ("resume", "restart"):
        with pytest.raises(CloudflareWorkflowsError, match="HTTP 409"):
            hook.change_instance_status("wf", "i", action)
    assert [r.method for r in requests_mock.request_history] == ["PATCH", "PATCH"]


async def test_async_terminate_accepts_a_409_when_terminated(async_hook):
    hook, sent, responses = async_hook
    responses.extend(
        [
            httpx.Response(409, json={"success": False, "errors": [{"code": 10409, "message": "state"}]}),
            httpx.Response(200, json=ok({"status": "terminated"})),
        ]
    )
    assert (await hook.achange_instance_status("wf", "i", "terminate"))["status"] == "terminated"
    assert [r.method for r in sent] == ["PATCH", "GET"]


WORKFLOW_MISSING = {
    "status_code": 404,
    "json": {
        "success": False,
        "errors": [{"code": 10200, "message": "workflows.api.error.workflow.not_found"}],
    },
}


def test_an_unknown_workflow_is_named_with_the_accounts_workflows(hook, requests_mock):
    requests_mock.get(f"{WF}/etl-dialy/instances/i", **WORKFLOW_MISSING)
    requests_mock.get(WF, json=ok([{"name": "etl-daily"}, {"name": "billing"}]))
    with pytest.raises(CloudflareWorkflowsNotFoundError) as caught:
        hook.get_instance("etl-dialy", "i")
    message = str(caught.value)
    assert f"Workflow 'etl-dialy' was not found in account {ACCOUNT}" in message
    assert "the account has 'billing', 'etl-daily'; did you mean 'etl-daily'?" in message
    assert [r.path.rsplit("/", 1)[-1] for r in requests_mock.request_history] == ["i", "workflows"]


def test_an_instance_404_makes_no_extra_request(hook, requests_mock):
    requests_mock.get(
        f"{WF}/wf/instances/i",
        status_code=404,
        json={"success": False, "errors": [{"code": 10400, "message": "instance.not_found"}]},
    )
    with pytest.raises(CloudflareWorkflowsNotFoundError, match=r"instance\.not_found"):
        hook.get_instance("wf", "i")
    assert requests_mock.call_count == 1


async def test_async_unknown_workflow_is_named(async_hook):
    hook, sent, responses = async_hook
    responses.extend([httpx.Response(**WORKFLOW_MISSING), httpx.Response(200, json=ok([]))])
    with pytest.raises(CloudflareWorkflowsNotFoundError, match="the account has no workflows"):
        await hook.aget_instance("nope", "i")
    assert len(sent) == 2


def test_delete_instances_sends_100_ids_per_call(hook, requests_mock):
    def answer(request, _context):
        ids = request.json()["instances"]
        return ok(
            {
                "deleted": [{"id": i} for i in ids if i != "i-7"],
                "errors": [{"id": i, "code": 10400, "message": "not found"} for i in ids if i == "i-7"],
            }
        )

    requests_mock.post(f"{WF}/wf/instances/batch/delete", json=answer)
    ids = [f"i-{n}" for n in range(250)]
    outcome = hook.delete_instances("wf", [*ids, "i-0"])
    assert [len(r.json()["instances"]) for r in requests_mock.request_history] == [100, 100, 50]
    assert outcome["deleted"] == [i for i in ids if i != "i-7"]
    assert outcome["errors"] == [{"id": "i-7", "code": 10400, "message": "not found"}]
    assert hook.delete_instances("wf", []) == {"deleted": [], "errors": []}
    assert requests_mock.call_count == 3
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="instance_ids must be a list"):
        hook.delete_instances("wf", "i-1")
