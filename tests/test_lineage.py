"""OpenLineage (the optional extra): the facets the operators and sensors report, the parent run
injected into instance params, and a provider that imports nothing of OpenLineage without the extra."""

from __future__ import annotations

import subprocess
import sys
import uuid
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.lineage import (
    LineageRun,
    inject_parent_info,
    operator_lineage,
    output_dataset_name,
)
from airflow_provider_cfworkflows.operators.workflows import (
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowStepOutputOperator,
)
from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowInstanceSensor
from tests.fakes import RecordingTaskInstance
from tests.helpers import ACCOUNT_ID

DASHBOARD = f"https://dash.cloudflare.com/{ACCOUNT_ID}/workers/workflows/demo-fan-out/instance/"


def facets(lineage: Any) -> dict[str, Any]:
    """The run facets as OpenLineage sends them (JSON)."""
    from openlineage.client.serde import Serde

    return {name: Serde.to_dict(facet) for name, facet in lineage.run_facets.items()}


def test_dataset_names_follow_openlineage_naming():
    assert output_dataset_name("s3://aws_conn@reports/2026/out.bin") == ("s3://reports", "2026/out.bin")
    assert output_dataset_name("gs://bucket/a/b.json") == ("gs://bucket", "a/b.json")
    assert output_dataset_name("file:///data/out.json") == ("file", "/data/out.json")


def test_operator_lineage_pins_the_run_facet_and_outputs():
    run = LineageRun(ACCOUNT_ID, "demo-fan-out", "i-1", "v-9")
    lineage = operator_lineage(run, ["s3://reports/x.bin"])
    found = facets(lineage)
    instance = found["cloudflareWorkflowInstance"]
    assert {
        k: instance[k] for k in ("workflowName", "instanceId", "versionId", "accountId", "dashboardUrl")
    } == {
        "workflowName": "demo-fan-out",
        "instanceId": "i-1",
        "versionId": "v-9",
        "accountId": ACCOUNT_ID,
        "dashboardUrl": DASHBOARD + "i-1",
    }
    assert instance["_schemaURL"].endswith("CloudflareWorkflowInstanceRunFacet.json")
    assert (found["externalQuery"]["externalQueryId"], found["externalQuery"]["source"]) == (
        "i-1",
        "cloudflare-workflows",
    )
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("s3://reports", "x.bin")]
    assert operator_lineage(None).run_facets == {}


@pytest.mark.integration
def test_operators_and_sensors_report_the_instance_and_what_they_wrote(cloudflare_conn: Any, tmp_path: Any):
    instance_id = f"lin-{uuid.uuid4().hex[:8]}"
    create = CloudflareWorkflowCreateInstanceOperator(
        task_id="create",
        workflow_name="demo-fan-out",
        instance_id=instance_id,
        wait_for_completion=True,
        poll_interval=0.2,
    )
    create.execute({"ti": mock.MagicMock(), "outlet_events": None})
    version = CloudflareWorkflowsHook().get_instance("demo-fan-out", instance_id, simple=True)["versionId"]
    reads_before = len([r for r in cloudflare_conn.requests_log() if r["endpoint"] == "get_instance"])
    created = facets(create.get_openlineage_facets_on_complete(None))["cloudflareWorkflowInstance"]
    reads_after = len([r for r in cloudflare_conn.requests_log() if r["endpoint"] == "get_instance"])
    assert (created["instanceId"], created["versionId"], created["dashboardUrl"]) == (
        instance_id,
        version,
        DASHBOARD + instance_id,
    )
    assert reads_after == reads_before  # the version came with the create answer

    sensor = CloudflareWorkflowInstanceSensor(
        task_id="wait", workflow_name="demo-fan-out", instance_id=instance_id, poke_interval=1, timeout=60
    )
    sensor.execute({"ti": mock.MagicMock()})
    sensed = facets(sensor.get_openlineage_facets_on_complete(None))["cloudflareWorkflowInstance"]
    assert (sensed["instanceId"], sensed["versionId"]) == (instance_id, version)

    target = tmp_path / "summary.json"
    output = CloudflareWorkflowStepOutputOperator(
        task_id="fetch",
        workflow_name="demo-fan-out",
        instance_id=instance_id,
        step_name="summarize",
        output_path=target.as_uri(),
    )
    output.execute({"ti": RecordingTaskInstance(), "outlet_events": None})  # type: ignore[typeddict-item]
    lineage = output.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("file", str(target))]
    assert facets(lineage)["cloudflareWorkflowInstance"]["instanceId"] == instance_id


@pytest.mark.integration
def test_parent_run_injected_into_instance_params(run_dag, cloudflare_conn, monkeypatch):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")  # OpenLineage on, sending nowhere
    instance_id = f"lin-{uuid.uuid4().hex[:8]}"
    result = run_dag("lineage_parent_info", {"instance_id": instance_id})

    assert result.state == "success", result.task_states()
    params = CloudflareWorkflowsHook().get_instance("demo-fan-out", instance_id, simple=True)["params"]
    injected = params["openlineage"]
    assert params["region"] == "emea"
    assert injected["keep"] == "me"  # what the user put there stays
    assert injected["parentJobName"] == "lineage_parent_info.create"
    assert injected["rootParentJobName"] == "lineage_parent_info"
    assert injected["parentJobNamespace"] == injected["rootParentJobNamespace"] == "default"
    assert uuid.UUID(injected["parentRunId"]) != uuid.UUID(injected["rootParentRunId"])


def test_injection_leaves_other_params_alone(monkeypatch):
    monkeypatch.setenv("OPENLINEAGE__TRANSPORT__TYPE", "console")
    ti = mock.MagicMock()
    assert inject_parent_info(["a list"], ti) == ["a list"]
    taken = {"openlineage": {"parentRunId": "theirs"}}
    assert inject_parent_info(taken, ti) == taken


def test_injection_needs_openlineage_enabled(monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    assert inject_parent_info({"a": 1}, mock.MagicMock()) == {"a": 1}


BLOCK_OPENLINEAGE = """
import importlib.abc, pkgutil, sys

# The OpenLineage client, and the provider's modules beyond what Airflow's provider discovery reads.
DISCOVERY = {"airflow.providers.openlineage", "airflow.providers.openlineage.get_provider_info"}

class NoOpenLineage(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "openlineage" or (
            name.startswith("airflow.providers.openlineage") and name not in DISCOVERY
        ):
            raise ModuleNotFoundError(f"{name} is not installed (blocked by the test)")
        return None

sys.meta_path.insert(0, NoOpenLineage())
import airflow_provider_cfworkflows as package
from airflow_provider_cfworkflows.lineage import inject_parent_info
skipped = {
    "airflow_provider_cfworkflows.instance_run_facet",
    "airflow_provider_cfworkflows.emulator.__main__",
}
for module in pkgutil.walk_packages(package.__path__, "airflow_provider_cfworkflows."):
    if module.name not in skipped:
        importlib.import_module(module.name)
assert inject_parent_info({"a": 1}, None) == {"a": 1}
print(sorted(m for m in sys.modules if "openlineage" in m and m not in DISCOVERY))
"""


def test_without_the_extra_nothing_imports_openlineage():
    done = subprocess.run(
        [sys.executable, "-c", "import importlib\n" + BLOCK_OPENLINEAGE],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
