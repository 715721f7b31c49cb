"""The chaining operators in real DAG runs against the emulator."""

from __future__ import annotations

import uuid

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

pytestmark = pytest.mark.integration


def workflow(emulator, steps, **extra):
    name = f"chain-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "steps": steps, **extra})
    return name


def test_retry_after_a_crash_finds_the_instance_it_created(run_dag, cloudflare_conn):
    name = workflow(cloudflare_conn, [{"name": "work", "duration": 1}])

    result = run_dag("chaining_create_crash_retry", {"workflow_name": name})

    assert result.state == "success"
    instances = list(CloudflareWorkflowsHook().list_instances(name))
    assert len(instances) == 1  # the retry did not start a second instance
    assert result.xcom("create_instance") == instances[0]["id"]
    creates = [
        r
        for r in cloudflare_conn.requests_log()
        if r["method"] == "POST" and r["raw_path"].endswith("/instances")
    ]
    # The retry knew its instance from the task state store: no second create (without the store it
    # would get "already exists" and take it as success: tests/operators/test_side_effects_once.py).
    assert [r["status"] for r in creates] == [200]


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_create_and_wait_for_completion(run_dag, cloudflare_conn, mode):
    ok = workflow(cloudflare_conn, [{"name": "work", "duration": 2}], output={"ok": True})
    result = run_dag(f"chaining_create_and_wait_{mode}", {"workflow_name": ok})
    assert result.state == "success"
    instance_id = result.xcom("create_instance")
    assert CloudflareWorkflowsHook().get_instance(ok, instance_id, simple=True)["status"] == "complete"


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_create_and_wait_fails_with_the_remote_error(run_dag, cloudflare_conn, mode, capsys):
    bad = workflow(
        cloudflare_conn,
        [
            {
                "name": "work",
                "duration": 1,
                "fail_attempts": 1,
                "error": {"name": "Boom", "message": "exploded"},
                "retries": {"limit": 0, "delay": 0, "backoff": "constant"},
            }
        ],
    )
    result = run_dag(f"chaining_create_and_wait_{mode}", {"workflow_name": bad})
    assert result.task_states() == {"create_instance": "failed"}
    assert "Boom: exploded" in capsys.readouterr().out


def test_batch_create_and_terminate(run_dag, cloudflare_conn):
    name = workflow(cloudflare_conn, [{"name": "nap", "type": "sleep", "duration": 600}])

    result = run_dag("chaining_batch_and_terminate", {"workflow_name": name})

    assert result.state == "success"
    ids = result.xcom("create_instances")
    assert len(ids) == 4
    assert ids[3] == "explicit-id"
    hook = CloudflareWorkflowsHook()
    assert sorted(i["id"] for i in hook.list_instances(name)) == sorted(ids)
    assert hook.get_instance(name, "explicit-id", simple=True)["status"] == "terminated"
