"""Keep every caller of one credential inside Cloudflare's API budget: one rate limiter per credential
and process, shared by sync (threads) and async (any number of event loops) callers.

Cloudflare allows 1,200 requests per 5 minutes per user, counted together with the dashboard and every
other client of that user; going over answers HTTP 429 and blocks every call of the user, dashboard
included, for 5 minutes (https://developers.cloudflare.com/fundamentals/api/reference/limits/). Every REST
response carries ``Ratelimit: "default";r=<remaining>;t=<seconds until reset>`` and
``Ratelimit-Policy: "default";q=<quota>;w=<window seconds>``
(https://developers.cloudflare.com/changelog/2025-09-03-rate-limiting-improvement/): the one place where
all processes sharing a token see the same remaining budget, so the limiter paces by them.

The decision core (:meth:`RateLimiter.reserve`, :meth:`RateLimiter.observe`, :meth:`RateLimiter.hold`,
:meth:`RateLimiter.release`) takes the time as an argument and never sleeps; its lock is held only for
the arithmetic. :meth:`RateLimiter.wait_sync` and :meth:`RateLimiter.wait_async` do the waiting
(``time.sleep`` / ``asyncio.sleep``), so async callers never block their event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit

from airflow_provider_cfworkflows.connection import (
    CLOUDFLARE_RATE_LIMIT,
    DEFAULT_RATE_LIMIT,
    RATE_LIMIT_WINDOW_SECONDS,
    ConnectionSettings,
    is_loopback_host,
)
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsRateLimitError,
)
from airflow_provider_cfworkflows.protocol import header, parse_retry_after

log = logging.getLogger(__name__)

# "If you exceed this, all API calls for the next five minutes will be blocked" (docs "Rate limits"):
# a 429 that says neither Retry-After nor the reset time pauses this long (or the policy's shorter
# window). It is also the longest pause anything the server says can cause: a Retry-After, or a reset
# time ``t``, beyond the window cannot be meant and is not trusted (one hostile answer must not hold
# every caller of the credential for longer; inferred: Cloudflare documents no longer window).
LOCKOUT_SECONDS = float(RATE_LIMIT_WINDOW_SECONDS)
# Client-side budget when responses carry no Ratelimit headers (a proxy strips them, an old emulator):
# the connection extra ``rate_limit`` (default DEFAULT_RATE_LIMIT, half of Cloudflare's budget, so one
# process alone cannot lock out the dashboard) requests per FALLBACK_WINDOW_SECONDS.
FALLBACK_WINDOW_SECONDS = float(RATE_LIMIT_WINDOW_SECONDS)
# Share of the advertised quota left unspent for people using the dashboard (60 of 1,200); it also
# absorbs the requests other processes have in flight when they read the same ``r`` as we do.
DASHBOARD_RESERVE_FRACTION = 0.05
# Requests that may go back to back when the limiter has been idle: 5 % of the usable budget, from 1
# up to MAX_BURST_REQUESTS (larger bursts would let several processes overshoot the reserve together).
MAX_BURST_REQUESTS = 5
BURST_FRACTION = 0.05
# Without a client-side rate_limit (a loopback host), until the first answer: a burst, then this pace.
FIRST_CONTACT_INTERVAL_SECONDS = 0.1
# ``t`` is whole seconds (rounded down, inferred): wait this much past the advertised reset.
RESET_MARGIN_SECONDS = 1.0
# Responses whose reset times differ by less than this describe the same window (rounding, latency).
SAME_WINDOW_TOLERANCE_SECONDS = 2.0
# After a 429 each waiting caller adds a random delay of up to 10 % of the pause (at most 5 s), so the
# callers of one process, and different processes, do not all send again in the same instant.
PAUSE_JITTER_FRACTION = 0.1
PAUSE_JITTER_MAX_SECONDS = 5.0
# Others' spending rate is measured over at least this much of a window (earlier: the previous value).
OTHERS_RATE_MIN_SECONDS = 5.0
# A caller without a deadline (an operator's call) waits at most this long for its slot: the longest
# pause an answer can cause (Cloudflare's lockout, its margin and jitter). A longer wait (slots queued
# behind many others) fails at once with the wait it would need; the task's retries take over.
MAX_WAIT_SECONDS = LOCKOUT_SECONDS + RESET_MARGIN_SECONDS + PAUSE_JITTER_MAX_SECONDS
# Waits at least this long are logged, so a slow task says why it is slow.
LOG_WAIT_SECONDS = 5.0

# Quoted strings, left to right: only one holding a separator or an escape needs the slow split.
_QUOTED = re.compile(r'"[^"]*"?')

RATELIMIT_HEADER = "ratelimit"
RATELIMIT_POLICY_HEADER = "ratelimit-policy"
RETRY_AFTER_HEADER = "retry-after"
TOO_MANY_REQUESTS = 429


# --- headers -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemainingBudget:
    """
    One item of the ``Ratelimit`` header.

    :param policy: the policy name (``"default"`` on Cloudflare).
    :param remaining: ``r``, requests left in the current window.
    :param reset_seconds: ``t``, seconds until the window resets.
    """

    policy: str
    remaining: int
    reset_seconds: float


@dataclass(frozen=True)
class QuotaPolicy:
    """
    One item of the ``Ratelimit-Policy`` header.

    :param policy: the policy name.
    :param quota: ``q``, requests allowed per window.
    :param window_seconds: ``w``, the window length in seconds.
    """

    policy: str
    quota: int
    window_seconds: float


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    part: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(part).strip())
            part = []
            continue
        part.append(char)
    parts.append("".join(part).strip())
    return parts


def _split_plainly(text: str, separator: str) -> list[str]:
    return [part.strip() for part in text.split(separator)]


def _structured_items(value: str | None) -> list[tuple[str, dict[str, str]]]:
    """``"name";k=v;k=v, token;k=v`` (RFC 8941 list of items with parameters) as (name, params)."""
    if not value:
        return []
    # Only a quoted name holding a separator or an escape needs the character-wise split.
    tricky = any(char in quoted for quoted in _QUOTED.findall(value) for char in ",;\\")
    split = _split_outside_quotes if tricky else _split_plainly
    items = []
    for item in split(value, ","):
        name, *params = split(item, ";")
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = name[1:-1]
        if not name or '"' in name:
            continue
        pairs = (param.partition("=") for param in params)
        items.append((name, {key.strip().lower(): number.strip() for key, _, number in pairs}))
    return items


def _non_negative(text: str | None) -> float | None:
    try:
        number = float(text) if text is not None else math.nan
    except ValueError:
        return None
    return number if math.isfinite(number) and number >= 0 else None


def parse_ratelimit(value: str | None) -> list[RemainingBudget]:
    """The items of a ``Ratelimit`` header; items without a readable ``r`` and ``t`` are ignored."""
    items = []
    for name, params in _structured_items(value):
        remaining, reset = _non_negative(params.get("r")), _non_negative(params.get("t"))
        if remaining is not None and reset is not None:
            items.append(RemainingBudget(name, int(remaining), reset))
    return items


def parse_ratelimit_policy(value: str | None) -> list[QuotaPolicy]:
    """The items of a ``Ratelimit-Policy`` header; items without a readable ``q`` and ``w`` are ignored."""
    items = []
    for name, params in _structured_items(value):
        quota, window = _non_negative(params.get("q")), _non_negative(params.get("w"))
        if quota is not None and window:
            items.append(QuotaPolicy(name, int(quota), window))
    return items


def _tightest(budgets: list[RemainingBudget]) -> RemainingBudget | None:
    # Cloudflare sends one "default" policy (changelog 2025-09-03). With several, the one that allows
    # the slowest even pace (r / t) governs (inferred: no Cloudflare response with several is known).
    return min(budgets, key=lambda item: (item.remaining / max(item.reset_seconds, 1.0), item.remaining))


# --- the limiter ---------------------------------------------------------------------------------


class Clock(Protocol):
    """Where a limiter reads the time and how it waits (tests substitute a fake one)."""

    def now(self) -> float:
        """Seconds on a monotonic scale."""

    def sleep(self, seconds: float) -> None:
        """Block the calling thread."""

    async def asleep(self, seconds: float) -> None:
        """Suspend the calling task without blocking its event loop."""


class SystemClock:
    """``time.monotonic``, ``time.sleep`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    async def asleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class _Policy:
    """A window's quota and length: announced by a trusted ``Ratelimit-Policy``, or assumed."""

    quota: int
    window_seconds: float
    reserve: int
    announced: bool  # False: assumed (Cloudflare's documented budget), too unsure to keep a schedule by


@dataclass
class _Window:
    """What the responses said about the server's current window, net of our own requests."""

    policy: _Policy
    estimate: float  # requests left for new slots: r minus our requests it had not counted or to come
    remaining: int  # r of the newest answer
    counted_through: int  # the ticket of that answer: our later requests were not counted in its r
    reset_at: float
    started_at: float  # first response seen from this window
    observed_at: float  # latest response seen from this window
    others_spent: float = 0.0  # requests others (processes, dashboard) spent since started_at


def _burst(budget: float) -> float:
    return max(1.0, min(float(MAX_BURST_REQUESTS), budget * BURST_FRACTION))


def _validate_rate_limit(rate_limit: int | None) -> int | None:
    if rate_limit is not None and (
        isinstance(rate_limit, bool) or not isinstance(rate_limit, int) or rate_limit < 1
    ):
        raise CloudflareWorkflowsConfigurationError(
            f"rate_limit must be a whole number of requests per {FALLBACK_WINDOW_SECONDS:.0f} s (>= 1), "
            f"or None for no client-side limit; got {rate_limit!r}."
        )
    return rate_limit


def _policy_for(current: RemainingBudget, policies: list[QuotaPolicy]) -> _Policy:
    """
    The policy of ``current``: its ``Ratelimit-Policy`` item if that is believable (a window of at most
    :data:`LOCKOUT_SECONDS`), else Cloudflare's documented 1,200 per 5 minutes.
    """
    named = next((p for p in policies if p.policy == current.policy), None)
    if named is not None and named.window_seconds <= LOCKOUT_SECONDS:
        return _Policy(named.quota, named.window_seconds, _reserve(named.quota), announced=True)
    return _Policy(CLOUDFLARE_RATE_LIMIT, LOCKOUT_SECONDS, _reserve(CLOUDFLARE_RATE_LIMIT), announced=False)


def _reserve(quota: int) -> int:
    return math.ceil(DASHBOARD_RESERVE_FRACTION * quota)


class RateLimiter:
    """
    Paces the requests of one credential in this process.

    Every request first takes a slot (:meth:`reserve`), waits while :meth:`hold` says so, takes a
    ticket as it is sent (:meth:`send`), then reports its response (:meth:`observe`, with the ticket) or
    that none came (:meth:`release`); :meth:`wait_sync` and :meth:`wait_async` do the first three.

    :param rate_limit: requests per ``FALLBACK_WINDOW_SECONDS`` while responses carry no ``Ratelimit``
        header; None for no client-side limit (the server's headers and 429s still apply).
    :param clock: time source and sleeper; the system's by default.
    :param jitter: returns a uniform random number in [0, 1) (for the jitter after a pause, and among
        the processes waiting for the window's schedule).
    """

    def __init__(
        self,
        *,
        rate_limit: int | None = DEFAULT_RATE_LIMIT,
        clock: Clock | None = None,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.clock: Clock = clock or SystemClock()
        self._jitter = jitter
        self._lock = threading.Lock()
        self._rate_limit = _validate_rate_limit(rate_limit)
        self._window: _Window | None = None
        self._policy: _Policy | None = None  # the latest window's policy (it outlives the window)
        self._in_flight = 0  # slots granted whose response has not been observed (or released)
        self._unsent = 0  # slots granted whose request has not been sent (nor given up)
        self._sent = 0  # requests sent so far: the next one's ticket
        self._tat = -math.inf  # theoretical arrival time of the next request (GCRA)
        self._pause_until = -math.inf
        self._pause_jitter = 0.0
        self._others_rate = 0.0  # requests per second spent by other clients of the token
        self._distrust_logged = False
        self._answered = False  # whether any response came (see FIRST_CONTACT_INTERVAL_SECONDS)

    @property
    def rate_limit(self) -> int | None:
        """The client-side limit used while responses carry no ``Ratelimit`` header."""
        return self._rate_limit

    @rate_limit.setter
    def rate_limit(self, rate_limit: int | None) -> None:
        self._rate_limit = _validate_rate_limit(rate_limit)

    @property
    def in_flight(self) -> int:
        """Slots taken whose response has not been observed or released yet."""
        return self._in_flight

    # --- decision core (no sleeping; ``now`` is the clock's time) ----------------------------------

    def reserve(self, now: float, deadline: float | None = None) -> float:
        """
        Take the next slot to send a request: returns the seconds to wait before sending (then ask
        :meth:`hold`).

        :param deadline: clock time after which the caller will not wait; a slot later than that
            raises :class:`CloudflareWorkflowsRateLimitError` and nothing is reserved.
        """
        with self._lock:
            start = self._after_pause(now)
            slot, interval, in_window = self._plan(start)
            if deadline is not None and slot > deadline:
                raise _deadline_error(slot - now, deadline - now)
            self._tat = max(self._tat, slot) + interval
            if in_window and self._window is not None:
                self._window.estimate -= 1
            self._in_flight += 1
            self._unsent += 1
        return slot - now

    def hold(self, now: float, deadline: float | None = None) -> float:
        """
        Seconds a caller whose slot has come must still wait (0 when it may send): a 429 that arrived
        meanwhile pauses it, and answers that came meanwhile may show the window spent, or ahead of its
        schedule, by others. Raises past ``deadline``; the caller then calls ``release(sent=False)``.
        """
        with self._lock:
            delay = self._after_pause(now) - now
            if delay <= 0:
                delay = self._send_delay(now)
        if deadline is not None and now + delay > deadline:
            raise _deadline_error(delay, deadline - now)
        return delay

    def send(self) -> int:
        """The caller sends its request now: returns its ticket (for :meth:`observe`)."""
        with self._lock:
            self._unsent = max(0, self._unsent - 1)
            ticket = self._sent
            self._sent += 1
        return ticket

    def observe(
        self, now: float, status_code: int, headers: Mapping[str, str], ticket: int | None = None
    ) -> None:
        """
        Update the budget from a response to a request that had a slot.

        :param ticket: the request's ticket (from :meth:`send`); without it every other request in flight
            is taken as not yet counted by the server.
        """
        budgets = parse_ratelimit(header(headers, RATELIMIT_HEADER))
        policies = parse_ratelimit_policy(header(headers, RATELIMIT_POLICY_HEADER)) if budgets else []
        current = _tightest(budgets) if budgets else None
        policy = _policy_for(current, policies) if current is not None else self._policy
        bound = policy.window_seconds if policy is not None else LOCKOUT_SECONDS
        distrusted = []
        if current is not None and current.reset_seconds > bound + SAME_WINDOW_TOLERANCE_SECONDS:
            distrusted.append(f"Ratelimit t={current.reset_seconds:g} s")
            current = None  # a reset beyond the window cannot be meant: the answer says nothing
        pause = None
        if status_code == TOO_MANY_REQUESTS:
            # Wait what the server says, or for the reset, or (neither given) the window's lockout.
            pause = parse_retry_after(header(headers, RETRY_AFTER_HEADER))
            if pause is not None and pause > bound:
                distrusted.append(f"Retry-After {pause:g} s")
                pause = None
            if pause is None:
                pause = current.reset_seconds + RESET_MARGIN_SECONDS if current else bound
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if current is not None and policy is not None:
                self._policy = policy
                self._update_window(now, current, policy, ticket)
            self._answered = True
            extended = pause is not None and now + pause > self._pause_until
            if pause is not None and extended:
                self._pause_until = now + pause
                self._pause_jitter = min(PAUSE_JITTER_MAX_SECONDS, PAUSE_JITTER_FRACTION * pause)
            log_distrust = bool(distrusted) and (extended or not self._distrust_logged)
            self._distrust_logged = self._distrust_logged or bool(distrusted)
        if log_distrust:
            log.warning(
                "Cloudflare's answer said %s, beyond its rate-limit window (%.0f s): not trusted.",
                " and ".join(distrusted),
                bound,
            )
        if pause is not None and extended:  # once per pause, not once per refused request
            log.warning(
                "Cloudflare answered HTTP 429 (rate limited): every request with this credential in this "
                "process waits %.1f s (plus up to %.1f s of jitter) before the next one.",
                pause,
                self._pause_jitter,
            )

    def release(self, *, sent: bool = True) -> None:
        """A request that had a slot got no response (``sent=False``: it was never sent)."""
        with self._lock:
            self._in_flight = max(0, self._in_flight - 1)
            if not sent:
                self._unsent = max(0, self._unsent - 1)

    # Header pacing, the arithmetic (all under the lock):
    #   r, t      the server's remaining requests and seconds to reset, shared by every client of the
    #             token (other processes, the dashboard); reset_at = now + t. q, w: the policy's quota
    #             and window (trusted up to LOCKOUT_SECONDS; a t beyond w is not trusted at all).
    #   tickets   each request takes a ticket as it is sent; an answer's r counted our requests up to
    #             its ticket, not those sent after it. Only an answer with a newer ticket updates the
    #             window (an older one is older news); a later reset_at starts a new window.
    #   left      r - (our requests sent after the answered one): what the server has left now.
    #   E         left - (slots granted, not yet sent): what is left for new slots; each grant takes 1.
    #   U         usable = E - reserve (- without an announced policy: others_rate * time since our
    #             latest answer), reserve = ceil(DASHBOARD_RESERVE_FRACTION * q) (60 of 1,200);
    #             others_rate = what r fell by beyond our own requests, per second, over this window.
    #   pace      slots at interval (reset_at - max(now, tat)) / U, i.e. U spread evenly until the
    #             reset (tat: when the slots already granted are used up; U excludes them), with a
    #             burst of _burst(U) after idleness (GCRA: slot = max(now, tat - (burst - 1) * interval)).
    #   schedule  with an announced policy, never ahead of the window's even schedule: all clients
    #             together (q - E spent) at most B + (q - reserve) * elapsed / w, B = _burst(q -
    #             reserve). Every process reads the same r and t, so processes sharing the token keep
    #             to one schedule instead of each spreading all of U over the rest of the window.
    #   hold      when a slot comes, the newest answers decide again (other processes may have spent
    #             meanwhile): left, less what others probably spent since (at others_rate, but not past
    #             the schedule, which they keep too), must leave one above the reserve, else the slot
    #             moves to the next window; and the schedule must allow one more, else wait (plus a
    #             random share of one pace interval, so that the waiting processes take turns).
    #   cap       a slot in this window only while U >= 1: never past r - reserve. Other processes'
    #             unanswered requests are the only unseen spending; the reserve absorbs them.
    #   U < 1     (or the paced slot lands after the reset): from reset_at + RESET_MARGIN_SECONDS;
    #             after a reset, until a response tells the new r, the last policy paces (a burst of B,
    #             then (q - reserve) per w), else the fallback bucket below.
    # Fallback (no header): GCRA at interval W / (N - B) with burst B = _burst(N), N = rate_limit,
    #   W = 300 s: at most B + (N - B) = N requests in any 300 s. Without a rate_limit (a loopback host):
    #   no limit once an answer came; before, a burst then FIRST_CONTACT_INTERVAL_SECONDS.

    def _after_pause(self, now: float) -> float:
        if now < self._pause_until:
            return self._pause_until + self._jitter() * self._pause_jitter
        return now

    def _plan(self, start: float) -> tuple[float, float, bool]:
        """
        For a request that may go from ``start``: its slot, the pace interval after it, and whether it
        spends the known window's budget.
        """
        window = self._window
        if window is not None and start < window.reset_at:
            base = max(start, self._tat)
            # Others' spending since: only for a window without an announced schedule (with one, the
            # check before sending (:meth:`hold`) keeps to the schedule by the newest answers).
            others = 0.0 if window.policy.announced else self._others_rate * (base - window.observed_at)
            usable = window.estimate - window.policy.reserve - others
            if usable >= 1:
                interval = (window.reset_at - base) / usable
                slot = self._gcra_slot(start, interval, _burst(usable))
                if window.policy.announced:
                    spent = window.policy.quota - window.estimate + others
                    slot = max(slot, self._schedule(window, spent))
                if slot < window.reset_at:
                    return slot, interval, True
            start = window.reset_at + RESET_MARGIN_SECONDS
        interval, burst = self._fallback_pace()
        return self._gcra_slot(start, interval, burst), interval, False

    @staticmethod
    def _schedule(window: _Window, spent: float) -> float:
        """When the window's even schedule allows one more request after ``spent`` (by all clients)."""
        policy = window.policy
        usable = max(policy.quota - policy.reserve, 1)
        opened = window.reset_at - policy.window_seconds
        return opened + (spent + 1 - _burst(usable)) * policy.window_seconds / usable

    def _fallback_pace(self) -> tuple[float, float]:
        """
        Interval and burst until a response tells the window: the last policy's pace if one is known,
        else the client-side bucket (no interval without a ``rate_limit``).
        """
        if self._policy is not None and self._policy.announced:
            usable = max(self._policy.quota - self._policy.reserve, 1)
            burst = _burst(usable)
            return self._policy.window_seconds / max(usable - burst, 1.0), burst
        if self._rate_limit is None:
            # Before the first answer a burst, then a pace: many callers starting together (several
            # processes on one token) must not all go before one answer tells the budget.
            return (0.0, 1.0) if self._answered else (FIRST_CONTACT_INTERVAL_SECONDS, MAX_BURST_REQUESTS)
        burst = _burst(self._rate_limit)
        return FALLBACK_WINDOW_SECONDS / max(self._rate_limit - burst, 1.0), burst

    def _gcra_slot(self, start: float, interval: float, burst: float) -> float:
        if interval <= 0:  # no pace: each caller keeps its own (jittered) start
            return start
        return max(start, self._tat - (burst - 1) * interval)

    def _update_window(
        self, now: float, current: RemainingBudget, policy: _Policy, ticket: int | None
    ) -> None:
        # Without a ticket, every other request in flight is taken as not yet counted.
        counted_through = self._sent - 1 - self._in_flight if ticket is None else ticket
        reset_at = now + current.reset_seconds
        window = self._window
        if (
            window is None
            or now >= window.reset_at
            or reset_at > window.reset_at + SAME_WINDOW_TOLERANCE_SECONDS
        ):
            window = self._window = _Window(
                policy, 0.0, current.remaining, counted_through, reset_at, now, now
            )
            window.estimate = self._left(window) - self._unsent
            return
        if counted_through < window.counted_through:
            return  # an answer to an older request: the window already knows more
        window.remaining, window.counted_through = current.remaining, counted_through
        estimate = self._left(window) - self._unsent
        # What r fell by beyond our own requests was spent by others (other processes, the dashboard).
        window.others_spent += max(0.0, window.estimate - estimate)
        window.estimate = estimate
        window.observed_at = max(window.observed_at, now)
        if now - window.started_at >= OTHERS_RATE_MIN_SECONDS:
            self._others_rate = window.others_spent / (now - window.started_at)

    def _others_since(self, window: _Window, moment: float, spent: float) -> float:
        """
        What others probably spent between our latest answer and ``moment``: at their measured rate,
        but (with an announced policy) not beyond the window's schedule, which the other processes
        keep too: an overestimate would make every process wait for the others, and none spend.
        """
        others = self._others_rate * max(0.0, moment - window.observed_at)
        if window.policy.announced:
            others = min(others, max(0.0, self._scheduled(window, moment) - spent))
        return others

    @staticmethod
    def _scheduled(window: _Window, moment: float) -> float:
        """What the window's even schedule allows all clients to have spent by ``moment``."""
        policy = window.policy
        usable = max(policy.quota - policy.reserve, 1)
        elapsed = moment - (window.reset_at - policy.window_seconds)
        return _burst(usable) + usable * elapsed / policy.window_seconds

    def _left(self, window: _Window) -> float:
        """What the server has left now as far as we know: r less our requests sent after its answer."""
        return window.remaining - max(0, self._sent - window.counted_through - 1)

    def _send_delay(self, now: float) -> float:
        """
        Seconds a request whose slot has come must still wait by the newest answers (0: send): until
        the reset if the window is spent, or until its schedule allows one more.
        """
        window = self._window
        if window is None or now >= window.reset_at:
            return 0.0
        left = self._left(window)
        left -= self._others_since(window, now, window.policy.quota - left)
        if left - window.policy.reserve < 1:
            # Spent: a slot in the next window, paced like any other (not all waiters at the reset).
            slot, interval, _in_window = self._plan(window.reset_at + RESET_MARGIN_SECONDS)
            self._tat = max(self._tat, slot) + interval
            return slot - now
        if not window.policy.announced:
            return 0.0
        wait = self._schedule(window, window.policy.quota - left) - now
        if wait <= 0:
            return 0.0
        # Processes waiting for the schedule take the next request at random, not always the same one.
        policy = window.policy
        return wait + self._jitter() * policy.window_seconds / max(policy.quota - policy.reserve, 1)

    # --- waiting -----------------------------------------------------------------------------------

    def wait_sync(self, deadline: float | None = None) -> int:
        """
        Block the calling thread until this request may be sent (its slot is then taken); returns its
        ticket for :meth:`observe_response`.

        :param deadline: clock time (``clock.now()`` scale) not to wait past: raises
            :class:`CloudflareWorkflowsRateLimitError` instead. Without one, a wait longer than
            :data:`MAX_WAIT_SECONDS` raises at once.
        """
        limit = self._limit(deadline)
        delay = self.reserve(self.clock.now(), limit)
        try:
            while delay > 0:
                _log_wait(delay)
                self.clock.sleep(delay)
                delay = self.hold(self.clock.now(), limit)
        except BaseException:
            self.release(sent=False)
            raise
        return self.send()

    async def wait_async(self, deadline: float | None = None) -> int:
        """:meth:`wait_sync` for coroutines: waits with ``asyncio.sleep``, never blocking the loop."""
        limit = self._limit(deadline)
        delay = self.reserve(self.clock.now(), limit)
        try:
            while delay > 0:
                _log_wait(delay)
                await self.clock.asleep(delay)
                delay = self.hold(self.clock.now(), limit)
        except BaseException:  # cancelled while waiting: the slot is given up
            self.release(sent=False)
            raise
        return self.send()

    def _limit(self, deadline: float | None) -> float:
        return self.clock.now() + MAX_WAIT_SECONDS if deadline is None else deadline

    def observe_response(
        self, status_code: int, headers: Mapping[str, str], ticket: int | None = None
    ) -> None:
        """:meth:`observe` at the clock's current time."""
        self.observe(self.clock.now(), status_code, headers, ticket)


def _log_wait(delay: float) -> None:
    if delay >= LOG_WAIT_SECONDS:
        log.info("Waiting %.1f s for Cloudflare's API budget (shared by every client of the token).", delay)


def _deadline_error(delay: float, allowed: float) -> CloudflareWorkflowsRateLimitError:
    return CloudflareWorkflowsRateLimitError(
        f"Cloudflare's API budget allows the next request in {delay:.1f} s, later than this call can wait "
        f"({max(allowed, 0.0):.1f} s); not waiting.",
        retry_after=delay,
    )


# --- one limiter per credential in this process ----------------------------------------------------

_registry: dict[str, RateLimiter] = {}
_registry_lock = threading.Lock()
# Clock of the limiters the registry creates (tests replace it before creating hooks).
default_clock: Clock = SystemClock()


def credential_fingerprint(base_url: str, *credential_parts: str | None) -> str:
    """A non-secret key for a credential at an API: SHA-256 of the base URL and the credential."""
    material = "\0".join([base_url, *(part or "" for part in credential_parts)])
    return hashlib.sha256(material.encode()).hexdigest()


def limiter_for(key: str, *, rate_limit: int | None = DEFAULT_RATE_LIMIT) -> RateLimiter:
    """
    The process's limiter for ``key`` (a :func:`credential_fingerprint`), created on first use.

    :param rate_limit: the fallback limit; applied to an existing limiter too (the latest wins).
    """
    with _registry_lock:
        limiter = _registry.get(key)
        if limiter is None:
            limiter = _registry[key] = RateLimiter(rate_limit=rate_limit, clock=default_clock)
        elif limiter.rate_limit != rate_limit:
            limiter.rate_limit = rate_limit
        return limiter


def limiter_for_settings(settings: ConnectionSettings) -> RateLimiter:
    """
    The limiter of a connection's credential.

    The fallback budget is the connection's ``rate_limit`` extra. A loopback base URL (the local
    emulator) gets no client-side fallback limit: Cloudflare's budget does not apply there, and an
    emulator enforcing one sends the headers.
    """
    credentials = settings.credentials
    host = urlsplit(settings.base_url).hostname or ""
    rate_limit = None if is_loopback_host(host) else settings.rate_limit
    key = credential_fingerprint(
        settings.base_url, credentials.api_token, credentials.email, credentials.api_key
    )
    return limiter_for(key, rate_limit=rate_limit)


def reset_limiters() -> None:
    """Forget every limiter of this process (for tests)."""
    with _registry_lock:
        _registry.clear()
