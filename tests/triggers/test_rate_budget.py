"""Waits inside Cloudflare's budget, against the real emulator enforcing it on 127.0.0.1: triggers (one
event loop) and sync sensors (threads) of one process share the token's rate limiter, pace by the
``Ratelimit`` headers under a quota far smaller than the default with no 429, and after a 429 every
caller waits until ``Retry-After`` while no wait fails because of it."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pytest

from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.triggers import watchers
from airflow_provider_cfworkflows.triggers.workflows import CloudflareWorkflowStepTrigger

pytestmark = pytest.mark.integration
# Far more looks than the quotas below allow: only pacing keeps the waits inside them.
INTERVAL = 0.05


def start_instances(emulator, count, ends):
    """``count`` instances, each of a workflow whose steps s0, s1 end at ``ends[i]`` s (and half of it)."""
    targets = []
    with emulator.api_client() as client:
        for index in range(count):
            name = f"budget-{uuid.uuid4().hex[:8]}"
            half = round(ends[index] / 2, 2)
            steps = [{"name": "s0", "duration": half}, {"name": "s1", "duration": half}]
            emulator.put_workflow(
                {"name": name, "class_name": "Budget", "script_name": "budget", "steps": steps}
            )
            instance_id = f"i-{uuid.uuid4().hex[:8]}"
            client.post(f"/{name}/instances", json={"instance_id": instance_id}).raise_for_status()
            targets.append((name, instance_id))
    return targets


def triggers_for(targets, seconds=30.0):
    return [
        CloudflareWorkflowStepTrigger(
            workflow_name=workflow,
            instance_id=instance_id,
            step_name=step,
            success_states=["complete"],
            failure_states=["errored"],
            end_time=time.time() + seconds,
            poll_interval=INTERVAL,
        )
        for workflow, instance_id in targets
        for step in ("s0", "s1", "s1")
    ]


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


class SyncPokes:
    """Step sensors poking in threads (a worker's sync waits), in this same process."""

    def __init__(self, targets, seconds=30.0):
        self.outcomes: list[object] = []
        self._deadline = time.time() + seconds
        self._threads = [threading.Thread(target=self._wait, args=target) for target in targets]

    def _wait(self, workflow, instance_id):
        sensor = CloudflareWorkflowStepSensor(
            task_id=f"w{uuid.uuid4().hex[:6]}",
            workflow_name=workflow,
            instance_id=instance_id,
            step_name="s1",
        )
        try:
            while time.time() < self._deadline:
                if sensor.poke({}):
                    self.outcomes.append("success")
                    return
                time.sleep(INTERVAL)
            self.outcomes.append("timeout")
        except Exception as error:  # recorded: the test asserts there is none
            self.outcomes.append(error)

    def __enter__(self):
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc_info):
        for thread in self._threads:
            thread.join(timeout=60)


def token_requests(emulator, since):
    return [
        entry for entry in emulator.requests_log(since=since) if entry["credential"] == emulator.token_label
    ]


async def test_pacing_by_the_headers_keeps_a_small_quota_with_no_429(cloudflare_conn):
    emulator = cloudflare_conn
    quota, window = 16, 2  # far below the default (1,200 / 300 s): only the headers say so
    emulator.set_rate_limit(quota=quota, window=window)
    targets = start_instances(emulator, 5, [1.0, 1.5, 2.0, 2.5, 3.0])
    started = time.time()
    with SyncPokes(targets[:2]) as pokes:
        events = await asyncio.gather(*(first_event(trigger) for trigger in triggers_for(targets)))
    assert {event["status"] for event in events} == {"success"}
    assert pokes.outcomes == ["success", "success"]
    sent = token_requests(emulator, started)
    assert [entry for entry in sent if entry["status"] == 429] == []
    assert emulator.rate_limit_status()["credentials"][emulator.token_label]["limited"] == 0
    assert watchers.watchers() == {}


async def test_a_429_pauses_every_caller_until_retry_after_and_no_wait_fails(cloudflare_conn):
    emulator = cloudflare_conn
    emulator.set_rate_limit(quota=200, window=3)
    targets = start_instances(emulator, 3, [1.5, 2.0, 2.5])
    started = time.time()
    with SyncPokes(targets[:1]) as pokes:
        waits = asyncio.gather(*(first_event(trigger) for trigger in triggers_for(targets)))

        async def spend_the_rest_of_the_window():
            # Someone else (the dashboard) spends the token's budget once the waits are under way.
            deadline = time.monotonic() + 10
            while len(token_requests(emulator, started)) < 5:
                assert time.monotonic() < deadline, "the waits sent nothing"
                await asyncio.sleep(0.01)
            status = emulator.rate_limit_status()["credentials"][emulator.token_label]
            emulator.consume_rate_limit(status["remaining"])
            return time.time(), status["reset_in"]

        (spent_at, reset_in), events = await asyncio.gather(spend_the_rest_of_the_window(), waits)
    assert {event["status"] for event in events} == {"success"}
    assert pokes.outcomes == ["success"]
    sent = token_requests(emulator, started)
    limited = [entry["time"] for entry in sent if entry["status"] == 429]
    assert limited, "the budget was spent: the next request gets a 429"
    # Only requests already on their way got the 429 (one per watcher and poking thread at most);
    # then every caller waited for Retry-After: nothing was sent into the lockout.
    assert len(limited) <= len(targets) + 1
    assert max(limited) - min(limited) < 0.5
    after = [entry["time"] for entry in sent if entry["time"] > max(limited)]
    assert after, "the waits went on after the pause"
    assert min(after) >= spent_at + reset_in - 1.0  # not before the window (Retry-After) ended


async def test_a_hostile_429_pauses_the_token_no_longer_than_the_window(cloudflare_conn):
    emulator = cloudflare_conn
    window = 3
    emulator.set_rate_limit(quota=1000, window=window)  # answers announce w=3: pauses end by then
    targets = start_instances(emulator, 3, [0.2, 0.2, 0.2])
    _workflow, instance_id = targets[0]
    # One answer asks every caller of the token to wait a day (Retry-After: 86400).
    emulator.inject_fault(kind="rate_limit", path=f"/{instance_id}$", count=1, retry_after="86400")
    started = time.time()
    events = await asyncio.gather(*(first_event(trigger) for trigger in triggers_for(targets, seconds=60)))
    assert {event["status"] for event in events} == {"success"}  # every trigger kept its looks
    sent = token_requests(emulator, started)
    limited = [entry["time"] for entry in sent if entry["status"] == 429]
    assert len(limited) == 1
    after = [entry["time"] for entry in sent if entry["time"] > limited[0]]
    assert after, "the token was used again after the 429"
    # The pause ends with the window (3 s, plus the reset margin and jitter), not in a day; generous
    # slack for a loaded machine.
    assert min(after) - limited[0] < window + 10
