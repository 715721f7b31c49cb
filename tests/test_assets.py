"""The one-line asset of a Workflow's finished instances, and the trigger's arguments and event."""

from __future__ import annotations

import pytest

from airflow_provider_cfworkflows.assets import cloudflare_workflow_asset, finished_instances_uri
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowFinishedInstancesTrigger,
    FinishedInstanceEvent,
)


def test_the_asset_carries_its_watcher():
    asset = cloudflare_workflow_asset("build-report", poll_interval=5)
    assert asset.uri == asset.name == "cfworkflows://cloudflare_default/build-report"
    (watcher,) = asset.watchers
    assert watcher.trigger.serialize() == (
        "airflow_provider_cfworkflows.triggers.finished_instances.CloudflareWorkflowFinishedInstancesTrigger",
        {
            "workflow_name": "build-report",
            "statuses": ["complete"],
            "cloudflare_conn_id": "cloudflare_default",
            "account_id": None,
            "poll_interval": 5.0,
        },
    )


def test_uri_names_account_and_statuses_when_not_the_defaults():
    uri = finished_instances_uri(
        "wf", statuses=["errored", "complete"], account_id="a1", cloudflare_conn_id="cf"
    )
    assert uri == "cfworkflows://cf/wf?account_id=a1&statuses=complete%2Cerrored"


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"statuses": ["running"]}, "only hold the final instance statuses"),
        ({"statuses": []}, "non-empty list"),
        ({"statuses": "complete"}, "non-empty list"),
        ({"poll_interval": 0.5}, "poll_interval must be a number of seconds >= 1"),
        ({"poll_interval": True}, "poll_interval must be"),
        ({"workflow_name": "x" * 65}, "workflow_name"),
    ],
)
def test_bad_arguments_are_refused_with_what_is_allowed(arguments, fragment):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match=fragment):
        CloudflareWorkflowFinishedInstancesTrigger(**{"workflow_name": "wf", **arguments})


def test_statuses_are_normalised_so_the_trigger_identity_is_stable():
    one = CloudflareWorkflowFinishedInstancesTrigger(workflow_name="wf", statuses=["errored", "complete"])
    two = CloudflareWorkflowFinishedInstancesTrigger(
        workflow_name="wf", statuses=("complete", "errored", "complete")
    )
    assert one.serialize() == two.serialize()
    assert one.memory_key == two.memory_key
    assert one.memory_key != CloudflareWorkflowFinishedInstancesTrigger(workflow_name="wf").memory_key


class _AssetEvent:
    def __init__(self, extra):
        self.extra = extra


def test_the_payload_is_read_back_from_an_asset_event():
    payload = {
        "workflow_name": "wf",
        "instance_id": "i",
        "status": "complete",
        "output": {"rows": 1},
        "output_truncated": False,
        "error": None,
        "ended_on": "2026-11-02T10:00:00.000Z",
        "account_id": "a",
    }
    event = FinishedInstanceEvent.from_asset_event(_AssetEvent({"from_trigger": True, "payload": payload}))
    assert event.to_dict() == payload
    with pytest.raises(ValueError, match="not caused by CloudflareWorkflowFinishedInstancesTrigger"):
        FinishedInstanceEvent.from_asset_event(_AssetEvent({"from_rest_api": True}))
