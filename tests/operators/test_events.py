"""The send-event operator: validation before any call, and the wire shape."""

from __future__ import annotations

import re
from unittest import mock

import pytest

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowSendEventOperator
from tests.helpers import ACCOUNT_ID, MOCK_API_BASE, ok_envelope

WF = f"{MOCK_API_BASE}/accounts/{ACCOUNT_ID}/workflows/wf"


@pytest.fixture(autouse=True)
def connection(mocked_api_conn):
    return mocked_api_conn


@pytest.fixture
def context():
    return {
        "ti": mock.MagicMock(
            dag_id="etl", run_id="manual__1", task_id="send", map_index=-1, try_number=1, max_tries=0
        )
    }


def send_event(**kwargs):
    return CloudflareWorkflowSendEventOperator(task_id="t", workflow_name="wf", instance_id="i", **kwargs)


@pytest.mark.parametrize(
    ("operator", "fragment"),
    [
        (send_event(event_type="order.paid", payload={}), "event_type 'order.paid' is not allowed"),
        (send_event(event_type="go", payload="x" * (1024 * 1024 + 1)), "at most 1048576 bytes"),
        (send_event(event_type="go", payload={1, 2}), "payload must be JSON-serializable"),
    ],
)
def test_bad_input_fails_before_any_http_call(operator, fragment, context, requests_mock):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=re.escape(fragment)):
        operator.execute(context)
    assert requests_mock.call_count == 0


def test_send_event_shape(context, requests_mock):
    requests_mock.post(f"{WF}/instances/i%201/events/approval", json=ok_envelope({}))
    operator = CloudflareWorkflowSendEventOperator(
        task_id="t", workflow_name="wf", instance_id="i 1", event_type="approval", payload={"ok": True}
    )
    assert operator.execute(context) == {
        "workflow_name": "wf",
        "instance_id": "i 1",
        "event_type": "approval",
    }
    assert requests_mock.last_request.json() == {"ok": True}
