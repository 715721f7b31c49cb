"""CloudflareWorkflowStepOutputOperator against a mocked wire: validation, XCom contract, every error path."""

from __future__ import annotations

import hashlib
import io
import json
from unittest import mock

import pytest
from airflow.sdk import Asset, ObjectStoragePath
from airflow.sdk.exceptions import AirflowFailException
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutputDeliveryError,
    CloudflareWorkflowOutputRejectedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConnectionError,
    CloudflareWorkflowsNotFoundError,
    CloudflareWorkflowsServerError,
    CloudflareWorkflowStepFailedError,
    CloudflareWorkflowStepNotReadyError,
)
from airflow_provider_cfworkflows.links.workflows import INSTANCE_URL_XCOM_KEY, CloudflareWorkflowInstanceLink
from airflow_provider_cfworkflows.operators.workflows import (
    DEFAULT_MAX_XCOM_BYTES,
    CloudflareWorkflowStepOutputOperator,
)
from tests.fakes import RecordingTaskInstance

ACCOUNT = "0123456789abcdef0123456789abcdef"
TOKEN = "unit-test-token-9f2e"
BASE = "https://api.cloudflare.test/client/v4"
STEP_URL = f"{BASE}/accounts/{ACCOUNT}/workflows/etl/instances/run-1/step"


def ok(result):
    return {"success": True, "errors": [], "messages": [], "result": result}


def step_json(status="complete", output=None, error=None, **extra):
    return ok({"status": status, "error": error, "output": output, **extra})


def not_found(name):
    return {
        "success": False,
        "errors": [{"code": 10404, "message": f"Step '{name}' not found for instance 'run-1'"}],
        "messages": [],
        "result": None,
    }


@pytest.fixture(autouse=True)
def connection(monkeypatch, no_retry_waits):
    monkeypatch.setenv(
        "AIRFLOW_CONN_CLOUDFLARE_DEFAULT",
        json.dumps(
            {
                "conn_type": "cloudflare_workflows",
                "login": ACCOUNT,
                "password": TOKEN,
                "host": BASE,
                "extra": {"max_retries": 2},
            }
        ),
    )


@pytest.fixture
def context():
    return {"ti": RecordingTaskInstance(), "outlet_events": OutletEventAccessors()}


def operator(**kwargs):
    kwargs.setdefault("task_id", "fetch_output")
    kwargs.setdefault("workflow_name", "etl")
    kwargs.setdefault("instance_id", "run-1")
    kwargs.setdefault("step_name", "fetch data")
    return CloudflareWorkflowStepOutputOperator(**kwargs)


def sent_queries(requests_mock):
    return [request.qs for request in requests_mock.request_history]


# --- construction and validation -----------------------------------------------------------------


def test_constructor_defaults_and_no_io(monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_CLOUDFLARE_DEFAULT")
    op = operator()  # no connection needed: nothing is looked up before execute

    assert op.step_type == "step"
    assert op.attempt is None
    assert op.output_path is None
    assert op.max_xcom_bytes == DEFAULT_MAX_XCOM_BYTES == 65536
    assert op.on_redacted == "fail"
    assert op.cloudflare_conn_id == "cloudflare_default"
    assert "hook" not in op.__dict__
    assert set(op.template_fields) == {
        "workflow_name",
        "instance_id",
        "step_name",
        "step_type",
        "attempt",
        "account_id",
        "cloudflare_conn_id",
        "output_path",
    }
    assert [type(link) for link in op.operator_extra_links] == [CloudflareWorkflowInstanceLink]


def test_arguments_are_keyword_only():
    with pytest.raises(TypeError):
        CloudflareWorkflowStepOutputOperator("etl", "run-1", "fetch data", task_id="t")  # type: ignore[misc]


@pytest.mark.parametrize("value", ["raise", "", None, "FAIL"])
def test_on_redacted_is_validated(value):
    with pytest.raises(
        CloudflareWorkflowsConfigurationError, match="on_redacted must be one of 'fail', 'warn'"
    ):
        operator(on_redacted=value)


@pytest.mark.parametrize("value", [-1, True, "1024", 1.5, None])
def test_max_xcom_bytes_is_validated(value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="max_xcom_bytes must be a whole number"):
        operator(max_xcom_bytes=value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workflow_name": ""}, "workflow_name must be a non-empty string"),
        ({"workflow_name": "w" * 65}, "workflow_name must be at most 64"),
        ({"instance_id": ""}, "instance_id must be a non-empty string"),
        ({"step_name": "bad\nname"}, "must not contain control characters"),
        ({"step_name": "s" * 257}, "step_name must be at most 256"),
        ({"step_type": "do"}, "step_type must be one of 'step', 'waitForEvent'"),
        ({"attempt": 0}, "attempt must be a whole number >= 1"),
        ({"attempt": "two"}, "attempt must be a whole number >= 1"),
        ({"attempt": "\u0967"}, "attempt must be a whole number >= 1"),  # Devanagari one: not ASCII
        (
            {"attempt": 2, "step_type": "waitForEvent"},
            "attempt is not supported with step_type='waitForEvent'",
        ),
    ],
)
def test_rendered_values_are_validated_before_any_call(kwargs, message, context, requests_mock):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=message):
        operator(**kwargs).execute(context)

    assert requests_mock.call_count == 0
    assert context["ti"].pushed == {}


@pytest.mark.parametrize(
    ("output_path", "message"),
    [
        ("", "output_path is empty"),
        ("  ", "output_path is empty"),
        (42, "output_path must be a URL string"),
        ("s3://aws_conn@bucket/dir/", "must name an object, not a directory"),
        ("foo://bucket/key.json", r"output_path 'foo://bucket/key.json' cannot be used: .*'foo'"),
        ("memory://bucket/key.json", "uses memory://, for which Airflow has no filesystem here"),
        ("s3:///dir/key.json", r"cannot be used: .*bucket/container missing"),
        ("{tmp}", "is an existing directory; give the path of a file in it"),
        ("file://{tmp}/file/out.json", "cannot be created: '{tmp}/file' is a file, not a directory"),
    ],
)
def test_an_unusable_output_path_fails_without_retry_before_any_call(
    output_path, message, context, requests_mock, tmp_path
):
    (tmp_path / "file").write_text("not a directory")
    if isinstance(output_path, str):
        output_path = output_path.format(tmp=tmp_path)

    with pytest.raises(CloudflareWorkflowOutputRejectedError, match=message.format(tmp=tmp_path)) as raised:
        operator(output_path=output_path).execute(context)

    assert isinstance(raised.value, AirflowFailException)  # a retry would fail the same way
    assert requests_mock.call_count == 0
    assert context["ti"].pushed == {}


# --- JSON to XCom ----------------------------------------------------------------------------------


def test_json_output_is_returned_untruncated_after_the_link_is_pushed(context, requests_mock):
    big = {"rows": ["x" * 100] * 30}  # > 1024 characters: the instance-details preview would be cut
    pushed_before_call = []

    def answer(request, _):
        pushed_before_call.append(INSTANCE_URL_XCOM_KEY in context["ti"].pushed)
        return step_json(output=big)

    requests_mock.get(STEP_URL, json=answer)

    result = operator().execute(context)

    assert result == big
    assert pushed_before_call == [True]
    assert context["ti"].pushed[INSTANCE_URL_XCOM_KEY] == (
        f"https://dash.cloudflare.com/{ACCOUNT}/workers/workflows/etl/instance/run-1"
    )
    assert set(context["ti"].pushed) == {INSTANCE_URL_XCOM_KEY}
    assert sent_queries(requests_mock) == [{"name": ["fetch data-1"], "type": ["step"]}]
    assert requests_mock.request_history[0].headers["Authorization"] == f"Bearer {TOKEN}"


@pytest.mark.parametrize("output", [None, 0, "text", [1, 2], {"a": {"b": None}}, True])
def test_any_json_value_is_returned(output, context, requests_mock):
    requests_mock.get(STEP_URL, json=step_json(output=output))

    assert operator().execute(context) == output


def test_templated_attempt_string_and_wait_for_event(context, requests_mock):
    requests_mock.get(STEP_URL, json=step_json(output={"approved": True}, event_type="approval"))

    assert operator(attempt="3").execute(context) == {"approved": True}
    assert operator(step_type="waitForEvent", step_name="approve-1", attempt="").execute(context) == {
        "approved": True
    }
    assert sent_queries(requests_mock) == [
        {"name": ["fetch data-1"], "type": ["step"], "attempt": ["3"]},
        {"name": ["approve-1"], "type": ["waitforevent"]},
    ]


def test_name_with_counter_is_tried_as_given_then_with_suffix(context, requests_mock):
    requests_mock.get(
        STEP_URL,
        [
            {"status_code": 404, "json": not_found("batch-2024")},
            {"json": step_json(output=[1])},
        ],
    )

    assert operator(step_name="batch-2024").execute(context) == [1]
    assert [q["name"] for q in sent_queries(requests_mock)] == [["batch-2024"], ["batch-2024-1"]]


def test_output_exactly_at_the_limit_goes_to_xcom_one_more_byte_fails(context, requests_mock):
    output = "é" * 10  # 20 UTF-8 bytes + 2 quotes
    requests_mock.get(STEP_URL, json=step_json(output=output))

    assert operator(max_xcom_bytes=22).execute(context) == output
    with pytest.raises(CloudflareWorkflowOutputRejectedError) as raised:
        operator(max_xcom_bytes=21).execute(context)
    message = str(raised.value)
    assert "22 bytes as JSON, more than max_xcom_bytes=21" in message
    assert "Set output_path" in message
    assert isinstance(raised.value, AirflowFailException)  # not retried: the output will not shrink


def test_binary_output_without_output_path_fails_without_reading_it(context, requests_mock):
    class Body(io.BytesIO):
        read_bytes = 0

        def read(self, size=-1):
            data = super().read(size)
            Body.read_bytes += len(data)
            return data

    body = Body(b"\x00" * 4096)
    requests_mock.get(
        STEP_URL,
        body=body,
        headers={"Content-Type": "application/octet-stream", "Content-Length": "4096"},
    )

    with pytest.raises(CloudflareWorkflowOutputRejectedError) as raised:
        operator().execute(context)

    message = str(raised.value)
    assert "is binary (application/octet-stream" in message
    assert "4096 bytes" in message
    assert "Binary outputs never go to XCom: set output_path" in message
    assert isinstance(raised.value, AirflowFailException)
    assert Body.read_bytes == 0


# --- redacted ------------------------------------------------------------------------------------


def test_redacted_output_fails_by_default(context, requests_mock):
    requests_mock.get(STEP_URL, json=step_json(output="[REDACTED]"))

    with pytest.raises(CloudflareWorkflowOutputRejectedError) as raised:
        operator().execute(context)

    message = str(raised.value)
    assert "'[REDACTED]'" in message
    assert "marked sensitive in the Workflow" in message
    assert "on_redacted='warn'" in message
    assert isinstance(raised.value, AirflowFailException)


def test_redacted_output_with_warn_passes_the_marker_on(context, requests_mock, tmp_path):
    requests_mock.get(STEP_URL, json=step_json(output="[REDACTED]"))
    op = operator(on_redacted="warn")

    with mock.patch.object(type(op), "log", new_callable=mock.PropertyMock) as log:
        assert op.execute(context) == "[REDACTED]"
    warning = log.return_value.warning.call_args
    assert "marked sensitive in the Workflow" in warning.args[1]

    target = tmp_path / "secret.json"
    assert operator(on_redacted="warn", output_path=f"file://{target}").execute(context) == f"file://{target}"
    assert json.loads(target.read_text()) == "[REDACTED]"


# --- step not complete ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("result", "expected"),
    [
        ({"status": "running", "error": None}, "is not complete yet (status 'running')"),
        ({"status": "queued", "error": None}, "is not complete yet (status 'queued')"),
        (
            {"status": "running", "error": {"name": "Error", "message": "boom"}},
            "is retrying after an attempt failed with Error: boom",
        ),
        (
            {"status": "waiting", "error": None, "event_type": "approval"},
            "still waiting for its event 'approval'",
        ),
    ],
)
def test_step_not_complete_asks_for_the_sensor(result, expected, context, requests_mock):
    requests_mock.get(STEP_URL, json=ok({**result, "output": None}))

    with pytest.raises(CloudflareWorkflowStepNotReadyError) as raised:
        operator().execute(context)

    message = str(raised.value)
    assert message.startswith("Step 'fetch data-1' of instance 'run-1' of workflow 'etl' ")
    assert expected in message
    assert "Put a CloudflareWorkflowStepSensor for this step upstream" in message
    assert not isinstance(raised.value, AirflowFailException)  # a retry later may find it complete


INSTANCE_URL = f"{BASE}/accounts/{ACCOUNT}/workflows/etl/instances/run-1"
STEPS = [
    {"name": "prepare-1", "type": "step", "attempts": [{"success": True}]},
    {"name": "load-1", "type": "step", "attempts": [{"success": False}, {"success": True}]},
    {"name": "approval-1", "type": "waitForEvent"},
]


def test_step_not_started_404_asks_for_the_sensor(context, requests_mock):
    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, json=ok({"status": "running", "steps": STEPS[:1]}))

    with pytest.raises(CloudflareWorkflowStepNotReadyError) as raised:
        operator(step_name="load-3").execute(context)

    message = str(raised.value)
    assert (
        "Step 'load-3' of instance 'run-1' of workflow 'etl' has not started yet (the instance is running; "
        "steps so far: 'prepare-1' (step))." in message
    )
    assert "CloudflareWorkflowStepSensor" in message
    assert "HTTP 404" in message
    assert not isinstance(raised.value, AirflowFailException)  # a retry later may find it
    assert requests_mock.call_count == 3  # both names, then the instance once


@pytest.mark.parametrize("status", ["complete", "errored", "terminated"])
def test_a_step_a_finished_instance_never_ran_fails_listing_its_steps(context, requests_mock, status):
    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, json=ok({"status": status, "steps": STEPS}))

    with pytest.raises(CloudflareWorkflowStepFailedError) as raised:
        operator(step_name="laod").execute(context)

    assert str(raised.value) == (
        "Step 'laod' of instance 'run-1' of workflow 'etl' never ran (no step is logged as 'laod-1'): the "
        f"instance is {status} and will not run it. Steps the instance has: 'prepare-1' (step), 'load-1' "
        "(step), 'approval-1' (waitForEvent). Check the name (as written in the Workflow code, or the "
        "logged name with its -N suffix) and the step_type."
    )
    assert isinstance(raised.value, AirflowFailException)  # no retry: the name is wrong
    assert "CloudflareWorkflowStepSensor" not in str(raised.value)


def test_an_attempt_a_finished_instance_never_made_fails_without_retry(context, requests_mock):
    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, json=ok({"status": "complete", "steps": STEPS}))

    with pytest.raises(CloudflareWorkflowStepFailedError) as raised:
        operator(step_name="load", attempt=5).execute(context)

    assert str(raised.value) == (
        "Attempt 5 of step 'load' of instance 'run-1' of workflow 'etl' does not exist: the step ran 2 "
        "attempt(s) and the instance is complete, so there will never be an attempt 5."
    )


def test_the_hook_explains_a_missing_attempt_with_the_operators_words(context, requests_mock):
    from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, json=ok({"status": "complete", "steps": STEPS}))
    with pytest.raises(CloudflareWorkflowStepFailedError) as from_operator:
        operator(step_name="load", attempt=5).execute(context)
    with pytest.raises(CloudflareWorkflowsNotFoundError) as from_hook:
        CloudflareWorkflowsHook().get_step_output("etl", "run-1", "load", attempt=5)

    message = from_hook.value.message
    assert message == str(from_operator.value)  # one rule (instance_details.explain_missing_step)
    assert "not found" not in message


def test_an_unknown_instance_says_so(context, requests_mock):
    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, status_code=404, json=not_found("run-1"))

    with pytest.raises(CloudflareWorkflowsNotFoundError, match="Instance 'run-1' of workflow 'etl' was not"):
        operator(step_name="load").execute(context)


def test_when_the_instance_cannot_be_checked_the_step_may_not_have_started(context, requests_mock):
    requests_mock.get(STEP_URL, status_code=404, json=not_found("x"))
    requests_mock.get(INSTANCE_URL, status_code=503, json={"success": False, "errors": [], "result": None})

    with pytest.raises(CloudflareWorkflowStepNotReadyError, match="the instance could not be checked"):
        operator(step_name="load").execute(context)


def test_other_api_errors_are_not_hidden(context, requests_mock):
    requests_mock.get(STEP_URL, status_code=500, json={"success": False, "errors": [], "result": None})

    with pytest.raises(CloudflareWorkflowsServerError):
        operator().execute(context)
    assert requests_mock.call_count == 3  # the hook's own retries (max_retries=2)


# --- errored step --------------------------------------------------------------------------------


def test_errored_step_fails_with_the_remote_error(context, requests_mock):
    error = {"name": "TypeError", "message": "x is undefined"}
    requests_mock.get(STEP_URL, json=step_json(status="errored", error=error))

    with pytest.raises(CloudflareWorkflowStepFailedError) as raised:
        operator().execute(context)

    assert str(raised.value).startswith("Step 'fetch data-1' of instance 'run-1' of workflow 'etl' errored")
    assert "TypeError: x is undefined" in str(raised.value)
    assert isinstance(raised.value, AirflowFailException)
    assert context["ti"].pushed["error"] == error


def test_attempt_fetches_that_attempts_error(context, requests_mock):
    error = {"name": "NetworkError", "message": "upstream timed out"}
    requests_mock.get(STEP_URL, json=step_json(status="errored", error=error))

    with pytest.raises(
        CloudflareWorkflowStepFailedError, match=r"Attempt 2 of step 'fetch data-1'.*errored"
    ) as raised:
        operator(attempt=2).execute(context)

    assert "A later attempt may have succeeded" in str(raised.value)
    assert sent_queries(requests_mock)[0]["attempt"] == ["2"]
    assert context["ti"].pushed["error"] == error


# --- output_path ---------------------------------------------------------------------------------


def test_json_output_to_file(context, requests_mock, tmp_path):
    output = {"name": "Zoë", "rows": list(range(500))}
    requests_mock.get(STEP_URL, json=step_json(output=output))
    target = tmp_path / "new" / "dirs" / "out.json"

    result = operator(output_path=f"file://{target}").execute(context)

    data = target.read_bytes()
    assert result == f"file://{target}"
    assert json.loads(data.decode("utf-8")) == output
    assert "Zoë".encode() in data  # UTF-8, not \u escapes
    pushed = context["ti"].pushed
    assert pushed["content_type"] == "application/json"
    assert pushed["size_bytes"] == len(data)
    assert pushed["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_large_json_output_to_file_ignores_max_xcom_bytes(context, requests_mock, tmp_path):
    requests_mock.get(STEP_URL, json=step_json(output="y" * 5000))
    target = tmp_path / "out.json"

    operator(output_path=str(target), max_xcom_bytes=10).execute(context)  # a plain local path works too

    assert json.loads(target.read_text()) == "y" * 5000


def test_binary_output_to_file_is_streamed_byte_for_byte(context, requests_mock, tmp_path):
    payload = bytes(range(256)) * 40_000  # ~10 MiB: several write blocks
    requests_mock.get(
        STEP_URL,
        body=io.BytesIO(payload),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(payload))},
    )
    target = tmp_path / "blob.bin"
    target.write_bytes(b"old content")  # replaced

    result = operator(output_path=ObjectStoragePath(f"file://{target}")).execute(context)

    assert result == f"file://{target}"
    assert target.read_bytes() == payload
    pushed = context["ti"].pushed
    assert pushed["content_type"] == "application/octet-stream"
    assert pushed["size_bytes"] == len(payload)
    assert pushed["sha256"] == hashlib.sha256(payload).hexdigest()


def test_cut_off_stream_leaves_nothing_and_is_retryable(context, requests_mock, tmp_path):
    payload = b"z" * 3_000_000
    requests_mock.get(
        STEP_URL,
        body=io.BytesIO(payload[:1_000_000]),
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(len(payload))},
    )
    target = tmp_path / "blob.bin"

    with pytest.raises(CloudflareWorkflowsConnectionError) as raised:
        operator(output_path=f"file://{target}").execute(context)

    assert "ended after 1000000 of 3000000 bytes" in str(raised.value)
    assert any("was left untouched (no partial object)" in note for note in raised.value.__notes__)
    assert not isinstance(raised.value, AirflowFailException)
    assert list(tmp_path.iterdir()) == []
    assert "sha256" not in context["ti"].pushed


def test_storage_failure_is_a_clear_retryable_error(context, requests_mock):
    requests_mock.get(STEP_URL, json=step_json(output={"a": 1}))

    with pytest.raises(CloudflareWorkflowOutputDeliveryError) as raised:
        # A directory where no file can be created, not even by root: the write fails (ENOENT).
        operator(output_path="file:///proc/self/out.json").execute(context)

    assert not isinstance(raised.value, AirflowFailException)
    assert "output_path was left untouched (no partial object)" in str(raised.value)


def test_outlet_events_get_the_output_metadata(context, requests_mock, tmp_path):
    requests_mock.get(STEP_URL, json=step_json(output={"a": 1}))
    asset = Asset(name="etl_output", uri="file:///data/etl_output.json")
    target = tmp_path / "o.json"

    operator(output_path=f"file://{target}", outlets=[asset]).execute(context)

    extra = context["outlet_events"][asset].extra
    assert extra == {
        "workflow_name": "etl",
        "instance_id": "run-1",
        "step_name": "fetch data-1",
        "output_path": f"file://{target}",
        "content_type": "application/json",
        "size_bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }


def test_account_id_argument_overrides_the_connection(context, requests_mock):
    other = "f" * 32
    requests_mock.get(f"{BASE}/accounts/{other}/workflows/etl/instances/run-1/step", json=step_json(output=1))

    assert operator(account_id=other).execute(context) == 1
    assert other in context["ti"].pushed[INSTANCE_URL_XCOM_KEY]
