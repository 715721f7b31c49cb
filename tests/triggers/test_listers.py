"""Many waits on one Workflow in one event loop, against the emulator on 127.0.0.1: list pages replace
the per-instance looks (a step wait still makes its first look), every completion is noticed within two
listing rounds with no 429 under a small quota, and a listing that misses instances, or lags behind what
the instances' own looks show, makes the Workflow fall back to per-instance looks, logged once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_cfworkflows.triggers import listers, watchers
from airflow_provider_cfworkflows.triggers.turns import MAX_LOOKS_IN_FLIGHT
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowInstanceTrigger,
    CloudflareWorkflowStepTrigger,
)
from tests.helpers import FLEET_WORKFLOW, create_fleet_instances, let_fleet_go

pytestmark = pytest.mark.integration
INTERVAL = 1.0
FLEET = listers.LISTING_MIN_WATCHERS + 10
DEADLINE = 90.0  # seconds any condition below may take on a loaded machine (they are met far sooner)


def instance_trigger(instance_id: str) -> CloudflareWorkflowInstanceTrigger:
    return CloudflareWorkflowInstanceTrigger(
        workflow_name=FLEET_WORKFLOW,
        instance_id=instance_id,
        success_states=["complete"],
        failure_states=["errored", "terminated"],
        end_time=time.time() + 300,
        poll_interval=INTERVAL,
    )


def step_trigger(instance_id: str) -> CloudflareWorkflowStepTrigger:
    return CloudflareWorkflowStepTrigger(
        workflow_name=FLEET_WORKFLOW,
        instance_id=instance_id,
        step_name="work",
        success_states=["complete"],
        failure_states=["errored"],
        end_time=time.time() + 300,
        poll_interval=INTERVAL,
    )


class Waits:
    """Triggers running in tasks of this loop, with each event and when it came."""

    def __init__(self) -> None:
        self.events: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self.tasks: list[asyncio.Task[None]] = []

    def start(self, kind: str, trigger: Any) -> None:
        self.tasks.append(asyncio.create_task(self._wait(kind, trigger)))

    async def _wait(self, kind: str, trigger: Any) -> None:
        async for event in trigger.run():
            self.events[(kind, trigger.instance_id)] = (event.payload, time.time())

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        assert watchers.watchers() == {}
        assert watchers.listers() == {}


async def until(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:.0f} s: {what}")
        await asyncio.sleep(0.05)
    return value


def requests(emulator: Any, since: float, endpoint: str) -> list[dict[str, Any]]:
    return [entry for entry in emulator.requests_log(since=since) if entry["endpoint"] == endpoint]


def round_starts(emulator: Any, since: float) -> list[float]:
    """When each listing round started: its first page is the one of queued instances."""
    return [e["time"] for e in requests(emulator, since, "list_instances") if "status=queued" in e["query"]]


def lister() -> listers.WorkflowLister:
    return next(iter(watchers.listers().values()))


async def test_a_fleet_on_one_workflow_is_listed_and_each_completion_seen_within_two_rounds(cloudflare_conn):
    emulator = cloudflare_conn
    ids = create_fleet_instances(emulator, "gated", [f"gated-{n}" for n in range(FLEET)])
    emulator.set_rate_limit(quota=60, window=5)  # 12 a second: a look at each every interval needs 110
    started = time.time()
    waits = Waits()
    for instance_id in ids:
        waits.start("instance", instance_trigger(instance_id))
    for instance_id in ids[:10]:  # step waits: their first look is their own
        waits.start("step", step_trigger(instance_id))
    await until("a listing round", lambda: watchers.listers() and lister().last_round)

    go = ids[:5] + ids[50:55]
    let_go_at = time.time()
    let_fleet_go(emulator, go)
    expected = {("instance", i) for i in go} | {("step", i) for i in ids[:5]}
    await until("the 15 events", lambda: set(waits.events) >= expected)
    last = max(received for _event, received in waits.events.values())
    await until("two more rounds", lambda: len([t for t in round_starts(emulator, last)]) >= 2)
    await waits.stop()
    elapsed = time.time() - started

    assert set(waits.events) == expected
    assert {event["status"] for event, _received in waits.events.values()} == {"success"}
    rounds = round_starts(emulator, started)
    for key, (_event, received) in waits.events.items():
        assert len([t for t in rounds if let_go_at < t < received]) <= 2, key
    assert [e for e in emulator.requests_log(since=started) if e["status"] == 429] == []
    # List pages replace the looks: the instances that did not change were looked at only by the first
    # looks in flight before listing began, a step wait's first look, and the safety net.
    looks = Counter(e["raw_path"].rsplit("/", 1)[-1] for e in requests(emulator, started, "get_instance"))
    unchanged = sum(count for instance_id, count in looks.items() if instance_id not in go)
    safety_net_rounds = int(elapsed // (listers.SAFETY_NET_INTERVALS * INTERVAL))
    assert unchanged <= MAX_LOOKS_IN_FLIGHT + 5 + safety_net_rounds * FLEET, looks
    assert sum(looks[i] for i in go) <= 3 * len(go), looks
    pages = requests(emulator, started, "list_instances")
    # Each round but the last (cut by the stop) lists 4 statuses, the waiting ones on 2 pages until the
    # completions leave 100 waiting: which rounds come after them depends on this machine's speed.
    assert len(pages) >= 4 * (len(rounds) - 1) + 1
    assert len(pages) + sum(looks.values()) < FLEET * len(rounds) / 4


async def test_a_listing_that_misses_instances_falls_back_to_looking_at_each(cloudflare_conn, caplog):
    emulator = cloudflare_conn
    emulator.set_options(list_omit_every=9)  # about one instance in 9 never shows in a listing
    ids = create_fleet_instances(emulator, "gated", [f"gated-{n}" for n in range(FLEET)])
    caplog.set_level(logging.INFO, logger=listers.__name__)
    waits = Waits()
    for instance_id in ids:
        waits.start("instance", instance_trigger(instance_id))

    fell_back = await until(
        "the fallback", lambda: [r for r in caplog.records if "cannot be trusted" in r.getMessage()]
    )
    assert len(fell_back) == 1
    assert "was missing from 3 listings in a row" in fell_back[0].getMessage()
    after = time.time()
    await until(
        "a look at each instance after the fallback",
        lambda: (
            {e["raw_path"].rsplit("/", 1)[-1] for e in requests(emulator, after, "get_instance")} >= set(ids)
        ),
    )
    let_fleet_go(emulator, ids[:9])  # one of them is never listed
    await until("the 9 events", lambda: len(waits.events) >= 9)
    pages_after = len(requests(emulator, after, "list_instances"))
    await waits.stop()

    assert sorted(instance_id for _kind, instance_id in waits.events) == sorted(ids[:9])
    assert {event["status"] for event, _received in waits.events.values()} == {"success"}
    assert pages_after <= 4 * 2  # at most a round that was under way; none after it
    assert len([r for r in caplog.records if "cannot be trusted" in r.getMessage()]) == 1


async def test_a_listing_behind_what_the_looks_show_falls_back(real_time_conn, caplog, monkeypatch):
    emulator = real_time_conn
    monkeypatch.setattr(listers, "STALE_MARGIN", listers.STALE_MARGIN / 60)  # a second, not a minute
    emulator.set_options(list_lag=300)  # listings show each instance as it was 5 minutes ago
    ids = create_fleet_instances(emulator, "gated", [f"gated-{n}" for n in range(FLEET)])
    caplog.set_level(logging.INFO, logger=listers.__name__)
    waits = Waits()
    for instance_id in ids:
        waits.start("instance", instance_trigger(instance_id))
    await until("a listing round", lambda: watchers.listers() and lister().last_round)
    # Test data, not synchronisation: the completions must come more than the timestamps' tolerance
    # after the creations that the lagging listing still shows.
    created = time.time()
    await until("the instances to be 2 s old", lambda: time.time() > created + 2)

    let_fleet_go(emulator, ids[:3])
    for instance_id in ids[:3]:  # new waits: their own first looks see the instances complete
        waits.start("step", step_trigger(instance_id))
    fell_back = await until(
        "the fallback", lambda: [r for r in caplog.records if "cannot be trusted" in r.getMessage()]
    )
    # The instance waits notice the completions by their own looks, not 5 minutes later.
    await until("the 3 instance events", lambda: len([k for k in waits.events if k[0] == "instance"]) >= 3)
    await waits.stop()

    assert "before a change its own look showed" in fell_back[0].getMessage()
    assert sorted(waits.events) == sorted([("instance", i) for i in ids[:3]] + [("step", i) for i in ids[:3]])
    assert {event["status"] for event, _received in waits.events.values()} == {"success"}
