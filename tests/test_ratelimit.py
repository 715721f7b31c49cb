"""The per-credential rate limiter: header parsing, pacing, fallback bucket, 429 pauses, deadlines,
threads and event loops. The decision core takes the time as an argument, so most tests use a fake
clock and a simulated server; only the event-loop tests wait (briefly) in real time."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from airflow_provider_cfworkflows import ratelimit
from airflow_provider_cfworkflows.connection import settings_from_connection
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsRateLimitError,
)
from airflow_provider_cfworkflows.ratelimit import (
    DEFAULT_RATE_LIMIT,
    LOCKOUT_SECONDS,
    QuotaPolicy,
    RateLimiter,
    RemainingBudget,
    limiter_for,
    parse_ratelimit,
    parse_ratelimit_policy,
)
from tests.fakes import FakeClock

T0 = 1000.0  # FakeClock's start


def cf_headers(remaining: int, reset: float, quota: int = 1200, window: int = 300) -> dict[str, str]:
    return {
        "Ratelimit": f'"default";r={remaining};t={reset:g}',
        "Ratelimit-Policy": f'"default";q={quota};w={window}',
    }


# --- header parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"default";r=50;t=30', [RemainingBudget("default", 50, 30.0)]),
        ('  "default" ; r = 50 ;t=30  ', [RemainingBudget("default", 50, 30.0)]),
        ("default;t=7;r=0", [RemainingBudget("default", 0, 7.0)]),
        (
            '"default";r=50;t=30, "burst";r=2;t=1',
            [RemainingBudget("default", 50, 30.0), RemainingBudget("burst", 2, 1.0)],
        ),
        ('"a,b";r=1;t=1, garbage, "x";r=abc;t=3, "y";r=-1;t=3, "z";r=5', [RemainingBudget("a,b", 1, 1.0)]),
        ('"default";r=1;t=99999999', [RemainingBudget("default", 1, 99999999.0)]),  # trusted or not: observe
        ('"default";r=1;t=nan, "d2";r=inf;t=1', []),
        ('"unterminated;r=1;t=1', []),
        (";;;,,,", []),
        ("", []),
        (None, []),
    ],
)
def test_ratelimit_header_parsing(value, expected):
    assert parse_ratelimit(value) == expected


def test_ratelimit_policy_parsing():
    assert parse_ratelimit_policy('"default";q=1200;w=300') == [QuotaPolicy("default", 1200, 300.0)]
    assert parse_ratelimit_policy('"a";q=10;w=0, "b";w=60, "c";q=5;w=60') == [QuotaPolicy("c", 5, 60.0)]
    assert parse_ratelimit_policy("nonsense") == []


def test_header_names_are_case_insensitive_and_the_policy_sets_the_reserve():
    limiter = RateLimiter(rate_limit=None)
    # q=100 -> reserve 5; r=8 -> 3 usable requests before the reset in 50 s.
    limiter.observe(T0, 200, {"RATELIMIT": '"default";r=8;t=50', "ratelimit-policy": '"default";q=100;w=60'})
    delays = [limiter.reserve(T0) for _ in range(4)]
    assert all(delay < 50 for delay in delays[:3])
    assert delays[3] >= 50 + ratelimit.RESET_MARGIN_SECONDS


def test_garbage_headers_change_nothing():
    limiter = RateLimiter(rate_limit=None)
    limiter.observe(T0, 200, {"Ratelimit": "this is not a structured field", "Ratelimit-Policy": "q=1"})
    assert [limiter.reserve(T0) for _ in range(50)] == [0.0] * 50


# --- pacing by the headers ---------------------------------------------------------------------------


def test_never_spends_past_what_the_server_says_is_left():
    limiter = RateLimiter(rate_limit=None)
    limiter.observe(T0, 200, cf_headers(remaining=64, reset=100, quota=1200))  # reserve 60: 4 usable
    in_window = [limiter.reserve(T0) for _ in range(4)]
    assert max(in_window) < 100
    assert limiter.reserve(T0) >= 100 + ratelimit.RESET_MARGIN_SECONDS
    # A late response that saw an older, higher r in the same window does not give budget back...
    limiter.observe(T0 + 1, 200, cf_headers(remaining=500, reset=99))
    assert limiter.reserve(T0 + 1) >= 99
    # ...but a response from the next window does.
    limiter.observe(T0 + 101, 200, cf_headers(remaining=1190, reset=299))
    assert limiter.reserve(T0 + 101) < 10


def test_unanswered_requests_count_against_the_remaining_budget():
    limiter = RateLimiter(rate_limit=None)
    tickets = []
    for _ in range(3):
        limiter.reserve(T0)
        tickets.append(limiter.send())
    # The first answer says 63 left; the two sent after it are not counted in it: 63 - 2 - 60 = 1.
    limiter.observe(T0, 200, cf_headers(remaining=63, reset=100), tickets[0])
    assert limiter.in_flight == 2
    assert limiter.reserve(T0) < 100
    assert limiter.reserve(T0) >= 100


def test_budget_is_spread_until_the_reset():
    limiter = RateLimiter(rate_limit=None)
    # 200 s into the window, 760 spent (on the even schedule): 380 usable over the last 100 s.
    limiter.observe(T0, 200, cf_headers(remaining=440, reset=100, quota=1200))
    slots = [limiter.reserve(T0) for _ in range(380)]
    burst = ratelimit.MAX_BURST_REQUESTS
    assert slots[:burst] == pytest.approx([0.0] * burst)
    gaps = [b - a for a, b in itertools.pairwise(slots[burst:])]
    assert 0.25 < min(gaps) <= max(gaps) < 0.28
    assert 97 < slots[-1] < 100
    assert limiter.reserve(T0) >= 100  # the 381st: after the reset


def test_a_window_spent_ahead_of_its_schedule_waits_for_the_schedule():
    limiter = RateLimiter(rate_limit=None)
    # 200 s into the window others have spent 940 of 1,200: more than the even schedule's 765. The 200
    # usable are spent from when the schedule catches up, still before the reset.
    limiter.observe(T0, 200, cf_headers(remaining=260, reset=100, quota=1200))
    slots = [limiter.reserve(T0) for _ in range(200)]
    assert 45 < slots[0] < 47  # (940 + 1 - 5) * 300 / 1,140 - 200 s
    assert slots[-1] < 100
    assert limiter.reserve(T0) >= 100


@dataclass
class SimulatedServer:
    """Fixed windows of ``quota`` requests; over it answers 429 (with ``Retry-After``: the window's rest)."""

    quota: int
    window: float
    used: Counter[int] = field(default_factory=Counter)
    rejected: int = 0
    rejected_dashboard: int = 0

    def handle(self, now: float, *, dashboard: bool = False) -> tuple[int, dict[str, str]]:
        index = int(now // self.window)
        reset = (index + 1) * self.window - now
        if self.used[index] >= self.quota:
            if dashboard:
                self.rejected_dashboard += 1
            else:
                self.rejected += 1
            return 429, {**cf_headers(0, math.floor(reset), self.quota), "Retry-After": str(math.ceil(reset))}
        self.used[index] += 1
        # t rounded down, the pessimistic reading of "whole seconds".
        return 200, cf_headers(self.quota - self.used[index], math.floor(reset), self.quota, int(self.window))


def simulate(
    server: SimulatedServer,
    callers: dict[RateLimiter, int],
    *,
    duration: float,
    latency: float = 0.05,
    dashboard_every: float | None = None,
    sent_at: list[float] | None = None,
) -> Counter[RateLimiter]:
    """
    Each caller loops: take a slot, send when it comes (unless paused), observe the answer (with the
    slot's ticket) later. Returns the requests sent per limiter; ``sent_at`` collects their times.
    """
    sent: Counter[RateLimiter] = Counter()
    sent_at = [] if sent_at is None else sent_at
    order = itertools.count()
    events: list[tuple[float, int, str, Any, Any]] = []
    for limiter, count in callers.items():
        for _ in range(count):
            heapq.heappush(events, (0.0, next(order), "reserve", limiter, None))
    if dashboard_every:
        heapq.heappush(events, (dashboard_every / 2, next(order), "dashboard", None, None))
    while events:
        now, _, kind, limiter, answer = heapq.heappop(events)
        if now > duration:
            break
        if kind == "reserve":
            heapq.heappush(events, (now + limiter.reserve(now), next(order), "send", limiter, None))
        elif kind == "send":
            if (wait := limiter.hold(now)) > 0:
                heapq.heappush(events, (now + wait, next(order), "send", limiter, None))
                continue
            ticket = limiter.send()
            sent[limiter] += 1
            sent_at.append(now)
            answer = (*server.handle(now), ticket)
            heapq.heappush(events, (now + latency, next(order), "observe", limiter, answer))
        elif kind == "observe":
            limiter.observe(now, *answer)
            heapq.heappush(events, (now, next(order), "reserve", limiter, None))
        else:  # someone in the dashboard, outside every limiter
            server.handle(now, dashboard=True)
            heapq.heappush(events, (now + dashboard_every, next(order), "dashboard", None, None))
    return sent


def test_many_callers_in_one_process_stay_inside_the_quota():
    server = SimulatedServer(quota=200, window=60.0)
    limiter = RateLimiter(rate_limit=None)
    sent = simulate(server, {limiter: 20}, duration=300)
    assert server.rejected == 0
    usable = 200 - 10  # the dashboard reserve of q=200
    # Every window after the first response is used nearly to its usable share, and never beyond it.
    assert all(0.9 * usable <= server.used[index] <= usable for index in range(1, 5)), server.used
    assert sent[limiter] == sum(server.used.values())


def test_processes_sharing_a_token_and_the_dashboard_slow_down_together():
    server = SimulatedServer(quota=200, window=60.0)
    first, second = RateLimiter(rate_limit=None), RateLimiter(rate_limit=None)
    sent = simulate(
        server, {first: 10, second: 25}, duration=600, dashboard_every=12.0
    )  # 5 per window, half the reserve
    assert server.rejected == 0
    assert sent[first] > 0.3 * sent[second]  # both make progress
    assert all(server.used[index] >= 0.85 * 200 for index in range(1, 10)), server.used


@pytest.mark.parametrize("callers", [8, 50])
def test_processes_sharing_a_token_at_a_short_window_do_not_drain_it_early(callers):
    # 4 processes (each its own limiter), each with more waiting callers than the window allows: the
    # windows are used, but by the even schedule all of them read from the headers, not half-way in.
    server = SimulatedServer(quota=120, window=30.0)
    limiters = {RateLimiter(rate_limit=None, jitter=random.Random(seed).random): callers for seed in range(4)}
    sent_at: list[float] = []
    simulate(server, limiters, duration=300, sent_at=sent_at)
    assert server.rejected == 0
    for index in range(10):
        start = index * 30.0
        first_half = sum(1 for moment in sent_at if start <= moment < start + 15)
        assert first_half <= 0.6 * 120, (index, first_half)
        if index:  # the first window also holds the first contact
            assert server.used[index] >= 0.85 * (120 - 6), server.used


def test_429_from_the_server_pauses_until_its_retry_after():
    server = SimulatedServer(quota=50, window=60.0)
    server.used[0] = 50  # someone else spent the window before our first request
    limiter = RateLimiter(rate_limit=None, jitter=random.Random(7).random)
    simulate(server, {limiter: 10}, duration=200)
    # Only the first requests meet the 429 (a burst: nothing is known before the first answer), none after.
    assert 1 <= server.rejected <= ratelimit.MAX_BURST_REQUESTS
    assert server.used[1] >= 45  # of 50 - 3 (reserve) usable
    assert server.used[2] >= 45


# --- fallback bucket ---------------------------------------------------------------------------------


def test_fallback_bucket_without_headers_allows_rate_limit_per_five_minutes():
    limiter = RateLimiter(rate_limit=60)
    slots = sorted(T0 + limiter.reserve(T0) for _ in range(300))
    burst = 3  # BURST_FRACTION (5 %) of 60
    assert slots[:burst] == pytest.approx([T0] * burst)
    assert slots[burst] > T0  # the burst is over
    # In any 300 s window, at most rate_limit requests.
    for index, start in enumerate(slots):
        in_window = sum(1 for slot in slots[index:] if slot < start + ratelimit.FALLBACK_WINDOW_SECONDS)
        assert in_window <= 60
    assert sum(1 for slot in slots if slot < T0 + 300) >= 59


def test_fallback_bucket_refills_while_idle_and_none_means_unlimited():
    limiter = RateLimiter(rate_limit=DEFAULT_RATE_LIMIT)
    burst = ratelimit.MAX_BURST_REQUESTS  # 5 % of 600 is more than that
    assert [limiter.reserve(T0) for _ in range(burst)] == [0.0] * burst
    assert limiter.reserve(T0) > 0
    assert limiter.reserve(T0 + 60) == 0.0  # idle for a minute: tokens are back
    unlimited = RateLimiter(rate_limit=None)
    # Before the first answer, a burst and then a pace: many callers starting together do not all go.
    first = [unlimited.reserve(T0) for _ in range(8)]
    assert first == pytest.approx([0.0] * 5 + [0.1, 0.2, 0.3])
    unlimited.observe(T0, 200, {})  # an answer without Ratelimit headers: no limit from then on
    assert {unlimited.reserve(T0 + 1) for _ in range(10_000)} == {0.0}


def test_after_the_advertised_window_the_last_policy_paces_until_an_answer_tells_more():
    limiter = RateLimiter(rate_limit=None)
    limiter.observe(T0, 200, cf_headers(remaining=100, reset=10, quota=120, window=30))
    late = T0 + 20  # the window has reset; nothing heard from the next one yet
    delays = [limiter.reserve(late) for _ in range(20)]
    # Not all at once (several processes would overrun the new window together): a burst of 5, then
    # the policy's pace, 114 per 30 s.
    assert delays[:5] == [0.0] * 5
    gaps = [b - a for a, b in itertools.pairwise(delays[4:])]
    assert gaps == pytest.approx([30 / (114 - 5)] * 15)


def test_fallback_bucket_applies_without_an_announced_policy():
    limiter = RateLimiter(rate_limit=30)
    limiter.observe(T0, 200, {"Ratelimit": '"default";r=1000;t=10'})  # no Ratelimit-Policy
    assert max(limiter.reserve(T0) for _ in range(20)) < 10  # paced by the headers: 940 usable in 10 s
    late = T0 + 20
    delays = [limiter.reserve(late) for _ in range(10)]
    assert max(delays) > 10  # 30 per 300 s again: about 10 s apart after a burst


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "600"])
def test_bad_rate_limit_is_refused_with_what_is_allowed(bad):
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="whole number of requests per 300 s"):
        RateLimiter(rate_limit=bad)


# --- 429: every caller pauses ------------------------------------------------------------------------


def test_429_pauses_every_caller_with_bounded_jitter():
    limiter = RateLimiter(rate_limit=None, jitter=random.Random(3).random)
    holders = [limiter.reserve(T0) for _ in range(3)]  # slots taken before the 429
    assert holders == [0.0] * 3
    limiter.observe(T0 + 1, 429, {"Retry-After": "30"})
    jitter_max = min(ratelimit.PAUSE_JITTER_MAX_SECONDS, ratelimit.PAUSE_JITTER_FRACTION * 30)
    newcomers = [T0 + 1 + limiter.reserve(T0 + 1) for _ in range(50)]
    still_holding = [T0 + 1 + limiter.hold(T0 + 1) for _ in range(2)]
    for moment in newcomers + still_holding:
        assert T0 + 31 <= moment <= T0 + 31 + jitter_max
    assert len({round(moment, 6) for moment in newcomers}) > 40  # spread, not phase-locked
    assert limiter.hold(T0 + 31 + jitter_max) == 0.0


FAR_DATE = "Fri, 31 Dec 9999 23:59:59 GMT"


@pytest.mark.parametrize(
    ("headers", "pause"),
    [
        ({"Retry-After": "12"}, 12.0),
        ({"Retry-After": "0.4"}, 1.0),  # whole seconds, rounded up (not 0)
        (cf_headers(remaining=0, reset=42), 42.0 + ratelimit.RESET_MARGIN_SECONDS),
        ({}, LOCKOUT_SECONDS),
        # Beyond Cloudflare's 5-minute window: not trusted, the lockout at most.
        ({"Retry-After": "86400"}, LOCKOUT_SECONDS),
        ({"Retry-After": "inf"}, LOCKOUT_SECONDS),
        ({"Retry-After": "nan"}, LOCKOUT_SECONDS),
        ({"Retry-After": FAR_DATE}, LOCKOUT_SECONDS),
        # The announced window bounds it too; then the reset time (if believable) says how long.
        ({**cf_headers(remaining=0, reset=20, quota=120, window=30), "Retry-After": "86400"}, 21.0),
        ({**cf_headers(remaining=0, reset=86400, quota=120, window=30), "Retry-After": "86400"}, 30.0),
        ({"Ratelimit": '"default";r=0;t=86400', "Retry-After": "86400"}, LOCKOUT_SECONDS),
    ],
    ids=[
        "retry-after",
        "fraction-rounded-up",
        "header-reset",
        "lockout-default",
        "day",
        "inf",
        "nan",
        "far-date",
        "policy-window-then-reset",
        "policy-window",
        "no-policy",
    ],
)
def test_429_pause_length(headers, pause):
    limiter = RateLimiter(rate_limit=None, jitter=lambda: 0.0)
    limiter.observe(T0, 429, headers)
    assert limiter.reserve(T0) == pytest.approx(pause)


@pytest.mark.parametrize(
    "ratelimit_header",
    ['"default";r=0;t=86400', '"default";r=0;t=3599', '"default";r=0;t=inf', '"default";r=0;t=1e308'],
)
def test_a_reset_beyond_the_window_is_not_trusted(ratelimit_header, caplog):
    limiter = RateLimiter(rate_limit=None)
    for _ in range(3):  # a run of them
        limiter.observe(
            T0, 200, {"Ratelimit": ratelimit_header, "Ratelimit-Policy": '"default";q=1200;w=300'}
        )
    assert limiter.reserve(T0) == 0.0  # the answer said nothing usable: no pause
    assert sum("not trusted" in record.message for record in caplog.records) <= 1  # logged once


def test_a_call_without_a_deadline_waits_out_a_lockout_but_not_longer():
    clock = FakeClock()
    limiter = RateLimiter(rate_limit=None, clock=clock, jitter=lambda: 1.0)
    limiter.observe(T0, 429, {"Retry-After": "86400"})  # not trusted: Cloudflare's 5-minute lockout
    limiter.wait_sync()  # waited out, jitter included
    assert clock.time == pytest.approx(T0 + LOCKOUT_SECONDS + ratelimit.PAUSE_JITTER_MAX_SECONDS)
    # Two callers already hold the next slots of a bucket of 2 per 300 s: the third would wait 600 s.
    queued = RateLimiter(rate_limit=2, clock=clock)
    assert [queued.reserve(clock.time) for _ in range(2)] == [0.0, 300.0]
    before = clock.time
    with pytest.raises(CloudflareWorkflowsRateLimitError, match=r"in 600\.0 s") as caught:
        queued.wait_sync()
    assert caught.value.retry_after == pytest.approx(600.0)
    assert clock.time == before  # failed at once, no sleep
    assert queued.in_flight == 2  # its slot given back


def test_a_later_shorter_429_does_not_shorten_the_pause():
    limiter = RateLimiter(rate_limit=None, jitter=lambda: 0.0)
    limiter.observe(T0, 429, {"Retry-After": "100"})
    limiter.observe(T0 + 1, 429, {"Retry-After": "1"})
    assert limiter.reserve(T0 + 1) == pytest.approx(99.0)


# --- deadlines ---------------------------------------------------------------------------------------


def test_wait_sync_sleeps_the_pause_then_sends():
    clock = FakeClock()
    limiter = RateLimiter(rate_limit=None, clock=clock, jitter=lambda: 0.5)
    limiter.observe(T0, 429, {"Retry-After": "20"})
    limiter.wait_sync(deadline=T0 + 60)
    assert clock.time == pytest.approx(T0 + 20 + 0.5 * 2.0)
    assert limiter.in_flight == 1


def test_wait_sync_raises_instead_of_waiting_past_the_deadline():
    clock = FakeClock()
    limiter = RateLimiter(rate_limit=None, clock=clock)
    limiter.observe(T0, 429, {"Retry-After": "60"})
    with pytest.raises(CloudflareWorkflowsRateLimitError, match="later than this call can wait") as caught:
        limiter.wait_sync(deadline=T0 + 5)
    assert caught.value.retry_after >= 60
    assert clock.slept == []
    assert limiter.in_flight == 0  # nothing reserved


def test_a_429_while_holding_a_slot_respects_the_deadline():
    clock = FakeClock()
    limiter = RateLimiter(rate_limit=None, clock=clock)
    assert limiter.reserve(T0) == 0.0
    limiter.observe(T0, 429, {"Retry-After": "60"})  # someone else's request
    with pytest.raises(CloudflareWorkflowsRateLimitError):
        limiter.hold(T0, deadline=T0 + 10)


async def test_wait_async_raises_past_the_deadline_and_gives_the_slot_back():
    clock = FakeClock()
    limiter = RateLimiter(rate_limit=None, clock=clock)
    limiter.observe(T0, 200, {"Ratelimit": '"default";r=61;t=100'})  # 1 usable, then the reset
    await limiter.wait_async(deadline=T0 + 1)
    with pytest.raises(CloudflareWorkflowsRateLimitError):
        await limiter.wait_async(deadline=T0 + 50)
    assert limiter.in_flight == 1
    limiter.release()
    assert limiter.in_flight == 0


async def test_cancelled_wait_releases_its_slot():
    limiter = RateLimiter(rate_limit=None)
    limiter.observe(limiter.clock.now(), 429, {"Retry-After": "30"})
    waiter = asyncio.create_task(limiter.wait_async())
    for _ in range(100):  # until the waiter holds its slot
        if limiter.in_flight:
            break
        await asyncio.sleep(0)
    assert limiter.in_flight == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert limiter.in_flight == 0


# --- threads and event loops -------------------------------------------------------------------------


def test_threads_share_one_limiter_without_losing_or_duplicating_slots():
    def scenario() -> RateLimiter:
        limiter = RateLimiter(rate_limit=None)
        limiter.observe(T0, 200, cf_headers(remaining=2108, reset=290, quota=2160))  # 2,000 usable
        return limiter

    shared = scenario()
    delays: list[float] = []
    start = threading.Barrier(8)

    def worker() -> None:
        start.wait()
        mine = [shared.reserve(T0) for _ in range(300)]
        delays.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    sequential = scenario()
    expected = [sequential.reserve(T0) for _ in range(2400)]
    assert sorted(delays) == pytest.approx(sorted(expected))
    assert shared.in_flight == 2400
    assert sum(1 for delay in delays if delay < 290) == 2000  # the usable budget, exactly once


def test_sync_threads_and_several_event_loops_wait_out_one_pause():
    limiter = RateLimiter(rate_limit=None)
    pause_end = limiter.clock.now() + 0.3
    limiter.observe(pause_end - 0.3, 429, {"Retry-After": "0.3"})
    finished: list[float] = []
    errors: list[BaseException] = []

    def sync_caller() -> None:
        limiter.wait_sync(deadline=limiter.clock.now() + 10)
        finished.append(limiter.clock.now())

    def loop_caller() -> None:
        async def main() -> None:
            async def task() -> None:
                await limiter.wait_async(deadline=limiter.clock.now() + 10)
                finished.append(limiter.clock.now())

            await asyncio.gather(*(task() for _ in range(3)))

        try:
            asyncio.run(main())
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=sync_caller) for _ in range(2)]
    threads += [threading.Thread(target=loop_caller) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    assert len(finished) == 8
    assert min(finished) >= pause_end


async def test_waiting_tasks_do_not_block_the_event_loop():
    limiter = RateLimiter(rate_limit=None)
    limiter.observe(limiter.clock.now(), 429, {"Retry-After": "0.2"})
    waiters = [asyncio.create_task(limiter.wait_async()) for _ in range(5)]
    ticks = 0
    while not all(waiter.done() for waiter in waiters):
        ticks += 1
        await asyncio.sleep(0.01)
    await asyncio.gather(*waiters)
    assert ticks >= 5  # the loop kept running other work during the 0.2 s pause
    assert limiter.in_flight == 5


# --- registry ----------------------------------------------------------------------------------------


def test_registry_gives_one_limiter_per_credential():
    key = ratelimit.credential_fingerprint("https://api.example.test/client/v4", "tok-secret-1")
    other = ratelimit.credential_fingerprint("https://api.example.test/client/v4", "tok-secret-2")
    elsewhere = ratelimit.credential_fingerprint("https://other.example.test/client/v4", "tok-secret-1")
    assert "tok-secret-1" not in key
    assert len({key, other, elsewhere}) == 3
    results: list[RateLimiter] = []
    threads = [threading.Thread(target=lambda: results.append(limiter_for(key))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len({id(limiter) for limiter in results}) == 1
    assert limiter_for(other) is not results[0]
    assert limiter_for(key, rate_limit=100).rate_limit == 100  # the latest configuration wins
    assert results[0].rate_limit == 100


def test_limiter_for_settings_exempts_only_loopback_hosts_from_the_fallback():
    def settings(host: str, password: str = "tok-a") -> Any:
        return settings_from_connection(login=None, password=password, host=host, port=None, extras={})

    remote = ratelimit.limiter_for_settings(settings("https://api.cloudflare.com/client/v4"))
    local = ratelimit.limiter_for_settings(settings("http://127.0.0.1:8787"))
    assert remote.rate_limit == DEFAULT_RATE_LIMIT
    assert local.rate_limit is None
    assert ratelimit.limiter_for_settings(settings("https://api.cloudflare.com/client/v4")) is remote
    assert ratelimit.limiter_for_settings(settings("https://api.cloudflare.com", "tok-b")) is not remote


def test_system_clock_is_monotonic():
    clock = ratelimit.SystemClock()
    first = clock.now()
    assert clock.now() >= first
    assert abs(first - time.monotonic()) < 5
