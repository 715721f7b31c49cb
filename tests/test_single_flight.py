"""Overlapping identical sync looks share one call: followers get the leader's answer or error, never
an answer from before their own call, and never wait past their own deadline."""

from __future__ import annotations

import threading
import time

from airflow_provider_cfworkflows.deadlines import calls_end_by
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConnectionError
from airflow_provider_cfworkflows.single_flight import SingleFlight


def until(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def run_together(flight, key, call, followers):
    """The leader's call blocks until ``followers`` callers have joined it; returns every outcome."""
    outcomes: list[object] = []

    def caller():
        try:
            outcomes.append(flight.run(key, call))
        except Exception as error:
            outcomes.append(error)

    threads = [threading.Thread(target=caller) for _ in range(followers + 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return outcomes


def test_overlapping_calls_share_one_and_the_next_call_is_new():
    flight: SingleFlight[dict] = SingleFlight()
    calls = []

    def call():
        calls.append(1)
        until(lambda: flight.joined("i") == 9)  # every other caller waits for this one
        return {"status": "running", "call": len(calls)}

    outcomes = run_together(flight, "i", call, followers=9)
    assert outcomes == [{"status": "running", "call": 1}] * 10
    assert len(calls) == 1
    assert flight.run("i", lambda: {"status": "complete"}) == {"status": "complete"}  # nothing kept


def test_followers_get_the_error_as_their_own_exception():
    flight: SingleFlight[dict] = SingleFlight()

    def call():
        until(lambda: flight.joined("i") == 3)
        raise CloudflareWorkflowsConnectionError(
            "Request could not connect (nothing was sent)", request_sent=False
        )

    outcomes = run_together(flight, "i", call, followers=3)
    assert all(isinstance(outcome, CloudflareWorkflowsConnectionError) for outcome in outcomes)
    assert len({id(outcome) for outcome in outcomes}) == 4
    assert {outcome.request_sent for outcome in outcomes} == {False}


def test_a_follower_does_not_wait_past_its_deadline():
    flight: SingleFlight[str] = SingleFlight()
    release = threading.Event()
    leader = threading.Thread(target=lambda: flight.run("i", lambda: release.wait(60) and "late"))
    leader.start()
    until(lambda: flight.joined("i") == 0 and "i" in flight._flights)
    with calls_end_by(time.time() + 0.01):
        assert flight.run("i", lambda: "own") == "own"  # made its own call instead of waiting
    release.set()
    leader.join(timeout=60)
