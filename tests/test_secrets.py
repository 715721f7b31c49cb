"""Credentials never reach logs, exception texts, reprs, URLs or trigger arguments.

Besides these checks, ``tests/conftest.py`` fails any test whose captured output (stdout, stderr,
log records) or failure text contains one of the test credentials, for the whole run.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from airflow.sdk.exceptions import TaskDeferred

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from tests.fakes import INSTANCE, WORKFLOW, FakeApi
from tests.helpers import SECRETS, UNIT_TEST_TOKEN, leaked_secrets


def test_the_run_wide_guard_detects_every_test_credential():
    assert leaked_secrets(["all clear", "Bearer ***"]) == []
    for secret in SECRETS:
        assert leaked_secrets([f"log line with {secret} inside"]) == [secret]


def test_token_absent_from_urls_logs_errors_and_reprs(mocked_api_conn, requests_mock, capsys, no_retry_waits):
    requests_mock.get(
        f"{mocked_api_conn}/accounts/0123456789abcdef0123456789abcdef/workflows/wf",
        status_code=503,
        json={"success": False, "errors": [{"code": 10001, "message": "internal"}]},
    )
    hook = CloudflareWorkflowsHook()

    with pytest.raises(CloudflareWorkflowsError) as caught:
        hook.get_workflow("wf")

    sent = requests_mock.request_history
    assert len(sent) > 1  # retried, and each retry logged
    assert all(UNIT_TEST_TOKEN not in request.url for request in sent)
    assert sent[0].headers["Authorization"] == f"Bearer {UNIT_TEST_TOKEN}"  # only in the header
    texts = [str(caught.value), repr(caught.value), repr(hook.settings), capsys.readouterr().out]
    assert leaked_secrets(texts) == []


def test_trigger_kwargs_carry_the_connection_id_only(mocked_api_conn, requests_mock):
    FakeApi().install(requests_mock)  # the step has not started: the sensor defers
    sensor = CloudflareWorkflowStepSensor(
        task_id="s", workflow_name=WORKFLOW, instance_id=INSTANCE, step_name="x", deferrable=True
    )
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"ti": mock.MagicMock()})
    kwargs = deferred.value.trigger.serialize()[1]
    assert kwargs["cloudflare_conn_id"] == "cloudflare_default"
    assert leaked_secrets([json.dumps(kwargs)]) == []
