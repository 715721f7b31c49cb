"""Both sensors inside real DAG runs (``dag.test()`` on SQLite) against the emulator, in every mode.

The DAGs (``tests/dags/dag_sensor_workflows.py``) start the instance in an upstream task, then wait.
"""

from __future__ import annotations

import time
import uuid

import pytest

pytestmark = pytest.mark.integration
MODES = ("poke", "reschedule", "deferrable")
RESUMED = "Resumed after deferral"


def workflow(emulator, steps, **extra):
    """A fresh workflow in the emulator; returns the ``dag_run.conf`` to run it under a new instance."""
    name = f"sens-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "steps": steps, **extra})
    return {"workflow_name": name, "instance_id": f"i-{uuid.uuid4().hex[:8]}"}


def requests_to(emulator, instance_id, suffix=""):
    return [
        r
        for r in emulator.requests_log()
        if r["method"] == "GET" and r["raw_path"].endswith(f"/instances/{instance_id}{suffix}")
    ]


def check_deferral(mode, out):
    """Deferrable runs resume from the trigger; the others never defer."""
    assert (RESUMED in out) is (mode == "deferrable")


@pytest.mark.parametrize("mode", MODES)
def test_step_completes_after_a_few_seconds(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(
        cloudflare_conn,
        [{"name": "prepare", "duration": 1}, {"name": "load data", "duration": 2, "output": {"rows": 5}}],
    )

    result = run_dag(f"sensor_step_{mode}", {**conf, "step_name": "load data"})

    assert result.state == "success", result.task_states()
    assert result.xcom("wait") == {
        "workflow_name": conf["workflow_name"],
        "instance_id": conf["instance_id"],
        "step_name": "load data-1",
        "step_type": "step",
        "status": "complete",
        "error": None,
    }
    # One request per look, the instance details: they answered every look (no /step at all).
    assert requests_to(cloudflare_conn, conf["instance_id"], "/step") == []
    looks = requests_to(cloudflare_conn, conf["instance_id"])
    assert len(looks) >= 3  # it waited: several looks
    assert all(look["status"] == 200 for look in looks)
    # The sensor only reads: the one write is the DAG's own create.
    assert [r["method"] for r in cloudflare_conn.requests_log() if r["method"] != "GET"] == ["POST"]
    out = capsys.readouterr().out
    assert (
        f"Step 'load data' of instance {conf['instance_id']!r} of workflow {conf['workflow_name']!r} has not "
        "started yet" in out
    )
    check_deferral(mode, out)


@pytest.mark.parametrize("mode", MODES)
def test_step_that_errors_after_retries_fails_the_task(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(
        cloudflare_conn,
        [
            {
                "name": "call api",
                "duration": 0.3,
                "fail_attempts": 9,
                "error": {"name": "UpstreamError", "message": "upstream answered 503"},
                "retries": {"limit": 2, "delay": 0.3, "backoff": "constant"},
            }
        ],
    )

    result = run_dag(f"sensor_step_{mode}", {**conf, "step_name": "call api-1"})

    assert result.state == "failed"
    assert result.task_states() == {"start": "success", "wait": "failed"}
    out = capsys.readouterr().out
    assert "Step 'call api-1' of instance " in out
    assert "is errored: UpstreamError: upstream answered 503." in out
    for attempt in (1, 2, 3):
        assert f"attempt {attempt}: UpstreamError: upstream answered 503" in out
    check_deferral(mode, out)


@pytest.mark.parametrize("mode", MODES)
def test_soft_fail_skips_on_an_errored_step(run_dag, cloudflare_conn, mode):
    conf = workflow(
        cloudflare_conn,
        [{"name": "boom", "duration": 1, "fail_attempts": 1, "retries": {"limit": 0, "delay": 0}}],
    )
    result = run_dag(f"sensor_step_soft_fail_{mode}", {**conf, "step_name": "boom"})
    assert result.task_states() == {"start": "success", "wait": "skipped"}


@pytest.mark.parametrize("mode", MODES)
def test_wait_for_event_step_completed_by_an_event(run_dag, cloudflare_conn, mode):
    conf = workflow(
        cloudflare_conn,
        [
            {"name": "prepare", "duration": 1},
            {"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 300},
            {"name": "publish", "duration": 0.5},
        ],
    )

    result = run_dag(
        f"sensor_event_{mode}",
        {**conf, "step_name": "approval", "step_type": "waitForEvent", "event_type": "approval"},
    )

    assert result.state == "success", result.task_states()
    ready, done = result.xcom("ready"), result.xcom("done")
    assert (ready["step_name"], ready["step_type"], ready["status"]) == (
        "approval-1",
        "waitForEvent",
        "waiting",
    )
    assert (done["step_name"], done["status"]) == ("approval-1", "complete")
    log = cloudflare_conn.requests_log()
    assert [r["method"] for r in log if "/events/" in r["raw_path"]] == ["POST"]
    # The event was sent only after the Workflow was seen waiting for it.
    first_event = next(i for i, r in enumerate(log) if "/events/" in r["raw_path"])
    details = f"/instances/{conf['instance_id']}"
    assert any(r["raw_path"].endswith(details) and r["status"] == 200 for r in log[:first_event])


@pytest.mark.parametrize("mode", MODES)
def test_misspelled_step_fails_fast_listing_the_steps(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(
        cloudflare_conn,
        [
            {"name": "load data", "duration": 0.5},
            {"name": "approval", "type": "waitForEvent", "event_type": "go", "timeout": 1},
        ],
    )

    started = time.monotonic()
    result = run_dag(f"sensor_step_{mode}", {**conf, "step_name": "lod data"})

    assert result.task_states() == {"start": "success", "wait": "failed"}
    assert time.monotonic() - started < 30  # not the 60 s timeout
    out = capsys.readouterr().out
    assert "Step 'lod data' of instance " in out
    assert "never ran (no step is logged as 'lod data-1'): the instance is" in out
    assert "'load data-1' (step), 'approval-1' (waitForEvent)" in out


@pytest.mark.parametrize("mode", MODES)
def test_instance_terminated_before_the_step(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(
        cloudflare_conn,
        [{"name": "nap", "type": "sleep", "duration": 600}, {"name": "after", "duration": 1}],
    )

    result = run_dag(f"sensor_step_{mode}", {**conf, "step_name": "after", "terminate": True})

    assert result.task_states() == {"start": "success", "wait": "failed"}
    out = capsys.readouterr().out
    assert "never ran (no step is logged as 'after-1'): the instance is terminated" in out


@pytest.mark.parametrize("mode", MODES)
def test_429_burst_during_the_wait(run_dag, cloudflare_conn, mode, capsys):
    conf = workflow(cloudflare_conn, [{"name": "slow", "duration": 2, "output": 1}])
    # More 429s than the hook retries (the connection allows 3), so the sensor or trigger sees them.
    cloudflare_conn.inject_fault(
        path=f"/instances/{conf['instance_id']}", method="GET", kind="rate_limit", retry_after="0.2", count=6
    )

    result = run_dag(f"sensor_step_{mode}", {**conf, "step_name": "slow"})

    assert result.state == "success", result.task_states()
    assert result.xcom("wait")["status"] == "complete"
    limited = [r for r in cloudflare_conn.requests_log() if r["fault"] == "rate_limit"]
    assert len(limited) == 6
    assert "Rate limited by Cloudflare" in capsys.readouterr().out


@pytest.mark.parametrize("mode", MODES)
def test_instance_sensor_complete_and_errored(run_dag, cloudflare_conn, mode, capsys):
    ok = workflow(cloudflare_conn, [{"name": "a", "duration": 1.5}], output={"rows": 42})
    done = run_dag(f"sensor_instance_{mode}", ok)
    assert done.state == "success", done.task_states()
    assert done.xcom("wait") == {
        "workflow_name": ok["workflow_name"],
        "instance_id": ok["instance_id"],
        "status": "complete",
        "error": None,
        "output": {"rows": 42},
    }
    # The extra link, also after a deferral (the worker that resumed the task did not push the URL).
    assert done.xcom("wait", "_link_CloudflareWorkflowInstanceLink").endswith(
        f"/workers/workflows/{ok['workflow_name']}/instance/{ok['instance_id']}"
    )
    check_deferral(mode, capsys.readouterr().out)

    bad = workflow(
        cloudflare_conn,
        [
            {
                "name": "b",
                "duration": 1,
                "fail_attempts": 2,
                "error": {"name": "Boom", "message": "exploded"},
                "retries": {"limit": 1, "delay": 0.2, "backoff": "constant"},
            }
        ],
    )
    failed = run_dag(f"sensor_instance_{mode}", bad)
    assert failed.task_states() == {"start": "success", "wait": "failed"}
    out = capsys.readouterr().out
    assert "The instance is errored: Boom: exploded" in out
    assert "step 'b-1' (step) failed: Boom: exploded (2 failed attempt(s))" in out
