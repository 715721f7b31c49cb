"""Both sensors inside real DAG runs (dag.test() on SQLite) against the emulator, in every mode."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook

pytestmark = pytest.mark.integration
MODES = ("poke", "reschedule", "deferrable")


def workflow(emulator, steps, **extra):
    name = f"sens-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "steps": steps, **extra})
    return name


def start(emulator, steps, **extra):
    name = workflow(emulator, steps, **extra)
    instance_id = f"i-{uuid.uuid4().hex[:8]}"
    CloudflareWorkflowsHook().create_instance(name, instance_id=instance_id)
    return name, instance_id


def step_gets(emulator, instance_id):
    return [r for r in emulator.requests_log() if r["raw_path"].endswith(f"/instances/{instance_id}/step")]


class WhenPolled(threading.Thread):
    """Run ``action`` once the sensor has looked at the instance's step (seen in the emulator's log)."""

    def __init__(self, emulator, instance_id, action):
        super().__init__(daemon=True)
        self.emulator, self.instance_id, self.action = emulator, instance_id, action
        self.done = threading.Event()

    def run(self):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if step_gets(self.emulator, self.instance_id):
                self.action()
                self.done.set()
                return
            time.sleep(0.2)


@pytest.mark.parametrize("mode", MODES)
def test_step_completes_while_the_sensor_waits(run_dag, cloudflare_conn, mode):
    name, instance_id = start(
        cloudflare_conn,
        [
            {"name": "warm up", "duration": 600, "output": 1},
            {"name": "load data", "duration": 2, "output": {"rows": 5}},
        ],
    )
    # The step is far off until the sensor has looked once; then ten emulated minutes pass at once.
    jump = WhenPolled(cloudflare_conn, instance_id, lambda: cloudflare_conn.advance(600))
    jump.start()

    result = run_dag(
        f"sensor_step_{mode}", {"workflow_name": name, "instance_id": instance_id, "step_name": "load data"}
    )
    jump.join()

    assert jump.done.is_set()
    assert result.state == "success"
    assert result.xcom("wait") == {
        "workflow_name": name,
        "instance_id": instance_id,
        "step_name": "load data-1",
        "step_type": "step",
        "status": "complete",
        "error": None,
    }
    assert next(r["status"] for r in step_gets(cloudflare_conn, instance_id)) == 404  # not started at first


@pytest.mark.parametrize("mode", MODES)
def test_step_that_errors_after_retries_fails_the_task(run_dag, cloudflare_conn, mode, capsys):
    name, instance_id = start(
        cloudflare_conn,
        [
            {
                "name": "call api",
                "duration": 0.5,
                "fail_attempts": 9,
                "error": {"name": "UpstreamError", "message": "upstream answered 503"},
                "retries": {"limit": 2, "delay": 0.5, "backoff": "constant"},
            }
        ],
    )

    result = run_dag(
        f"sensor_step_{mode}", {"workflow_name": name, "instance_id": instance_id, "step_name": "call api-1"}
    )

    assert result.state == "failed"
    assert result.task_states() == {"wait": "failed"}
    out = capsys.readouterr().out
    assert "UpstreamError: upstream answered 503" in out
    assert "attempt 3: UpstreamError: upstream answered 503" in out


@pytest.mark.parametrize("mode", MODES)
def test_soft_fail_skips_on_an_errored_step(run_dag, cloudflare_conn, mode):
    name, instance_id = start(
        cloudflare_conn,
        [
            {
                "name": "boom",
                "duration": 0.2,
                "fail_attempts": 1,
                "retries": {"limit": 0, "delay": 0, "backoff": "constant"},
            }
        ],
    )
    result = run_dag(
        f"sensor_step_soft_fail_{mode}",
        {"workflow_name": name, "instance_id": instance_id, "step_name": "boom"},
    )
    assert result.task_states() == {"wait": "skipped"}


@pytest.mark.parametrize("mode", MODES)
def test_wait_for_event_step_completed_by_an_event(run_dag, cloudflare_conn, mode):
    name, instance_id = start(
        cloudflare_conn,
        [{"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 300}],
    )

    approve = WhenPolled(
        cloudflare_conn,
        instance_id,
        lambda: CloudflareWorkflowsHook().send_event(name, instance_id, "approval", {"by": "test"}),
    )
    approve.start()
    result = run_dag(
        f"sensor_step_{mode}",
        {
            "workflow_name": name,
            "instance_id": instance_id,
            "step_name": "approval",
            "step_type": "waitForEvent",
        },
    )
    approve.join()

    assert result.state == "success"
    summary = result.xcom("wait")
    assert (summary["step_name"], summary["step_type"], summary["status"]) == (
        "approval-1",
        "waitForEvent",
        "complete",
    )
    events = [r for r in cloudflare_conn.requests_log() if "/events/" in r["raw_path"]]
    assert len(events) == 1


@pytest.mark.parametrize("mode", MODES)
def test_misspelled_step_fails_fast_listing_the_steps(run_dag, cloudflare_conn, mode, capsys):
    name, instance_id = start(cloudflare_conn, [{"name": "load data", "duration": 0.5}])
    cloudflare_conn.advance(2)

    started = time.monotonic()
    result = run_dag(
        f"sensor_step_{mode}", {"workflow_name": name, "instance_id": instance_id, "step_name": "lod data"}
    )

    assert result.task_states() == {"wait": "failed"}
    assert time.monotonic() - started < 60  # not the 90 s timeout
    out = capsys.readouterr().out
    assert "Step 'lod data' never ran" in out
    assert "'load data-1' (step)" in out


@pytest.mark.parametrize("mode", MODES)
def test_instance_terminated_before_the_step(run_dag, cloudflare_conn, mode, capsys):
    name, instance_id = start(
        cloudflare_conn, [{"name": "nap", "type": "sleep", "duration": 600}, {"name": "after", "duration": 1}]
    )
    CloudflareWorkflowsHook().change_instance_status(name, instance_id, "terminate")

    result = run_dag(
        f"sensor_step_{mode}", {"workflow_name": name, "instance_id": instance_id, "step_name": "after"}
    )

    assert result.task_states() == {"wait": "failed"}
    assert "the instance is terminated" in capsys.readouterr().out


@pytest.mark.parametrize("mode", MODES)
def test_429_burst_during_the_wait(run_dag, cloudflare_conn, mode):
    name, instance_id = start(cloudflare_conn, [{"name": "slow", "duration": 3, "output": 1}])
    cloudflare_conn.inject_fault(
        path=f"/instances/{instance_id}", kind="rate_limit", retry_after="1", count=6
    )

    result = run_dag(
        f"sensor_step_{mode}", {"workflow_name": name, "instance_id": instance_id, "step_name": "slow"}
    )

    assert result.state == "success"
    assert result.xcom("wait")["status"] == "complete"
    limited = [r for r in cloudflare_conn.requests_log() if r["fault"] == "rate_limit"]
    assert len(limited) == 6


@pytest.mark.parametrize("mode", MODES)
def test_instance_sensor_complete_and_errored(run_dag, cloudflare_conn, mode, capsys):
    name, ok_id = start(cloudflare_conn, [{"name": "a", "duration": 2}], output={"rows": 42})
    done = run_dag(f"sensor_instance_{mode}", {"workflow_name": name, "instance_id": ok_id})
    assert done.state == "success"
    assert done.xcom("wait") == {
        "workflow_name": name,
        "instance_id": ok_id,
        "status": "complete",
        "error": None,
        "output": {"rows": 42},
    }

    bad_name, bad_id = start(
        cloudflare_conn,
        [
            {
                "name": "b",
                "duration": 0.5,
                "fail_attempts": 1,
                "error": {"name": "Boom", "message": "exploded"},
                "retries": {"limit": 0, "delay": 0, "backoff": "constant"},
            }
        ],
    )
    failed = run_dag(f"sensor_instance_{mode}", {"workflow_name": bad_name, "instance_id": bad_id})
    assert failed.task_states() == {"wait": "failed"}
    out = capsys.readouterr().out
    assert "The instance is errored: Boom: exploded" in out
    assert "step 'b-1' (step) failed: Boom: exploded" in out
