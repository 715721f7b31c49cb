"""The question a person sees and the answer an instance receives (pure code of the approval operator)."""

from __future__ import annotations

from datetime import UTC, datetime

from airflow_provider_cfworkflows.approval_messages import (
    ApprovalAnswer,
    event_type_warnings,
    question_body,
)
from airflow_provider_cfworkflows.remote_text import MAX_LISTED_ITEMS

URL = "https://dash.cloudflare.com/acc/workers/workflows/wf/instance/i-1"


def details(*steps: dict[str, object], status: str = "waiting") -> dict[str, object]:
    return {"status": status, "steps": list(steps)}


def test_the_answer_is_the_event_payload_and_survives_the_store():
    answer = ApprovalAnswer.from_response(
        {
            "chosen_options": ["Reject"],
            "params_input": {"note": "too high"},
            "responded_at": datetime(2026, 12, 3, 11, 37, 5, tzinfo=UTC),
            "responded_by_user": {"id": "42", "name": "Alice"},
        },
        timed_out=False,
    )
    assert answer.payload() == {
        "chosen_options": ["Reject"],
        "params_input": {"note": "too high"},
        "responded_by_user": {"id": "42", "name": "Alice"},
        "responded_at": "2026-12-03T11:37:05+00:00",
        "timed_out": False,
    }
    assert answer.rejected
    assert answer.describe() == "'Reject' by Alice (id 42)"
    assert ApprovalAnswer.from_store(answer.payload()) == answer
    assert answer.hitl_result()["responded_at"] == datetime(2026, 12, 3, 11, 37, 5, tzinfo=UTC)
    for not_an_answer in (None, "x", {"chosen_options": ["Approve"]}, {**answer.payload(), "extra": 1}):
        assert ApprovalAnswer.from_store(not_an_answer) is None


def test_a_timeout_default_is_flagged_and_has_nobody_behind_it():
    answer = ApprovalAnswer.from_response(
        {"chosen_options": ["Approve"], "params_input": {}, "responded_at": datetime.now(UTC)},
        timed_out=True,
    )
    assert answer.payload()["timed_out"] is True
    assert answer.payload()["responded_by_user"] is None
    assert not answer.rejected
    assert "nobody answered" in answer.describe()


def test_the_question_shows_the_instance_its_link_and_the_small_outputs_so_far():
    body = question_body(
        details(
            {"type": "step", "name": "prepare-1", "success": True, "output": '{"rows":3}'},
            {"type": "step", "name": "big-1", "success": True, "output": "x" * 1024 + "[truncated output]"},
            {"type": "step", "name": "pipes|`ticks`-1", "success": None, "output": None},
            {"type": "sleep", "name": "nap-1", "finished": True, "error": None},
            {"type": "waitForEvent", "name": "approval-1", "finished": False, "event_type": "approval"},
            {"type": "termination", "trigger": {"source": "api"}},
        ),
        workflow_name="wf",
        instance_id="i-1",
        event_type="approval",
        dashboard_url=URL,
    )
    assert "Workflow `wf`, instance `i-1`: **waiting**." in body
    assert f"[Open it in the Cloudflare dashboard]({URL})" in body
    assert "as the event `approval`" in body
    assert '| `prepare-1` | `step` | complete | `{"rows":3}` |' in body
    assert "| `big-1` | `step` | complete | (long: see the dashboard) |" in body
    assert "| `` pipes\\|`ticks`-1 `` | `step` | running |  |" in body  # escaped for a table cell
    assert "| `nap-1` | `sleep` | complete |  |" in body
    assert "| `approval-1` | `waitForEvent` | waiting |  |" in body
    assert "termination" not in body


def test_a_long_step_log_shows_its_last_steps():
    steps = [{"type": "step", "name": f"s-{n}", "success": True, "output": None} for n in range(30)]
    body = question_body(
        details(*steps), workflow_name="wf", instance_id="i", event_type="e", dashboard_url=URL
    )
    assert f"The last {MAX_LISTED_ITEMS} of 30 steps:" in body
    assert "`s-29`" in body
    assert "`s-10`" in body
    assert "`s-9`" not in body
    empty = question_body(details(), workflow_name="wf", instance_id="i", event_type="e", dashboard_url=URL)
    assert empty.endswith("No step has run yet.")


def test_warnings_when_the_version_does_not_wait_for_the_type_or_an_event_already_arrived():
    received = {
        "type": "waitForEvent",
        "name": "a-1",
        "finished": True,
        "error": None,
        "event_type": "approval",
    }
    assert event_type_warnings(details(), "approval", frozenset({"approval"})) == []
    assert event_type_warnings(details(), "approval", None) == []  # nothing known: nothing said
    [unknown] = event_type_warnings(details(), "aproval", frozenset({"approval", "review"}))
    assert "no step.waitForEvent for 'aproval'" in unknown
    assert "'approval', 'review'" in unknown
    [twice] = event_type_warnings(details(received), "approval", frozenset({"approval"}))
    assert "1 step.waitForEvent step(s) of the instance for 'approval' already received an event" in twice
