"""The side-effect memory without I/O: keys per series of tries, records, what an instance shows, the
decisions on an earlier try's record, and the store missing. (Against the emulator and in DAG runs:
``tests/operators/test_side_effects_once.py``.)"""

from __future__ import annotations

import logging
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowOutcomePendingError,
    CloudflareWorkflowOutcomeUnknownError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsServerError,
)
from airflow_provider_cfworkflows.side_effects import (
    MAX_STORE_KEY_LENGTH,
    Creation,
    EffectRecord,
    Outcome,
    Restart,
    SentEvent,
    SideEffects,
    Via,
)
from tests.fakes import FakeTaskStateStore

LOST = CloudflareWorkflowsServerError("upstream", http_status=502)


def effects(
    store: Any = None, *, try_number: int = 1, max_tries: int = 2, retries: int = 2, hook: Any = None
) -> SideEffects:
    return SideEffects(
        hook=hook or mock.MagicMock(name="hook"),
        log=logging.getLogger("test.side_effects"),
        store=store,
        try_number=try_number,
        max_tries=max_tries,
        retries=retries,
        why_no_store="no store in this test",
    )


def waits(*entries: tuple[str, bool]) -> dict[str, Any]:
    """Instance details whose step log has a waitForEvent step per (event type, received) pair."""
    steps = [
        {
            "type": "waitForEvent",
            "name": f"gate-{n}",
            "event_type": event_type,
            "finished": done,
            "error": None,
        }
        for n, (event_type, done) in enumerate(entries, start=1)
    ]
    return {"status": "waiting", "queued": "2026-01-01T00:00:00.000Z", "steps": steps}


# --- keys: a retry is the same intent, a clear a new one ------------------------------------------------


def test_retries_share_keys_and_a_clear_starts_new_ones():
    event = SentEvent("wf", "i", None, "approval")
    first, retry = effects(try_number=1, max_tries=2), effects(try_number=3, max_tries=2)
    cleared = effects(try_number=4, max_tries=5)  # cleared after try 3: max_tries = 3 + retries
    assert event.key(first.series) == event.key(retry.series) == "cfworkflows/s1/event/wf/i/approval"
    assert event.key(cleared.series) == "cfworkflows/s4/event/wf/i/approval"
    assert (first.is_retry, retry.is_retry, cleared.is_retry) == (False, True, False)
    assert (first.retries_left, retry.retries_left, cleared.retries_left) == (True, False, True)


def test_keys_tell_effects_apart_and_fit_the_store():
    keys = {
        SentEvent("wf", "i", None, "a").key(1),
        SentEvent("wf", "i", None, "b").key(1),
        Restart("wf", "i").key(1),
        Restart("wf", "i", None, "failure-1").key(1),
        Creation("wf", "i").key(1),
    }
    assert len(keys) == 5
    assert len(SentEvent("w" * 64, "i" * 100, None, "e" * 100).key(999)) <= MAX_STORE_KEY_LENGTH
    assert len(SentEvent("w" * 600, "i", None, "e").key(1)) <= MAX_STORE_KEY_LENGTH


def test_a_stored_value_that_is_not_a_record_is_ignored():
    assert EffectRecord.from_store(None) is None
    assert EffectRecord.from_store("x") is None
    assert EffectRecord.from_store({"outcome": "done", "unknown": 1}) is None
    assert EffectRecord.from_store({"outcome": "done"}) is None  # fields missing


# --- what the instance shows ----------------------------------------------------------------------------


def test_an_event_shows_as_one_more_received_wait_for_its_type():
    event = SentEvent("wf", "i", None, "approval")
    before = event.marks(waits(("approval", True), ("approval", False), ("other", True)))
    assert before == {"received": 1}
    assert not event.shows(before, waits(("approval", True), ("approval", False), ("other", True)))
    assert not event.shows(
        before, waits(("approval", True), ("approval", False), ("other", True), ("other", True))
    )
    assert event.shows(before, waits(("approval", True), ("approval", True)))
    assert not event.shows(None, waits(("approval", True), ("approval", True)))  # nothing to compare with


def test_an_event_cannot_be_judged_without_the_event_type_in_the_step_log():
    unlabelled = {
        "status": "waiting",
        "steps": [{"type": "waitForEvent", "name": "gate-1", "finished": True}],
    }
    event = SentEvent("wf", "i", None, "approval")
    assert event.marks(unlabelled) is None
    assert not event.shows({"received": 0}, unlabelled)
    assert event.marks({"status": "waiting", "steps": []}) == {"received": 0}


def test_a_restart_shows_as_a_new_queued_time_only():
    restart = Restart("wf", "i")
    details = {"status": "errored", "queued": "2026-01-01T00:00:00.000Z", "start": "2026-01-01T00:00:01.000Z"}
    before = restart.marks(details)
    assert before == {"queued": "2026-01-01T00:00:00.000Z"}
    assert not restart.shows(before, {**details, "status": "running"})
    assert not restart.shows(before, {**details, "start": "2026-01-01T00:05:00.000Z"})  # started by itself
    assert restart.shows(before, {**details, "queued": "2026-01-01T00:05:00.000Z"})


# --- deciding on an earlier try's record ------------------------------------------------------------------


def test_an_answered_effect_is_not_done_again():
    store = FakeTaskStateStore()
    call = mock.MagicMock(return_value={"status": "queued"})
    first = effects(store).perform(Restart("wf", "i", "acc"), call, details={"queued": "q0"})
    again = effects(store, try_number=2).perform(Restart("wf", "i", "acc"), call)
    assert (first.via, again.via, again.by_try, again.result) == (
        Via.NOW,
        Via.EARLIER_TRY,
        1,
        {"status": "queued"},
    )
    assert call.call_count == 1
    (record,) = store.values.values()
    assert record["outcome"] == Outcome.DONE
    assert record["before"] == {"queued": "q0"}


def test_a_lost_answer_with_the_store_lets_airflow_retry_and_the_retry_sees_the_effect():
    store = FakeTaskStateStore()
    hook = mock.MagicMock(name="hook")
    hook.get_instance.side_effect = [waits(("approval", False)), waits(("approval", True))]
    first, retry = effects(store, hook=hook), effects(store, try_number=2, hook=hook)
    event = SentEvent("wf", "i", "acc", "approval")

    with pytest.raises(CloudflareWorkflowOutcomePendingError, match="task's retry looks at the instance"):
        first.perform(event, mock.MagicMock(side_effect=LOST))
    assert next(iter(store.values.values()))["outcome"] == Outcome.PENDING
    call = mock.MagicMock()
    done = retry.perform(event, call)

    assert (done.via, done.by_try) == (Via.SEEN, 1)
    call.assert_not_called()
    assert next(iter(store.values.values()))["outcome"] == Outcome.DONE


def test_a_retry_that_cannot_tell_fails_without_retry_and_sends_nothing():
    store = FakeTaskStateStore()
    hook = mock.MagicMock(name="hook")
    hook.get_instance.return_value = waits(("approval", False))  # never received
    event = SentEvent("wf", "i", "acc", "approval")
    with pytest.raises(CloudflareWorkflowOutcomePendingError):
        effects(store, hook=hook).perform(event, mock.MagicMock(side_effect=LOST))
    call = mock.MagicMock()
    with pytest.raises(
        CloudflareWorkflowOutcomeUnknownError, match=r"try 1 of this task sent the request"
    ) as caught:
        effects(store, try_number=2, hook=hook).perform(event, call)
    call.assert_not_called()
    assert "no waitForEvent step for 'approval' has received an event since" in str(caught.value)
    assert "never sent twice" in str(caught.value)
    assert "(upstream | HTTP 502)" in str(caught.value)  # try 1's error, kept in the record


def test_without_retries_left_a_lost_answer_fails_without_retry_at_once():
    store = FakeTaskStateStore()
    hook = mock.MagicMock(name="hook")
    hook.get_instance.return_value = waits(("approval", False))
    with pytest.raises(CloudflareWorkflowOutcomeUnknownError, match="fails without retry so the event"):
        effects(store, max_tries=0, hook=hook).perform(
            SentEvent("wf", "i", "acc", "approval"), mock.MagicMock(side_effect=LOST)
        )


def test_a_refused_effect_is_forgotten_so_a_retry_may_do_it():
    store = FakeTaskStateStore()
    refused = CloudflareWorkflowsConflictError("not restartable", http_status=409)
    with pytest.raises(CloudflareWorkflowsConflictError):
        effects(store).perform(
            Restart("wf", "i", "acc"), mock.MagicMock(side_effect=refused), details={"queued": "q"}
        )
    assert store.values == {}


def test_a_repeatable_effect_whose_answer_was_lost_is_done_again_by_the_retry():
    store = FakeTaskStateStore()
    creation = Creation("wf", "i", "acc")
    with pytest.raises(CloudflareWorkflowsServerError):
        effects(store).perform(creation, mock.MagicMock(side_effect=LOST))
    call = mock.MagicMock(return_value={"created": True})
    done = effects(store, try_number=2).perform(creation, call)
    assert (done.via, call.call_count) == (Via.NOW, 1)
    assert next(iter(store.values.values()))["result"] == {"created": True}


# --- no store -----------------------------------------------------------------------------------------------


def test_without_a_store_nothing_is_remembered_and_the_log_says_so_once(caplog):
    memory = effects(None, hook=mock.MagicMock(name="hook"))
    call = mock.MagicMock(return_value={})
    with caplog.at_level(logging.INFO, logger="test.side_effects"):
        memory.perform(Creation("wf", "i"), call)
        memory.perform(Creation("wf", "i"), call)
        with pytest.raises(CloudflareWorkflowOutcomeUnknownError):  # as before: no retry
            memory.perform(SentEvent("wf", "i", "acc", "approval"), mock.MagicMock(side_effect=LOST))
    assert call.call_count == 2
    said = [r.getMessage() for r in caplog.records if "not remembered across retries" in r.getMessage()]
    assert len(said) == 1
    assert "no store in this test" in said[0]


@pytest.mark.parametrize(("durable", "remembers"), [(True, True), (False, False)])
def test_for_task_reads_the_store_from_the_context_unless_not_durable(durable, remembers):
    task = mock.MagicMock(durable=durable, retries=1)
    ti = mock.MagicMock(try_number=2, max_tries=1)
    memory = SideEffects.for_task(task, {"ti": ti, "task_state_store": FakeTaskStateStore()})
    assert memory.remembers is remembers
    assert (memory.series, memory.is_retry, memory.retries_left) == (1, True, False)
    assert SideEffects.for_task(task, {"ti": ti}).remembers is False
