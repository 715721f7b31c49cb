"""The instance ``output`` as the value ``run()`` returned, whether Cloudflare sends it raw or JSON-encoded
(``models.instance_output``), in the instance sensor's summary and the create-and-wait wait, against the
emulator in both of its ``output_encoding`` modes."""

from __future__ import annotations

import uuid
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.models import instance_output
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowInstanceSensor
from airflow_provider_cfworkflows.task_waits import InstanceWait

# What run() returned -> what the user receives, when Cloudflare sends it raw / JSON-encoded.
RECEIVED: list[tuple[Any, Any, Any]] = [
    ({"rows": 42, "names": ["a", "é"]}, {"rows": 42, "names": ["a", "é"]}, {"rows": 42, "names": ["a", "é"]}),
    ([1, {"a": None}], [1, {"a": None}], [1, {"a": None}]),
    ("done", "done", "done"),
    ("", "", ""),
    (None, None, None),
    (5, 5, "5"),  # JSON-encoded numbers and booleans stay text: "42" may be a Workflow's own string
    (2.5, 2.5, "2.5"),
    (True, True, "true"),
]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('{"rows": 42}', {"rows": 42}),
        ("  [1, 2]", [1, 2]),
        ('"done"', "done"),
        ('"{\\"a\\": 1}"', '{"a": 1}'),  # decoded once, never twice
        ("done", "done"),
        ("42", "42"),
        ("true", "true"),
        ("null", "null"),
        ("{not json", "{not json"),
        ('"unterminated', '"unterminated'),
        ({"rows": 42}, {"rows": 42}),
        ([1], [1]),
        (7, 7),
        (None, None),
    ],
)
def test_instance_output_rule(value, expected):
    assert instance_output(value) == expected


@pytest.fixture(params=["raw", "string"])
def encoding(request, cloudflare_conn) -> str:
    cloudflare_conn.set_options(output_encoding=request.param)
    return request.param


def finished_instance(emulator, output: Any) -> tuple[str, str]:
    """A Workflow without steps whose run() returns ``output``, and a (finished) instance of it."""
    name = f"out-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "steps": [], "output": output})
    instance_id = f"i-{uuid.uuid4().hex[:8]}"
    CloudflareWorkflowsHook().create_instance(name, instance_id=instance_id)
    return name, instance_id


@pytest.mark.integration
@pytest.mark.parametrize(("returned", "if_raw", "if_encoded"), RECEIVED)
def test_the_sensor_and_the_wait_give_what_run_returned_in_both_encodings(
    cloudflare_conn, encoding, returned, if_raw, if_encoded
):
    workflow_name, instance_id = finished_instance(cloudflare_conn, returned)
    sent = CloudflareWorkflowsHook().get_instance(workflow_name, instance_id)["output"]
    if encoding == "string" and returned is not None:
        assert isinstance(sent, str)  # the emulator really sends it JSON-encoded
    else:
        assert sent == returned
    expected = if_raw if encoding == "raw" else if_encoded

    sensor = CloudflareWorkflowInstanceSensor(
        task_id="wait", workflow_name=workflow_name, instance_id=instance_id, poke_interval=1, timeout=60
    )
    assert sensor.poke({"ti": mock.MagicMock()}).xcom_value["output"] == expected

    resumed = sensor.execute_complete(
        {"ti": mock.MagicMock()},
        {
            "status": "success",
            "workflow_name": workflow_name,
            "instance_id": instance_id,
            "instance_status": "complete",
            "error": None,
            "message": "The instance is complete.",
        },
    )
    assert resumed["output"] == expected  # after a deferral: read on the worker, decoded the same way

    wait = InstanceWait(
        hook=CloudflareWorkflowsHook(),
        log=mock.Mock(),
        workflow_name=workflow_name,
        instance_id=instance_id,
        account_id=None,
        cloudflare_conn_id="cloudflare_default",
        success_states=("complete",),
        failure_states=("errored", "terminated"),
    )
    assert wait.wait(timeout=30, poll_interval=1).output == expected  # the create-and-wait operator's wait
