"""Approvals of Workflows that wait: the question a person sees, and the answer the instance receives.

Pure code for :class:`~airflow_provider_cfworkflows.operators.approvals.CloudflareWorkflowApprovalOperator`
(which joins Airflow's Human-in-the-loop operators and a ``step.waitForEvent``): the Markdown body of the
question, what the instance's step log and its version graph say about the event type, and the answer as
the event payload (and as the task state store keeps it, so a retry does not ask again).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from airflow_provider_cfworkflows.instance_details import received_event_count, status_of, step_entries
from airflow_provider_cfworkflows.remote_text import MAX_LISTED_ITEMS, MAX_NAME_CHARS, bounded

# The options of Airflow's ApprovalOperator (airflow.providers.standard.operators.hitl), our defaults.
APPROVE = "Approve"
REJECT = "Reject"
DEFAULT_OPTIONS = (APPROVE, REJECT)
# A step output preview longer than this (characters) is left to the dashboard in the question.
MAX_SHOWN_OUTPUT_CHARS = 200
# What instance details end a cut output preview with: Cloudflare shows the first 1024 characters
# (github.com/cloudflare/workers-sdk/pull/14822 describes production).
TRUNCATED_MARKER = "[truncated output]"
_STEP_LOG_TYPES = ("step", "sleep", "waitForEvent")


@dataclass(frozen=True)
class ApprovalAnswer:
    """
    A person's answer (or the default after ``response_timeout``), exactly as the instance receives it.

    :param chosen_options: the options chosen.
    :param params_input: what the form (``params``) was filled with.
    :param responded_by_user: ``{"id", "name"}`` of who answered; None for the timeout default.
    :param responded_at: when (ISO 8601).
    :param timed_out: True when nobody answered and these are the ``defaults``.
    """

    chosen_options: list[str]
    params_input: dict[str, Any]
    responded_by_user: dict[str, str] | None
    responded_at: str
    timed_out: bool

    @classmethod
    def from_response(cls, response: Mapping[str, Any], *, timed_out: bool) -> ApprovalAnswer:
        """The answer in Airflow's Human-in-the-loop result (``HITLOperator.execute_complete``)."""
        responded_at = response.get("responded_at")
        user = response.get("responded_by_user")
        return cls(
            chosen_options=[str(option) for option in response.get("chosen_options") or []],
            params_input=dict(response.get("params_input") or {}),
            responded_by_user={"id": str(user["id"]), "name": str(user["name"])} if user else None,
            responded_at=responded_at.isoformat()
            if isinstance(responded_at, datetime)
            else str(responded_at),
            timed_out=timed_out,
        )

    @classmethod
    def from_store(cls, value: Any) -> ApprovalAnswer | None:
        """The answer the task state store holds as ``value``, or None when it is not one."""
        names = {field.name for field in fields(cls)}
        if not isinstance(value, Mapping) or set(value) != names:
            return None
        try:
            return cls(**value)
        except TypeError:
            return None

    def payload(self) -> dict[str, Any]:
        """The event payload: ``{"chosen_options", "params_input", "responded_by_user", "responded_at",
        "timed_out"}`` (also what the task state store keeps)."""
        return asdict(self)

    def hitl_result(self) -> dict[str, Any]:
        """The answer as Airflow's Human-in-the-loop operators return it (their XCom)."""
        return {
            "chosen_options": list(self.chosen_options),
            "params_input": dict(self.params_input),
            "responded_at": datetime.fromisoformat(self.responded_at),
            "responded_by_user": self.responded_by_user,
        }

    @property
    def rejected(self) -> bool:
        """Whether ``Reject`` is among the chosen options."""
        return REJECT in self.chosen_options

    def describe(self) -> str:
        """``'Approve' by Alice (id alice)``, or ``'Reject' (the defaults: nobody answered in time)``."""
        chosen = ", ".join(repr(option) for option in self.chosen_options)
        if self.timed_out or self.responded_by_user is None:
            return f"{chosen} (the defaults: nobody answered within response_timeout)"
        user = self.responded_by_user
        return f"{chosen} by {user['name']} (id {user['id']})"


def default_subject(workflow_name: str, instance_id: str, event_type: str) -> str:
    """The question's headline when the task gives none."""
    return f"Workflow {workflow_name}: instance {instance_id} waits for {event_type!r}"


def _code(text: Any) -> str:
    """``text`` as an inline Markdown code span that also fits in a table cell."""
    words = bounded(" ".join(str(text).split()), MAX_NAME_CHARS).replace("|", "\\|")
    return f"`` {words} ``" if "`" in words else f"`{words}`"


def _step_state(entry: Mapping[str, Any]) -> str:
    """A step-log entry's state in one word (``step``: by ``success``; the others: by ``finished``)."""
    if entry.get("type") == "step":
        success = entry.get("success")
        return "complete" if success is True else "errored" if success is False else "running"
    if entry.get("finished") is True:
        return "errored" if entry.get("error") else "complete"
    return "waiting"


def _shown_output(entry: Mapping[str, Any]) -> str:
    """A small output preview as code; a long or cut one is left to the dashboard."""
    output = entry.get("output")
    if output is None:
        return ""
    text = output if isinstance(output, str) else str(output)
    if text.endswith(TRUNCATED_MARKER) or len(text) > MAX_SHOWN_OUTPUT_CHARS:
        return "(long: see the dashboard)"
    return _code(text)


def question_body(
    details: Mapping[str, Any], *, workflow_name: str, instance_id: str, event_type: str, dashboard_url: str
) -> str:
    """
    The default Markdown body of the question: the workflow, the instance and its status, the dashboard
    link, what the answer becomes, and the steps so far with their small outputs (the last
    ``MAX_LISTED_ITEMS``; outputs up to ``MAX_SHOWN_OUTPUT_CHARS`` characters).

    :param details: the instance's full details (with the step log).
    """
    lines = [
        f"Workflow {_code(workflow_name)}, instance {_code(instance_id)}: "
        f"**{status_of(details) or 'unknown'}**. [Open it in the Cloudflare dashboard]({dashboard_url}).",
        "",
        f"The answer is sent to the instance as the event {_code(event_type)}: its `step.waitForEvent` "
        "for that type receives the options chosen, the form's input, who answered and when.",
        "",
    ]
    entries = [entry for entry in step_entries(details) if entry.get("type") in _STEP_LOG_TYPES]
    if not entries:
        return "\n".join([*lines, "No step has run yet."])
    shown = entries[-MAX_LISTED_ITEMS:]
    if len(entries) > len(shown):
        lines += [f"The last {len(shown)} of {len(entries)} steps:", ""]
    lines += ["| Step | Type | State | Output |", "|---|---|---|---|"]
    lines += [
        f"| {_code(entry.get('name'))} | {_code(entry.get('type'))} | {_step_state(entry)} | "
        f"{_shown_output(entry)} |"
        for entry in shown
    ]
    return "\n".join(lines)


def event_type_warnings(
    details: Mapping[str, Any], event_type: str, waited_types: frozenset[str] | None
) -> list[str]:
    """
    What speaks against sending ``event_type`` to the instance, in words (empty when nothing does).

    :param details: the instance's full details (with the step log).
    :param waited_types: the event types the instance's version waits for (its graph), or None when
        unknown.
    """
    warnings = []
    if waited_types is not None and event_type not in waited_types:
        known = ", ".join(repr(name) for name in sorted(waited_types)) or "none"
        warnings.append(
            f"The instance's Workflow version has no step.waitForEvent for {event_type!r} (the types it "
            f"waits for: {known}): the answer would be kept by the instance and never used. Check "
            "event_type."
        )
    if received := received_event_count(details, event_type):
        warnings.append(
            f"{received} step.waitForEvent step(s) of the instance for {event_type!r} already received an "
            "event: the answer goes to the next one for that type, if the Workflow waits again."
        )
    return warnings
