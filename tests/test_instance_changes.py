"""The listing rules of the finished-instances trigger: its memory, what counts as news, the check of
the date-filter assumption, and the tracker's fallback when a server's date filter is not what we assume;
and the rules the triggerer's listers use: what makes a watched instance need a look, and what proves a
listing stale."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.instance_changes import (
    LIST_MARGIN,
    FinishedInstance,
    InstanceChangeTracker,
    ListedInstance,
    Memory,
    created_but_not_listed,
    format_time,
    is_wanted,
    last_change,
    listing_is_behind,
    memory_key,
    parse_time,
    watch_fingerprint,
)
from tests.helpers import create_fleet_instances, let_fleet_go

T0 = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)


def finished(instance_id: str, status: str = "complete", ended: datetime | None = T0) -> FinishedInstance:
    return FinishedInstance(ListedInstance(instance_id, status, T0 - timedelta(hours=1), ended))


def test_times_read_and_written_in_utc():
    assert parse_time("2026-11-02T10:00:00Z") == T0
    assert parse_time("2026-11-02T12:00:00+02:00") == T0
    assert parse_time("2026-11-02T10:00:00") == T0  # no offset: UTC, as the API documents
    assert parse_time("yesterday") is None
    assert parse_time(None) is None
    assert format_time(T0 + timedelta(milliseconds=5)) == "2026-11-02T10:00:00.005Z"


def test_listed_items_need_an_id_and_a_status():
    item = {"id": "a", "status": "complete", "created_on": "2026-11-02T09:00:00Z", "ended_on": None}
    assert ListedInstance.from_item(item) == ListedInstance("a", "complete", T0 - timedelta(hours=1), None)
    modified = ListedInstance.from_item({**item, "modified_on": "2026-11-02T10:00:00Z"})
    assert modified is not None
    assert modified.modified_on == T0
    assert ListedInstance.from_item({"id": "a"}) is None
    assert ListedInstance.from_item("a") is None


def test_what_makes_a_watched_instance_need_a_look():
    running = ListedInstance("a", "running", T0, None, T0 + timedelta(minutes=1))
    later = ListedInstance("a", "running", T0, None, T0 + timedelta(minutes=2))
    # An instance wait needs only the status; a step wait also needs modified_on (inferred to move with
    # every step), and without it the listing cannot tell.
    assert watch_fingerprint(running, steps=False) == watch_fingerprint(later, steps=False)
    assert watch_fingerprint(running, steps=True) != watch_fingerprint(later, steps=True)
    assert watch_fingerprint(ListedInstance("a", "running", T0), steps=True) is None


def test_the_last_change_details_show_and_a_listing_behind_it():
    details = {
        "queued": "2026-11-02T10:00:00Z",
        "start": "2026-11-02T10:00:01Z",
        "end": None,
        "steps": [
            {
                "type": "step",
                "name": "a-1",
                "start": "2026-11-02T10:00:01Z",
                "end": "2026-11-02T10:00:05Z",
                "success": True,
            },
            {"type": "step", "name": "b-1", "start": "2026-11-02T10:00:05Z", "end": None, "success": None},
            # A waitForEvent's end is its timeout until it is finished: not a change yet.
            {
                "type": "waitForEvent",
                "name": "c-1",
                "start": "2026-11-02T10:00:04Z",
                "end": "2026-11-03T10:00:04Z",
                "finished": False,
            },
            {"type": "termination", "trigger": {"source": "api"}},
        ],
    }
    change = last_change(details)
    assert change == T0 + timedelta(seconds=5)
    assert last_change({"steps": "none"}) is None
    stale = ListedInstance("a", "running", T0, None, T0 + timedelta(seconds=1))
    fresh = ListedInstance("a", "running", T0, None, change)
    soon, later = change + LIST_MARGIN, change + LIST_MARGIN + timedelta(seconds=1)
    assert listing_is_behind(stale, change, later)
    assert not listing_is_behind(stale, change, soon)  # within the margin: it may still catch up
    assert not listing_is_behind(fresh, change, later)
    assert not listing_is_behind(None, change, later)  # not listed: proves nothing
    assert not listing_is_behind(ListedInstance("a", "running", T0), change, later)  # no modified_on


def test_memory_round_trips_and_refuses_what_it_did_not_write():
    memory = Memory(started=T0, watermark=T0 + timedelta(minutes=5), oldest_open=None, reported={"a": "x"})
    assert Memory.from_json(memory.to_json()) == memory
    with pytest.raises(ValueError, match="version-1"):
        Memory.from_json({"started": "2026-11-02T10:00:00Z"})
    with pytest.raises(ValueError, match="unreadable"):
        Memory.from_json({**memory.to_json(), "started": "soon"})


def test_memory_keys_name_one_watcher_configuration():
    key = memory_key("cloudflare_default", None, "fleet", "complete")
    assert key.startswith("cloudflare_workflows.finished_instances.")
    assert key == memory_key("cloudflare_default", None, "fleet", "complete")
    assert key != memory_key("cloudflare_default", None, "fleet", "complete", "errored")


def test_what_is_news():
    memory = Memory(started=T0, watermark=T0 + timedelta(hours=1), reported={"seen": format_time(T0) or ""})
    later = T0 + timedelta(hours=1)
    assert is_wanted(finished("a", ended=later), ["complete"], memory)
    assert not is_wanted(finished("a", "errored", later), ["complete"], memory)
    # Ended before the watermark (less the margin for clock skew): reported or not wanted back then.
    assert not is_wanted(finished("a", ended=later - LIST_MARGIN), ["complete"], memory)
    assert is_wanted(finished("a", ended=later - LIST_MARGIN / 2), ["complete"], memory)
    # Seen open by this tracker: news whatever the clocks say; but never twice for the same end.
    assert is_wanted(finished("a", ended=T0 + timedelta(seconds=1)), ["complete"], memory, seen_open=True)
    assert not is_wanted(finished("seen", ended=T0), ["complete"], memory, seen_open=True)
    # The same instance ending again (restarted) is a new finish.
    assert is_wanted(finished("seen", ended=later), ["complete"], memory, seen_open=True)
    # Never what ended before watching started, even with a watermark far back.
    fresh = Memory(started=T0, watermark=T0)
    assert not is_wanted(finished("a", ended=T0 - timedelta(seconds=1)), ["complete"], fresh)


def test_an_open_instance_missing_from_the_dated_listing_disproves_the_filter():
    horizon = T0
    open_now = {
        "new": ListedInstance("new", "running", T0 + timedelta(seconds=30)),
        "old": ListedInstance("old", "running", T0 - timedelta(hours=2)),
        "edge": ListedInstance("edge", "running", T0),
    }
    assert created_but_not_listed(open_now, ["new"], horizon) == []
    assert created_but_not_listed(open_now, [], horizon) == ["new"]


@pytest.mark.integration
@pytest.mark.parametrize("date_field", ["ended_on", "ignored"])
async def test_a_date_filter_on_another_field_costs_pages_but_loses_nothing(
    real_time_conn: Any, date_field: str
) -> None:
    emulator = real_time_conn
    emulator.set_options(list_date_field=date_field)
    create_fleet_instances(emulator, "quick", [f"old-{n}" for n in range(3)])
    hook = CloudflareWorkflowsHook()
    tracker = InstanceChangeTracker(hook, workflow_name="fleet", statuses=["complete"])
    try:
        assert await tracker.look() == []  # watching starts
        gated = create_fleet_instances(emulator, "gated", ["gated"])
        assert await tracker.look() == []  # opened since: seen in the open listing
        assert tracker.date_filter_usable is (date_field == "ignored")
        let_fleet_go(emulator, gated)
        create_fleet_instances(emulator, "quick", ["quick"])
        found = await tracker.look()
    finally:
        await hook.aclose()
    assert sorted(f.instance.id for f in found) == ["gated", "quick"]
    for item in found:
        tracker.acknowledge(item)
    memory = tracker.memory()
    assert memory is not None
    assert set(memory.reported) == {"gated", "quick"}
    assert memory.oldest_open is None
