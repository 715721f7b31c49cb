"""Every example DAG runs end to end on a real Airflow against the emulator's bundled demo scenario."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from tests.hitl import Answer, Person

pytestmark = pytest.mark.integration
EXAMPLES = sorted(p.stem for p in (Path(__file__).parents[2] / "example_dags").glob("example_*.py"))


def test_every_example_dag_has_a_test_and_a_docstring():
    import ast

    tested = {
        "example_cfworkflows_step_output",
        "example_cfworkflows_pipeline",
        "example_cfworkflows_fan_out",
        "example_cfworkflows_event_driven",  # its run: tests/multiprocess/test_event_driven.py
        "example_cfworkflows_approval",
    }
    assert set(EXAMPLES) == tested
    for name in EXAMPLES:
        source = (Path(__file__).parents[2] / "example_dags" / f"{name}.py").read_text()
        assert ast.get_docstring(ast.parse(source)), f"{name} needs a module docstring saying what it shows"


def test_step_output_example(run_dag, cloudflare_conn):
    hook = CloudflareWorkflowsHook()
    instance_id = hook.create_instance("demo-pipeline")["id"]

    result = run_dag("example_cfworkflows_step_output", {"instance_id": instance_id})

    assert result.state == "success"
    full = hook.get_step_output("demo-pipeline", instance_id, "prepare-1").output
    assert result.xcom("fetch_prepare_output") == full
    assert result.xcom("count_rows") == len(full["rows"])


def test_pipeline_example(run_dag, cloudflare_conn, tmp_path):
    result = run_dag("example_cfworkflows_pipeline", {"output_base": tmp_path.as_uri()})

    assert result.state == "success", result.task_states()
    instance_id = result.xcom("create_instance")
    (report,) = tmp_path.rglob("report.bin")
    assert result.xcom("store_report") == report.as_uri()
    data = report.read_bytes()
    expected = cloudflare_conn.stream_digest("demo-pipeline", instance_id, "build report-1")
    assert {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()} == expected
    assert result.xcom("check_report") == {
        "path": report.as_uri(),
        "size_bytes": len(data),
        "sha256": expected["sha256"],
    }
    events = [r for r in cloudflare_conn.requests_log() if "/events/approval" in r["raw_path"]]
    assert len(events) == 1
    assert (
        CloudflareWorkflowsHook().get_instance("demo-pipeline", instance_id, simple=True)["status"]
        == "complete"
    )


def test_fan_out_example(run_dag, cloudflare_conn):
    result = run_dag("example_cfworkflows_fan_out", {"regions": ["emea", "amer", "apac", "oc"]})

    assert result.state == "success", result.task_states()
    combined = result.xcom("combine")
    assert combined["instances"] == 4
    assert all(summary == {"rows": 3, "total": 3640.75} for summary in combined["summaries"])
    instances = list(CloudflareWorkflowsHook().list_instances("demo-fan-out"))
    assert len(instances) == 4
    assert sorted(i["id"] for i in instances) == sorted(
        result.xcom("create_instance", map_index=n) for n in range(4)
    )


def test_event_driven_example_is_scheduled_on_the_workflows_completions(airflow_db):
    from tests.conftest import load_dag

    dag = load_dag("example_cfworkflows_event_driven")
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.uri == "cfworkflows://cloudflare_default/demo-pipeline"
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath.endswith("CloudflareWorkflowFinishedInstancesTrigger")
    assert kwargs["workflow_name"] == "demo-pipeline"
    assert kwargs["statuses"] == ["complete"]


def test_approval_example(run_dag, cloudflare_conn):
    answer = Answer(["Approve"], {"note": "paid on time"}, user="carol")

    with Person("example_cfworkflows_approval", [answer]) as person:
        result = run_dag("example_cfworkflows_approval")

    assert result.state == "success", result.task_states()
    instance_id = result.xcom("create_instance")
    [question] = person.questions
    assert question.subject == "Release the payout computed by demo-payout?"
    assert '"payee":"ACME GmbH"' in (question.body or "")  # the step the Workflow ran before waiting
    [event] = [r for r in cloudflare_conn.requests_log() if r["endpoint"] == "send_event"]
    assert event["raw_path"].endswith(f"/demo-payout/instances/{instance_id}/events/payout_approval")
    assert event["body"]["chosen_options"] == ["Approve"]
    assert event["body"]["params_input"] == {"note": "paid on time"}
    assert event["body"]["responded_by_user"]["name"] == "carol"
    details = CloudflareWorkflowsHook().get_instance("demo-payout", instance_id)
    assert details["status"] == "complete"
    assert details["output"] == {"paid": True, "reference": "PAY-0001"}
