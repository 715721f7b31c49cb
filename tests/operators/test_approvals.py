"""The approval operator (issue 18) on a real Airflow (``dag.test()``) against the emulator.

A person answers through the REST API's own handler (:mod:`tests.hitl`); the instance waits in
``step.waitForEvent("approval")``. Each run checks what reached the instance: exactly the events sent.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any
from unittest import mock

import pytest

from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsConfigurationError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowApprovalOperator
from tests.hitl import Answer, NoAnswer, Person

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("no_retry_waits")]


def approval_workflow(emulator: Any) -> str:
    """prepare -> waitForEvent("approval") -> release; the instance output says it was released."""
    name = f"approve-{uuid.uuid4().hex[:8]}"
    steps = [
        {"name": "prepare", "output": {"rows": 3, "total": 3640.75}},
        {"name": "approval", "type": "waitForEvent", "event_type": "approval", "timeout": 3600},
        {"name": "release", "output": {"released": True}},
    ]
    emulator.put_workflow({"name": name, "steps": steps, "output": {"released": True}})
    return name


def waiting_instance(emulator: Any, name: str) -> str:
    """A new instance of ``name``, parked at its waitForEvent step."""
    instance_id = f"i-{uuid.uuid4().hex[:8]}"
    hook = CloudflareWorkflowsHook()
    hook.create_instance(name, instance_id=instance_id)
    emulator.advance(1)
    assert hook.get_instance(name, instance_id, simple=True)["status"] == "waiting"
    return instance_id


def events_sent(emulator: Any, instance_id: str) -> list[dict[str, Any]]:
    """The events that reached ``instance_id`` (answered 200), in order."""
    return [
        request
        for request in emulator.requests_log()
        if request["endpoint"] == "send_event" and f"/{instance_id}/" in request["raw_path"]
    ]


def status_of(name: str, instance_id: str) -> str:
    return str(CloudflareWorkflowsHook().get_instance(name, instance_id, simple=True)["status"])


def test_approve_with_a_form_reaches_the_waiting_instance_as_one_event(run_dag, cloudflare_conn):
    name = approval_workflow(cloudflare_conn)
    instance_id = waiting_instance(cloudflare_conn, name)
    answer = Answer(["Approve"], {"note": "numbers checked", "limit": 250}, user="alice")

    with Person("approval_form", [answer]) as person:
        result = run_dag("approval_form", {"workflow_name": name, "instance_id": instance_id})

    assert result.state == "success", result.task_states()
    assert result.task_states() == {"approve": "success", "done": "success"}
    [question] = person.questions
    assert question.options == ["Approve", "Reject"]
    assert set(question.params) == {"note", "limit"}
    assert f"`{instance_id}`" in (question.body or "")  # the default body: the instance and its steps
    assert "`prepare-1`" in (question.body or "")
    assert '{"rows":3,"total":3640.75}' in (question.body or "")
    [event] = events_sent(cloudflare_conn, instance_id)
    assert event["status"] == 200
    assert event["raw_path"].endswith("/events/approval")
    payload = event["body"]
    assert payload["chosen_options"] == ["Approve"]
    assert payload["params_input"] == {"note": "numbers checked", "limit": 250}
    assert payload["responded_by_user"] == {"id": "alice", "name": "alice"}
    assert payload["timed_out"] is False
    datetime.fromisoformat(payload["responded_at"])
    assert status_of(name, instance_id) == "complete"
    returned = result.xcom("approve")
    assert returned["chosen_options"] == ["Approve"]
    assert returned["responded_by_user"] == {"id": "alice", "name": "alice"}


def test_a_reject_is_sent_then_skips_downstream_or_fails_the_task(run_dag, cloudflare_conn):
    name = approval_workflow(cloudflare_conn)
    skipping, failing = waiting_instance(cloudflare_conn, name), waiting_instance(cloudflare_conn, name)
    answers = [Answer(["Reject"], task_id="reject"), Answer(["Reject"], user="bob", task_id="reject_fails")]

    with Person("approval_rejected", answers):
        result = run_dag(
            "approval_rejected",
            {"workflow_name": name, "instance_id": skipping, "other_instance_id": failing},
        )

    assert result.task_states() == {
        "reject": "success",
        "after_approval": "skipped",
        "reject_fails": "failed",
    }
    for instance_id, user in ((skipping, "alice"), (failing, "bob")):
        [event] = events_sent(cloudflare_conn, instance_id)  # the Workflow decides what a reject means
        assert event["body"]["chosen_options"] == ["Reject"]
        assert event["body"]["responded_by_user"]["name"] == user
        assert status_of(name, instance_id) == "complete"


def test_nobody_answers_in_time_and_the_defaults_are_sent_marked_timed_out(run_dag, cloudflare_conn):
    name = approval_workflow(cloudflare_conn)
    instance_id = waiting_instance(cloudflare_conn, name)

    with Person("approval_timeout", [NoAnswer()]) as person:
        result = run_dag("approval_timeout", {"workflow_name": name, "instance_id": instance_id})

    assert result.task_states() == {"approve": "success"}
    assert person.questions[0].subject == "Release the report?"
    assert person.questions[0].defaults == ["Approve"]
    [event] = events_sent(cloudflare_conn, instance_id)
    assert event["body"]["chosen_options"] == ["Approve"]
    assert event["body"]["params_input"] == {"note": "nobody objected"}
    assert event["body"]["responded_by_user"] is None
    assert event["body"]["timed_out"] is True


def test_an_ended_instance_asks_nobody_and_one_that_ends_while_deciding_gets_nothing(
    run_dag, cloudflare_conn, capsys
):
    name = approval_workflow(cloudflare_conn)
    ended, ends_later = waiting_instance(cloudflare_conn, name), waiting_instance(cloudflare_conn, name)
    hook = CloudflareWorkflowsHook()
    hook.change_instance_status(name, ended, "terminate")

    def terminate_while_deciding() -> None:
        hook.change_instance_status(name, ends_later, "terminate")

    answer = Answer(["Approve"], task_id="ends_while_deciding", before=terminate_while_deciding)
    with Person("approval_ended", [answer]) as person:
        result = run_dag(
            "approval_ended", {"workflow_name": name, "instance_id": ended, "other_instance_id": ends_later}
        )

    assert result.task_states() == {"already_ended": "failed", "ends_while_deciding": "failed"}
    assert [question.task_id for question in person.questions] == ["ends_while_deciding"]
    assert events_sent(cloudflare_conn, ended) == []
    assert events_sent(cloudflare_conn, ends_later) == []
    output = capsys.readouterr().out
    assert f"Instance {ended!r} of workflow {name!r} is terminated" in output
    assert "so nobody is asked" in output
    assert "the answer ('Approve' by alice (id alice)) given meanwhile was not sent" in output


def test_a_lost_answer_to_the_event_is_settled_by_the_retry_without_asking_or_sending_again(
    run_dag, cloudflare_conn, capsys
):
    name = approval_workflow(cloudflare_conn)
    instance_id = waiting_instance(cloudflare_conn, name)
    cloudflare_conn.inject_fault(kind="lost_answer", method="POST", path="/events/approval$", count=1)

    with Person("approval_form", [Answer(["Approve"], {"note": "", "limit": 1})]) as person:
        result = run_dag("approval_form", {"workflow_name": name, "instance_id": instance_id})

    assert result.task_states() == {"approve": "success", "done": "success"}
    assert result.tries()["approve"] == (2, 1)  # the retry decided...
    assert len(person.questions) == 1  # ...without asking again
    assert len(events_sent(cloudflare_conn, instance_id)) == 1  # ...or sending again
    output = capsys.readouterr().out
    assert "An earlier try of this task has the answer" in output
    assert "the instance shows it took effect: not doing it again" in output
    assert result.xcom("approve")["params_input"] == {"note": "", "limit": 1}


# --- before asking, without a DAG run -------------------------------------------------------------


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str | None]]:
    """Airflow's part of asking (writing the question through the task runner, then waiting), recorded:
    outside a DAG run there is no task runner to write it to."""
    from airflow.providers.standard.operators.hitl import HITLOperator

    questions: list[tuple[str, str | None]] = []
    monkeypatch.setattr(
        HITLOperator, "execute", lambda self, context: questions.append((self.subject, self.body))
    )
    return questions


def outside_a_run() -> dict[str, Any]:
    ti = mock.MagicMock(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1, max_tries=0)
    return {"ti": ti, "outlet_events": None}


def test_before_asking_the_event_type_is_checked_against_the_version_graph(cloudflare_conn, asked, capsys):
    name = approval_workflow(cloudflare_conn)
    instance_id = waiting_instance(cloudflare_conn, name)
    cloudflare_conn.clear_requests_log()
    operator = CloudflareWorkflowApprovalOperator(
        task_id="t", workflow_name=name, instance_id=instance_id, event_type="aproval"
    )

    operator.execute(outside_a_run())

    [(subject, body)] = asked
    assert subject == f"Workflow {name}: instance {instance_id} waits for 'aproval'"
    assert "`prepare-1`" in (body or "")
    assert (
        "no step.waitForEvent for 'aproval' (the types it waits for: 'approval')" in capsys.readouterr().out
    )
    # What it costs: the instance with its steps, and the graph of its version.
    assert [r["endpoint"] for r in cloudflare_conn.requests_log()] == ["get_instance", "get_version_graph"]


def test_a_graph_that_cannot_be_read_does_not_stop_the_question(cloudflare_conn, asked, capsys):
    name = approval_workflow(cloudflare_conn)
    instance_id = waiting_instance(cloudflare_conn, name)
    cloudflare_conn.inject_fault(kind="server_error", status=500, path="/graph$", count=10)
    operator = CloudflareWorkflowApprovalOperator(
        task_id="t",
        workflow_name=name,
        instance_id=instance_id,
        event_type="approval",
        body="My own **body**",
    )

    operator.execute(outside_a_run())

    assert asked == [(f"Workflow {name}: instance {instance_id} waits for 'approval'", "My own **body**")]
    assert "The version graph could not be read, so event_type is not checked" in capsys.readouterr().out


def test_fail_on_reject_needs_a_reject_option():
    with pytest.raises(CloudflareWorkflowsConfigurationError, match="needs 'Reject' among the options"):
        CloudflareWorkflowApprovalOperator(
            task_id="t",
            workflow_name="wf",
            instance_id="i",
            event_type="approval",
            options=["Ship", "Hold"],
            fail_on_reject=True,
        )
