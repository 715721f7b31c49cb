"""Create, batch-create and status operators: validation before any call, and wire shapes."""

from __future__ import annotations

import re
from unittest import mock

import pytest

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsError,
)
from airflow_provider_cfworkflows.instance_ids import derive_instance_id
from airflow_provider_cfworkflows.links.workflows import INSTANCE_URL_XCOM_KEY
from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowCreateInstancesOperator,
)
from tests.helpers import ACCOUNT_ID as ACCOUNT
from tests.helpers import MOCK_API_BASE as BASE
from tests.helpers import ok_envelope

WF = f"{BASE}/accounts/{ACCOUNT}/workflows/wf"


ok = ok_envelope


@pytest.fixture(autouse=True)
def connection(mocked_api_conn):
    return mocked_api_conn


@pytest.fixture
def context():
    ti = mock.MagicMock(
        dag_id="etl", run_id="manual__1", task_id="start", map_index=-1, try_number=1, max_tries=0
    )
    return {"ti": ti, "outlet_events": None}


@pytest.mark.parametrize(
    ("operator", "fragment"),
    [
        (
            CloudflareWorkflowCreateInstanceOperator(
                task_id="t", workflow_name="wf", instance_params={"when": object()}
            ),
            "instance_params must be JSON-serializable",
        ),
        (
            CloudflareWorkflowCreateInstanceOperator(
                task_id="t", workflow_name="wf", instance_id="has space"
            ),
            "instance_id 'has space' is not allowed",
        ),
        (
            CloudflareWorkflowChangeInstanceStatusOperator(
                task_id="t", workflow_name="wf", instance_id="i", action="stop"
            ),
            "action must be one of 'pause', 'resume', 'terminate', 'restart'",
        ),
        (
            CloudflareWorkflowChangeInstanceStatusOperator(
                task_id="t", workflow_name="wf", instance_id="i", action="pause", rollback=True
            ),
            "rollback applies only to action='terminate'",
        ),
        (
            CloudflareWorkflowCreateInstancesOperator(
                task_id="t", workflow_name="wf", instances=[{"parms": {}}]
            ),
            "unknown keys ['parms']",
        ),
        (
            CloudflareWorkflowCreateInstancesOperator(
                task_id="t", workflow_name="wf", instances="not a list"
            ),
            "instances must be a list",
        ),
        (
            CloudflareWorkflowCreateInstancesOperator(
                task_id="t", workflow_name="wf", instances=[{"instance_id": "a"}, {"instance_id": "a"}]
            ),
            "same instance_id more than once",
        ),
    ],
)
def test_bad_input_fails_before_any_http_call(operator, fragment, context, requests_mock):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=re.escape(fragment)):
        operator.execute(context)
    assert requests_mock.call_count == 0


def test_create_derives_a_stable_id_and_pushes_the_link_first(context, requests_mock):
    expected_id = derive_instance_id("etl", "manual__1", "start", -1)
    pushes_before_create = []

    def answer(request, _):
        pushes_before_create.append(context["ti"].xcom_push.call_count)
        return ok({"id": expected_id, "status": "queued"})

    requests_mock.post(f"{WF}/instances", json=answer)
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="wf", instance_params={"a": 1}
    )

    assert operator.execute(context) == expected_id
    assert requests_mock.last_request.json() == {"instance_id": expected_id, "params": {"a": 1}}
    assert pushes_before_create == [1]  # the link is there even if the task dies during the create
    (link_push,) = context["ti"].xcom_push.call_args_list
    assert link_push.kwargs["key"] == INSTANCE_URL_XCOM_KEY
    assert link_push.kwargs["value"].endswith(f"/workers/workflows/wf/instance/{expected_id}")


def test_create_treats_already_exists_as_success(context, requests_mock):
    requests_mock.post(
        f"{WF}/instances",
        status_code=409,
        json={
            "success": False,
            "errors": [{"code": 10405, "message": "workflows.api.error.instance.already_exists"}],
        },
    )
    requests_mock.get(f"{WF}/instances/mine", json=ok({"status": "running"}))
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="wf", instance_id="mine"
    )
    assert operator.execute(context) == "mine"


def test_create_other_conflicts_still_fail(context, requests_mock):
    requests_mock.post(
        f"{WF}/instances", status_code=409, json={"success": False, "errors": [{"code": 1, "message": "x"}]}
    )
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="wf", instance_id="mine"
    )
    with pytest.raises(CloudflareWorkflowsError, match="HTTP 409"):
        operator.execute(context)


def test_batch_splits_by_100_and_accepts_skipped_ids(context, requests_mock):
    def created(request, _context):
        # The first item of each batch already exists (an earlier try created it): the API leaves it out.
        return ok([{"id": item["instance_id"], "status": "queued"} for item in request.json()[1:]])

    requests_mock.post(f"{WF}/instances/batch", json=created)
    lookups = requests_mock.get(re.compile(rf"{WF}/instances/[^/]+$"), json=ok({"status": "running"}))
    operator = CloudflareWorkflowCreateInstancesOperator(
        task_id="start", workflow_name="wf", instances=[{"params": {"n": n}} for n in range(250)]
    )

    ids = operator.execute(context)

    assert len(ids) == len(set(ids)) == 250
    batches = [r.json() for r in requests_mock.request_history if r.path.endswith("/batch")]
    assert [len(batch) for batch in batches] == [100, 100, 50]
    assert batches[0][3] == {"instance_id": ids[3], "params": {"n": 3}}
    assert [r.path.rsplit("/", 1)[1] for r in lookups.request_history] == [
        ids[0].lower(),
        ids[100].lower(),
        ids[200].lower(),
    ]


def test_restart_conflict_has_a_clear_message(context, requests_mock):
    requests_mock.patch(
        f"{WF}/instances/i/status",
        status_code=409,
        json={
            "success": False,
            "errors": [{"code": 10409, "message": "Instance not in a restartable state."}],
        },
    )
    operator = CloudflareWorkflowChangeInstanceStatusOperator(
        task_id="t", workflow_name="wf", instance_id="i", action="restart"
    )
    with pytest.raises(
        CloudflareWorkflowsError, match=r"Cannot restart instance 'i'.*not in a restartable state"
    ):
        operator.execute(context)


def test_create_attaches_asset_event_metadata(context, requests_mock):
    from airflow.sdk import Asset

    asset = Asset("cloudflare://workflows/wf/instances")
    events = {asset: mock.MagicMock(extra={})}
    context["outlet_events"] = events
    requests_mock.post(f"{WF}/instances", json=ok({"id": "mine", "status": "queued"}))
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="wf", instance_id="mine", outlets=[asset]
    )
    operator.execute(context)
    assert events[asset].extra == {"workflow_name": "wf", "instance_id": "mine", "account_id": ACCOUNT}


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "10", None])
@pytest.mark.parametrize("argument", ["poll_interval", "timeout"])
def test_wait_seconds_must_be_finite_and_positive(argument, value):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=f"{argument} must be a"):
        CloudflareWorkflowCreateInstanceOperator(task_id="t", workflow_name="wf", **{argument: value})


def test_create_treats_any_4xx_already_exists_as_success(context, requests_mock):
    requests_mock.post(
        f"{WF}/instances",
        status_code=400,
        json={"success": False, "errors": [{"code": 10001, "message": "Instance already exists"}]},
    )
    requests_mock.get(f"{WF}/instances/mine", json=ok({"status": "complete"}))
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="start", workflow_name="wf", instance_id="mine"
    )
    assert operator.execute(context) == "mine"


def test_retry_from_failure_without_waiting_is_refused_when_the_dag_is_parsed():
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="needs wait_for_completion=True"):
        CloudflareWorkflowCreateInstanceOperator(task_id="t", workflow_name="wf", retry_from_failure=True)
    operator = CloudflareWorkflowCreateInstanceOperator(
        task_id="t", workflow_name="wf", retry_from_failure=True, wait_for_completion=True
    )
    assert (operator.retry_from_failure, operator.durable) == (True, True)
