"""The fair queue of looks (no server, no timing): the oldest last look goes first, never more looks in
flight than allowed, a cancelled waiter holds nobody up, ranks come first and a waiter can be moved up,
a listing under way holds the other looks back, and the stretched interval is logged once."""

from __future__ import annotations

import asyncio
import logging
import math

from airflow_provider_cfworkflows.triggers.turns import LookTurns, Rank, TurnTicket


async def settle(condition):
    """Let the loop run until ``condition()`` holds (every step here is immediate)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


async def take_turn(turns, name, last_look_at, order, hold=None, rank=Rank.LOOK, ticket=None):
    async with turns.turn(
        last_look_at=last_look_at, due_at=0.0, interval=1e9, watchers=1, rank=rank, ticket=ticket
    ):
        order.append(name)
        if hold is not None:
            await hold.wait()


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
        async with turns.turn(last_look_at=float(index), due_at=0.0, interval=1e9, watchers=10):
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
    mine = turns.turn(last_look_at=0.0, due_at=0.0, interval=1.0, watchers=1)
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
        async with turns.turn(last_look_at=0.0, due_at=0.0, interval=1.0, watchers=1):
            pass  # the queue is free again


async def test_ranks_go_first_a_waiter_moved_up_keeps_its_age_and_a_listing_holds_looks_back():
    turns = LookTurns(label="c", concurrency=2)
    order: list[str] = []
    hold = asyncio.Event()
    holders = [asyncio.create_task(take_turn(turns, f"holder {n}", 0.0, order, hold)) for n in (1, 2)]
    await settle(lambda: len(order) == 2)
    ticket = TurnTicket()
    waiting = [
        ("safety net, looked at 1", 1.0, Rank.SAFETY_NET, ticket),
        ("look, looked at 5", 5.0, Rank.LOOK, None),
        ("first look", -math.inf, Rank.FIRST_LOOK, None),
        ("safety net, looked at 0", 0.0, Rank.SAFETY_NET, None),
        ("page", 9.0, Rank.LISTING, None),
    ]
    tasks = []
    for count, (name, last, rank, with_ticket) in enumerate(waiting, start=1):
        tasks.append(asyncio.create_task(take_turn(turns, name, last, order, rank=rank, ticket=with_ticket)))
        await settle(lambda count=count: turns.waiting == count)
    turns.hurry(ticket)  # its instance changed: it needs its look after all
    async with turns.listing():  # while a listing is under way only pages get the turns that free up
        hold.set()
        await settle(lambda: "page" in order)
        await asyncio.sleep(0)
        assert order[2:] == ["page"]
    await asyncio.gather(*holders, *tasks)
    assert order[3:] == [
        "safety net, looked at 1",  # moved up to an ordinary look, older than the other one
        "look, looked at 5",
        "first look",
        "safety net, looked at 0",
    ]
    assert turns.waiting == 0  # the moved-up waiter's first entry was dropped


def test_the_stretched_interval_is_logged_once_then_on_a_change_then_when_it_ends(caplog):
    turns = LookTurns(label="cloudflare_default", concurrency=8)
    caplog.set_level(logging.INFO, logger="airflow_provider_cfworkflows.triggers.turns")
    now = 1000.0
    # 1,000 watchers at a 60 s interval, one turn every 0.25 s: each about every 250 s.
    for _ in range(400):
        now += 0.25
        turns._note_turn(now, due_at=now - 100, interval=60, watchers=1000)
    # Twice as many watchers: about every 500 s (logged again, though not sooner than RELOG_SECONDS).
    for _ in range(2000):
        now += 0.25
        turns._note_turn(now, due_at=now - 200, interval=60, watchers=2000)
    # Few watchers again: each turn on time.
    for _ in range(400):
        now += 0.25
        turns._note_turn(now, due_at=now, interval=60, watchers=10)
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
        turns._note_turn(now, due_at=now - 100, interval=60, watchers=1000, vouched=True)
    assert caplog.records == []
    for _ in range(400):  # the same turns without a listing: the budget stretches the interval
        now += 0.25
        turns._note_turn(now, due_at=now - 100, interval=60, watchers=1000)
    assert "each about every 250 s" in caplog.records[0].getMessage()
