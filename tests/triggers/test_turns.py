"""The fair queue of looks (no server, no timing): the oldest last look goes first, never more looks in
flight than allowed, a cancelled waiter holds nobody up, ranks come first and a waiter can be moved up,
a listing under way holds the other looks back, and the stretched interval is logged once; the alarms
wake each watcher once, in time order, at the time it asked for last."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from airflow_provider_cfworkflows.triggers.turns import Alarms, LookTurns, Rank


async def settle(condition):
    """Let the loop run until ``condition()`` holds (every step here is immediate)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


async def take_turn(turns, name, last_look_at, order, hold=None, rank=Rank.LOOK):
    async with turns.turn(last_look_at=last_look_at, rank=rank):
        order.append(name)
        if hold is not None:
            await hold.wait()


class Taker:
    """A watcher as the queue sees it: it takes its turn (and gives it back at once) or declines it."""

    def __init__(self, turns, name, order, wanted=True):
        self.turns, self.name, self.order, self.wanted = turns, name, order, wanted
        self.turn_order = None

    def take_turn(self):
        if not self.wanted:
            return False
        self.order.append(self.name)
        asyncio.get_running_loop().call_soon(self.turns.release)
        return True


async def test_the_oldest_last_look_goes_first_and_new_watchers_in_the_order_they_came():
    turns = LookTurns(label="c", concurrency=1)
    order: list[str] = []
    hold = asyncio.Event()
    holder = asyncio.create_task(take_turn(turns, "holder", 1.0, order, hold))
    await settle(lambda: order == ["holder"])
    waiting = [("looked at 5", 5.0), ("new 1", -math.inf), ("looked at 3", 3.0), ("new 2", -math.inf)]
    tasks = []
    for count, (name, last) in enumerate(waiting, start=1):
        tasks.append(asyncio.create_task(take_turn(turns, name, last, order)))
        await settle(lambda count=count: turns.waiting == count)
    hold.set()
    await asyncio.gather(holder, *tasks)
    assert order == ["holder", "new 1", "new 2", "looked at 3", "looked at 5"]


async def test_never_more_looks_in_flight_than_allowed():
    turns = LookTurns(label="c", concurrency=3)
    active, most = 0, 0
    gate = asyncio.Event()

    async def look(index):
        nonlocal active, most
        async with turns.turn(last_look_at=float(index)):
            active += 1
            most = max(most, active)
            await gate.wait()
            active -= 1

    tasks = [asyncio.create_task(look(index)) for index in range(10)]
    await settle(lambda: turns.waiting == 7)
    assert active == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert most == 3


async def test_a_cancelled_waiter_holds_nobody_up():
    turns = LookTurns(label="c", concurrency=1)
    order: list[str] = []
    mine = turns.turn(last_look_at=0.0)
    await mine.__aenter__()  # this test holds the only turn
    gone = asyncio.create_task(take_turn(turns, "gone", 1.0, order))
    handed = asyncio.create_task(take_turn(turns, "handed", 2.0, order))
    last = asyncio.create_task(take_turn(turns, "last", 3.0, order))
    await settle(lambda: turns.waiting == 3)
    gone.cancel()  # cancelled while waiting
    await mine.__aexit__(None, None, None)  # hands the turn to "handed" (nothing runs in between)...
    handed.cancel()  # ...which is cancelled before it can use it: it passes the turn on
    async with asyncio.timeout(30):  # a turn lost with a cancelled waiter would hang the rest
        await asyncio.gather(gone, handed, last, return_exceptions=True)
        assert order == ["last"]
        assert gone.cancelled()
        assert handed.cancelled()
        async with turns.turn(last_look_at=0.0):
            pass  # the queue is free again


async def test_ranks_go_first_a_waiter_moved_up_keeps_its_age_and_a_listing_holds_looks_back():
    turns = LookTurns(label="c", concurrency=2)
    order: list[str] = []
    hold = asyncio.Event()
    holders = [asyncio.create_task(take_turn(turns, f"holder {n}", 0.0, order, hold)) for n in (1, 2)]
    await settle(lambda: len(order) == 2)
    moved = Taker(turns, "safety net, looked at 1", order)
    turns.enqueue(moved, rank=Rank.SAFETY_NET, last_look_at=1.0)
    declining = Taker(turns, "not wanted any more", order, wanted=False)
    turns.enqueue(declining, rank=Rank.LOOK, last_look_at=0.0)
    waiting = [
        ("look, looked at 5", 5.0, Rank.LOOK),
        ("first look", -math.inf, Rank.FIRST_LOOK),
        ("safety net, looked at 0", 0.0, Rank.SAFETY_NET),
        ("page", 9.0, Rank.LISTING),
    ]
    tasks = []
    for count, (name, last, rank) in enumerate(waiting, start=3):
        tasks.append(asyncio.create_task(take_turn(turns, name, last, order, rank=rank)))
        await settle(lambda count=count: turns.waiting == count)
    # Its instance changed: it needs its look after all (queued again, with its age).
    turns.enqueue(moved, rank=Rank.LOOK, last_look_at=1.0)
    async with turns.listing():  # while a listing is under way only pages get the turns that free up
        hold.set()
        await settle(lambda: "page" in order)
        await asyncio.sleep(0)
        assert order[2:] == ["page"]
    await asyncio.gather(*holders, *tasks)
    await settle(lambda: len(order) == 7)
    assert order[3:] == [
        # Moved up to an ordinary look, older than the other one (the one that declined its turn, older
        # still, passed it on).
        "safety net, looked at 1",
        "look, looked at 5",
        "first look",
        "safety net, looked at 0",
    ]
    assert turns.waiting == 0  # the moved-up waiter's first entry was dropped


async def test_a_taker_queued_again_and_again_leaves_few_entries_behind():
    turns = LookTurns(label="c", concurrency=0)  # no turn is free: everything queued stays queued
    order: list[str] = []
    takers = [Taker(turns, name, order) for name in ("a", "b")]
    for _ in range(500):
        for taker in takers:
            turns.enqueue(taker, rank=Rank.SAFETY_NET, last_look_at=1.0)
    assert turns.waiting <= 2 * len(takers) + 64 + 1
    turns.release()
    turns.release()
    await settle(lambda: sorted(order) == ["a", "b"])
    for _ in range(10):
        await asyncio.sleep(0)
    assert sorted(order) == ["a", "b"]  # once each: the skipped entries give no turn


def test_the_stretched_interval_is_logged_once_then_on_a_change_then_when_it_ends(caplog):
    turns = LookTurns(label="cloudflare_default", concurrency=8)
    caplog.set_level(logging.INFO, logger="airflow_provider_cfworkflows.triggers.turns")
    now = 1000.0
    # 1,000 watchers at a 60 s interval, one turn every 0.25 s: each about every 250 s.
    for _ in range(400):
        now += 0.25
        turns.note_turn(now, due_at=now - 100, interval=60, watchers=1000)
    # Twice as many watchers: about every 500 s (logged again, though not sooner than RELOG_SECONDS).
    for _ in range(2000):
        now += 0.25
        turns.note_turn(now, due_at=now - 200, interval=60, watchers=2000)
    # Few watchers again: each turn on time.
    for _ in range(400):
        now += 0.25
        turns.note_turn(now, due_at=now, interval=60, watchers=10)
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert "each of the 1000 instances" in messages[0]
    assert "every 60 s" in messages[0]
    assert "each about every 250 s" in messages[0]
    assert "each about every 500 s" in messages[1]
    assert "again pays for a look at each instance" in messages[2]


def test_late_looks_of_watchers_a_listing_vouches_for_are_not_a_stretched_interval(caplog):
    turns = LookTurns(label="cloudflare_default", concurrency=8)
    caplog.set_level(logging.INFO, logger="airflow_provider_cfworkflows.triggers.turns")
    now = 1000.0
    # As in the test above, 1,000 watchers each looked at about every 250 s, but a listing sets when.
    for _ in range(400):
        now += 0.25
        turns.note_turn(now, due_at=now - 100, interval=60, watchers=1000, vouched=True)
    assert caplog.records == []
    for _ in range(400):  # the same turns without a listing: the budget stretches the interval
        now += 0.25
        turns.note_turn(now, due_at=now - 100, interval=60, watchers=1000)
    assert "each about every 250 s" in caplog.records[0].getMessage()


class Sleeper:
    def __init__(self, name, rung):
        self.name, self.rung = name, rung
        self.alarm_order = None

    def on_alarm(self):
        self.rung.append(self.name)


async def test_alarms_ring_in_time_order_once_each_at_the_time_asked_for_last():
    alarms = Alarms()
    rung: list[str] = []
    now = time.monotonic()
    early, late, moved, cancelled = (Sleeper(name, rung) for name in ("early", "late", "moved", "cancelled"))
    alarms.set(late, now + 0.2)
    alarms.set(early, now + 0.05)
    alarms.set(moved, now + 0.01)
    alarms.set(moved, now + 0.1)  # asked again: rings once, at the later time
    alarms.set(cancelled, now + 0.02)
    alarms.cancel(cancelled)
    async with asyncio.timeout(30):
        await settle_slowly(lambda: len(rung) == 3)
    assert rung == ["early", "moved", "late"]
    assert all(sleeper.alarm_order is None for sleeper in (early, late, moved, cancelled))
    for _ in range(500):  # alarms asked again and again keep the heap small
        alarms.set(late, time.monotonic() + 3600)
    assert len(alarms._heap) <= 2 * 1 + 64 + 1


async def settle_slowly(condition):
    while not condition():
        await asyncio.sleep(0.01)
