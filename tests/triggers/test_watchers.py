"""Coalesced polling against the real emulator on 127.0.0.1: triggers of one event loop that wait on one
instance share one look per interval, a look at a step that has not finished costs one request (sync
poke and trigger alike), a cancelled or finished trigger leaves the registry empty, and between looks
a watcher is no task of its own."""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from unittest import mock

import httpx
import pytest

from airflow_provider_cfworkflows.sensors.workflows import CloudflareWorkflowStepSensor
from airflow_provider_cfworkflows.triggers import watchers
from airflow_provider_cfworkflows.triggers.turns import MAX_LOOKS_IN_FLIGHT
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)
from tests.fakes import ClosingHook

# Seconds between looks: short, so the tests are quick; long enough to tell one look per interval from
# one per trigger.
INTERVAL = 0.25


def put_workflow(emulator, steps):
    name = f"watch-{uuid.uuid4().hex[:8]}"
    emulator.put_workflow({"name": name, "class_name": "Watched", "script_name": "watched", "steps": steps})
    return name


def create_instance(emulator, workflow):
    instance_id = f"i-{uuid.uuid4().hex[:8]}"
    with emulator.api_client() as client:
        client.post(f"/{workflow}/instances", json={"instance_id": instance_id}).raise_for_status()
    return instance_id


def common(workflow, instance_id, seconds=30.0, poll_interval=INTERVAL):
    return {
        "workflow_name": workflow,
        "instance_id": instance_id,
        "end_time": time.time() + seconds,
        "poll_interval": poll_interval,
    }


def step_trigger(workflow, instance_id, step_name, **kwargs):
    return CloudflareWorkflowStepTrigger(
        **common(workflow, instance_id, **kwargs),
        step_name=step_name,
        success_states=["complete"],
        failure_states=["errored"],
    )


def instance_trigger(workflow, instance_id, **kwargs):
    return CloudflareWorkflowInstanceTrigger(
        **common(workflow, instance_id, **kwargs),
        success_states=["complete"],
        failure_states=["errored", "terminated"],
    )


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def api_requests(emulator, since):
    return [entry for entry in emulator.requests_log(since=since) if entry["endpoint"] is not None]


async def until(condition, seconds=10.0):
    """Wait (yielding to the loop) until ``condition()`` holds; fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_triggers_on_one_instance_share_one_request_per_interval(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "a", "duration": 1}, {"name": "b", "duration": 1}])
    instance_id = create_instance(emulator, workflow)
    started = time.time()
    triggers = [
        *(step_trigger(workflow, instance_id, "a") for _ in range(6)),
        *(step_trigger(workflow, instance_id, "b", poll_interval=INTERVAL * 4) for _ in range(4)),
        *(instance_trigger(workflow, instance_id) for _ in range(2)),
    ]
    events = await asyncio.gather(*(first_event(trigger) for trigger in triggers))
    elapsed = time.time() - started

    assert [(event["status"], event.get("step_name")) for event in events] == [
        *[("success", "a-1")] * 6,
        *[("success", "b-1")] * 4,
        *[("success", None)] * 2,
    ]
    assert (
        events[0]["message"]
        == f"Step 'a-1' of instance {instance_id!r} of workflow {workflow!r} is complete."
    )
    assert watchers.watchers() == {}
    sent = api_requests(emulator, started)
    # Every request is one shared look at the details (full: step waits are among the subscribers);
    # the details answered every step wait, so no /step at all.
    assert {(entry["endpoint"], "simple=true" in (entry["query"] or "")) for entry in sent} == {
        ("get_instance", False)
    }
    times = sorted(entry["time"] for entry in sent)
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert min(gaps) >= INTERVAL * 0.8, gaps  # the shortest interval among the subscribers, not less
    assert len(sent) <= elapsed / INTERVAL + 2  # one per interval, not one per trigger per interval


async def test_a_late_subscriber_gets_the_latest_look_at_once(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 60}])
    instance_id = create_instance(emulator, workflow)
    first = asyncio.create_task(first_event(step_trigger(workflow, instance_id, "slow")))
    await until(lambda: watchers.watchers() and next(iter(watchers.watchers().values())).looks >= 1)
    watcher = next(iter(watchers.watchers().values()))
    await until(lambda: watcher.latest is not None)
    looks = watcher.looks
    # Fresher than its interval: no look of its own; it times out having seen that look.
    late = await first_event(step_trigger(workflow, instance_id, "slow", seconds=0.05, poll_interval=60))
    assert late["status"] == "timeout"
    assert "last seen: Step 'slow-1' of instance" in late["message"]
    assert late["message"].endswith("is running; still waiting.")
    assert watcher.looks <= looks + 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert watchers.watchers() == {}


async def test_cancellation_leaves_the_registry_empty_and_stops_looking(cloudflare_conn, monkeypatch):
    emulator = cloudflare_conn
    closed: list[httpx.AsyncClient] = []
    real_aclose = httpx.AsyncClient.aclose

    async def recording_aclose(client: httpx.AsyncClient) -> None:
        closed.append(client)
        await real_aclose(client)

    monkeypatch.setattr(httpx.AsyncClient, "aclose", recording_aclose)
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 60}])
    instances = [create_instance(emulator, workflow) for _ in range(3)]
    tasks = [
        asyncio.create_task(first_event(step_trigger(workflow, instance_id, "slow")))
        for instance_id in instances
        for _ in range(4)
    ]
    await until(lambda: len(watchers.watchers()) == 3)
    running = list(watchers.watchers().values())
    assert len(watchers.shared_hooks()) == 1  # one hook (one client) for the connection
    assert len({id(watcher.hook) for watcher in running}) == 1
    await until(lambda: all(watcher.looks >= 2 for watcher in running))
    assert closed == []
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert watchers.watchers() == {}
    assert all(watcher.stopped for watcher in running)
    # A look in flight is cancelled; the last one to end releases the hook, which closes its HTTP client.
    await until(lambda: watchers.shared_hooks() == {} and len(closed) == 1)
    stopped = time.time()
    sent_before = len(api_requests(emulator, 0))
    # A new trigger on another instance looks (so time passes in the loop); the stopped watchers do not.
    other = create_instance(emulator, workflow)
    event = await first_event(step_trigger(workflow, other, "slow", seconds=INTERVAL * 3))
    assert event["status"] == "timeout"
    later = [entry["raw_path"].rsplit("/", 1)[-1] for entry in api_requests(emulator, stopped)]
    # A look already on the wire when its task was cancelled may reach the server after `stopped`
    # (at most one per watcher); a watcher still looking would have made one per interval since.
    assert all(later.count(instance_id) <= 1 for instance_id in instances), later
    assert len(api_requests(emulator, 0)) > sent_before


async def test_a_look_at_a_step_not_finished_costs_one_request_in_the_trigger(cloudflare_conn, capsys):
    emulator = cloudflare_conn
    workflow = put_workflow(
        emulator,
        [
            {
                "name": "flaky",
                "duration": 0.1,
                "fail_attempts": 50,
                "retries": {"limit": 60, "delay": 0.1, "backoff": "constant"},
                "error": {"name": "Error", "message": "upstream 503"},
            }
        ],
    )
    instance_id = create_instance(emulator, workflow)
    trigger = step_trigger(workflow, instance_id, "flaky", seconds=INTERVAL * 6)
    started = time.time()
    event = await first_event(trigger)
    assert event["status"] == "timeout"
    assert "retrying after a failed attempt: Error: upstream 503" in event["message"]
    sent = api_requests(emulator, started)
    assert [entry["endpoint"] for entry in sent] == ["get_instance"] * len(sent)
    assert 2 <= len(sent) <= 8
    # Logged once (each change once), as a warning: the failed attempt's error, read from the details.
    logged = [line for line in capsys.readouterr().out.splitlines() if "retrying after a failed" in line]
    assert len(logged) == 1
    assert "warning" in logged[0]


def test_a_look_at_a_step_not_finished_costs_one_request_in_the_sync_sensor(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 60}, {"name": "later", "duration": 1}])
    instance_id = create_instance(emulator, workflow)
    context = {"ti": mock.MagicMock()}
    for step_name in ("slow", "later", "not a step"):  # running, not started, unknown (instance running)
        sensor = CloudflareWorkflowStepSensor(
            task_id=f"s{uuid.uuid4().hex[:6]}",
            workflow_name=workflow,
            instance_id=instance_id,
            step_name=step_name,
        )
        started = time.time()
        assert sensor.poke(context) is False
        sent = api_requests(emulator, started)
        assert [(entry["endpoint"], "simple=true" in (entry["query"] or "")) for entry in sent] == [
            ("get_instance", False)
        ]


async def test_one_hook_per_connection_closed_after_its_last_user_and_retired_on_auth_errors(monkeypatch):
    monkeypatch.setattr(watchers, "CloudflareWorkflowsHook", ClosingHook)
    hooks = watchers.SharedHooks()
    first, second, other = hooks.acquire("a"), hooks.acquire("a"), hooks.acquire("b")
    assert first is second
    assert first is not other
    hooks.release(first)
    await asyncio.sleep(0)
    assert not first.hook.closed  # still used
    hooks.retire(second)  # e.g. an authentication error: the token may have been rotated
    fresh = hooks.acquire("a")
    assert fresh is not second  # new users get a new hook, which reads the connection again
    hooks.release(second)
    await until(lambda: second.hook.closed)
    hooks.release(fresh)
    hooks.release(other)
    assert hooks.by_connection == {}
    await until(lambda: all(shared.hook.closed for shared in (first, fresh, other)))


async def test_when_the_budget_binds_the_instances_are_looked_at_in_turn(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 600}])
    instances = [create_instance(emulator, workflow) for _ in range(20)]
    emulator.set_rate_limit(quota=40, window=2)  # 19 looks a second for 20 instances polled every 0.05 s
    started = time.time()
    tasks = [
        asyncio.create_task(first_event(step_trigger(workflow, instance_id, "slow", poll_interval=0.05)))
        for instance_id in instances
    ]

    def looks():
        return [
            (entry["time"], entry["raw_path"].rsplit("/", 1)[-1])
            for entry in api_requests(emulator, started)
            if entry["endpoint"] == "get_instance"
        ]

    deadline = time.monotonic() + 60
    while min(Counter(instance for _at, instance in looks()).get(i, 0) for i in instances) < 3:
        assert time.monotonic() < deadline, "the instances did not get three looks each"
        await asyncio.sleep(0.2)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert [entry for entry in api_requests(emulator, started) if entry["status"] == 429] == []
    # No instance looked at again while another still waited for as many looks: at most the looks in
    # flight together may reach the emulator out of turn.
    counts = dict.fromkeys(instances, 0)
    for _at, instance in sorted(looks()):
        behind = sum(1 for other, count in counts.items() if other != instance and count < counts[instance])
        assert behind <= MAX_LOOKS_IN_FLIGHT, (instance, counts)
        counts[instance] += 1


async def test_between_looks_a_watcher_is_no_task_and_a_trigger_waits_on_one_future(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 600}])
    instances = [create_instance(emulator, workflow) for _ in range(5)]
    triggers = [
        asyncio.create_task(first_event(step_trigger(workflow, instance_id, "slow", poll_interval=60)))
        for instance_id in instances
        for _ in range(2)
    ]
    await until(
        lambda: len(watchers.watchers()) == 5 and all(w.looks >= 1 for w in watchers.watchers().values())
    )

    def looks_in_flight():
        return [task for task in asyncio.all_tasks() if task.get_name().startswith("cloudflare-workflows-")]

    await until(lambda: not looks_in_flight())
    # Until the next look (a minute away) the only tasks are the triggers' own and this test's: the five
    # watchers wait in the connection's alarms, the triggers for their subscription's future.
    assert asyncio.all_tasks() == {*triggers, asyncio.current_task()}
    for task in triggers:
        task.cancel()
    await asyncio.gather(*triggers, return_exceptions=True)
    assert watchers.watchers() == {}


async def test_a_look_cancelled_before_it_started_gives_its_turn_and_its_hook_back(cloudflare_conn):
    emulator = cloudflare_conn
    workflow = put_workflow(emulator, [{"name": "slow", "duration": 600}])
    instances = [create_instance(emulator, workflow) for _ in range(MAX_LOOKS_IN_FLIGHT + 1)]
    kept = asyncio.create_task(first_event(step_trigger(workflow, instances[0], "slow", poll_interval=60)))
    await until(lambda: [watcher.looks for watcher in watchers.watchers().values()] == [1])
    for instance_id in instances[1:]:  # as many as there are turns
        key = watchers.WatchKey("cloudflare_default", None, workflow, instance_id)
        with watchers.watch(key, poll_interval=INTERVAL, full=True, deadline=time.time() + 30):
            pass  # given a turn at once, and gone before its look could start
    started = time.time()
    event = await first_event(step_trigger(workflow, instances[1], "slow", seconds=INTERVAL * 4))
    assert event["status"] == "timeout"
    looked = [entry for entry in api_requests(emulator, started) if instances[1] in entry["raw_path"]]
    assert len(looked) >= 2  # the turns came back: it looked, once per interval
    kept.cancel()
    await asyncio.gather(kept, return_exceptions=True)
    await until(lambda: watchers.shared_hooks() == {})
