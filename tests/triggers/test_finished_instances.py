"""The finished-instances trigger in an asyncio loop against the emulator, with a fleet of 40 open and
250 finished instances: each instance completing while it runs is reported once within two looks, never
an older or an errored one, at a cost independent of the fleet; a new trigger with the same arguments
reports what finished while none ran and repeats nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from airflow_provider_cfworkflows.instance_changes import Memory
from airflow_provider_cfworkflows.triggers.workflows import (
    CloudflareWorkflowFinishedInstancesTrigger,
    FinishedInstanceEvent,
)
from tests.fakes import FakeAssetStateStore
from tests.helpers import ACCOUNT_ID, FLEET_WORKFLOW, create_fleet_instances, let_fleet_go

pytestmark = pytest.mark.integration
INTERVAL = 2.0
DEADLINE = 90.0  # seconds any condition below may take on a loaded machine (they are met far sooner)


def statuses(emulator: Any) -> dict[str, str]:
    with emulator.api_client() as client:
        items, cursor = [], None
        while True:
            params = {"per_page": 100, **({"cursor": cursor} if cursor else {})}
            body = client.get(f"/{FLEET_WORKFLOW}/instances", params=params).json()
            items += body["result"]
            cursor = body["result_info"].get("cursor")
            if not cursor:
                return {item["id"]: item["status"] for item in items}


def look_times(emulator: Any, since: float) -> list[float]:
    """When each look started: its first listing is the one of queued instances."""
    return [
        entry["time"]
        for entry in emulator.requests_log(since)
        if entry["endpoint"] == "list_instances" and "status=queued" in entry["query"]
    ]


async def until(what: str, condition: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + DEADLINE
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {DEADLINE:.0f} s: {what}")
        await asyncio.sleep(0.1)
    return value


class Watch:
    """A trigger's run() in a task of this loop; the events it yields, with when each came."""

    def __init__(self, trigger: CloudflareWorkflowFinishedInstancesTrigger) -> None:
        self.trigger = trigger
        self.events: list[tuple[FinishedInstanceEvent, float]] = []
        self.task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.trigger.run():
            self.events.append((FinishedInstanceEvent(**event.payload), time.time()))

    def ids(self) -> list[str]:
        return [event.instance_id for event, _ in self.events]

    async def stop(self) -> None:
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task


def new_trigger(store: FakeAssetStateStore) -> CloudflareWorkflowFinishedInstancesTrigger:
    trigger = CloudflareWorkflowFinishedInstancesTrigger(workflow_name=FLEET_WORKFLOW, poll_interval=INTERVAL)
    trigger.asset_state_store = store  # as the triggerer injects it for an asset watcher
    return trigger


async def test_fleet_completions_reported_once_cheaply_and_across_a_restart(real_time_conn: Any) -> None:
    emulator = real_time_conn
    create_fleet_instances(emulator, "quick", [f"old-{n}" for n in range(240)])
    create_fleet_instances(emulator, "quick_fail", [f"old-failed-{n}" for n in range(10)])
    gated = create_fleet_instances(emulator, "gated", [f"gated-{n}" for n in range(34)])
    failing = create_fleet_instances(emulator, "gated_fail", [f"gated-failing-{n}" for n in range(6)])
    before = statuses(emulator)
    assert sum(s in ("complete", "errored") for s in before.values()) == 250
    assert sum(s == "waiting" for s in before.values()) == 40

    store = FakeAssetStateStore()
    started = time.time()
    watch = Watch(new_trigger(store))
    await until("the first look to save the memory", lambda: store.writes)

    changed = time.time()
    let_fleet_go(emulator, gated[:5] + failing[:2])
    new = create_fleet_instances(emulator, "quick", ["new-1", "new-2"])
    expected = sorted(gated[:5] + new)
    await until("the 7 completions to be reported", lambda: len(watch.events) >= len(expected))
    last = watch.events[-1][1]
    await until("two more looks", lambda: len([t for t in look_times(emulator, last) if t > last]) >= 2)
    await watch.stop()
    stopped = time.time()

    assert sorted(watch.ids()) == expected  # each once; no old, errored or still-open instance
    looks = look_times(emulator, started)
    for event, received in watch.events:
        assert event.status == "complete"
        assert event.output == {"kind": "gated" if event.instance_id.startswith("gated") else "quick"}
        assert event.output_truncated is False
        assert event.error is None
        assert event.account_id == ACCOUNT_ID
        assert event.ended_on is not None
        assert len([t for t in looks if changed < t < received]) <= 2, event.instance_id
    # About 5 list pages per look whatever the fleet's size, plus one GET per instance that finished.
    spent = len(
        [
            e
            for e in emulator.requests_log(started)
            if e["time"] <= stopped and e["endpoint"] in ("list_instances", "get_instance")  # the trigger's
        ]
    )
    assert spent <= 6 * len(looks) + 2 * len(expected), (spent, len(looks))
    memory = Memory.from_json(await store.aget(new_trigger(store).memory_key))
    assert memory.started.timestamp() > started

    # No trigger runs while these finish; a new trigger with the same arguments finds them, and only them.
    let_fleet_go(emulator, gated[5:8] + failing[2:3])
    late = create_fleet_instances(emulator, "quick", ["new-3"])
    await until("the late ones to finish", lambda: statuses(emulator)["new-3"] == "complete")
    restarted = time.time()
    second = Watch(new_trigger(store))
    expected_late = sorted(gated[5:8] + late)
    await until("the late completions to be reported", lambda: len(second.events) >= len(expected_late))
    last = second.events[-1][1]
    await until("two more looks", lambda: len([t for t in look_times(emulator, last) if t > last]) >= 2)
    await second.stop()

    assert sorted(second.ids()) == expected_late
    assert Memory.from_json(await store.aget(new_trigger(store).memory_key)).started == memory.started
    assert len(look_times(emulator, restarted)) >= 3
