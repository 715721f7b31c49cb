"""The approval operator: a person answers in Airflow, a Workflow waiting in ``step.waitForEvent`` goes on.

Built on Airflow's Human-in-the-loop operators (``apache-airflow-providers-standard``, which
``apache-airflow-core`` installs). Importing this module without them raises an ImportError that says
so; ``airflow_provider_cfworkflows.operators.workflows`` imports it only when the operator is used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cfworkflows.approval_messages import (
    DEFAULT_OPTIONS,
    REJECT,
    ApprovalAnswer,
    default_subject,
    event_type_warnings,
    question_body,
)
from airflow_provider_cfworkflows.base import CloudflareWorkflowsMixin
from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import (
    CloudflareWorkflowInstanceEndedError,
    CloudflareWorkflowsConfigurationError,
    CloudflareWorkflowsConflictError,
    CloudflareWorkflowsError,
    CloudflareWorkflowsNotFoundError,
)
from airflow_provider_cfworkflows.instance_details import status_of
from airflow_provider_cfworkflows.links.workflows import instance_dashboard_url
from airflow_provider_cfworkflows.looks import get_instance_details
from airflow_provider_cfworkflows.side_effects import (
    STORE_KEY_PREFIX,
    RemembersSideEffects,
    SentEvent,
    SideEffects,
)
from airflow_provider_cfworkflows.statuses import ENDED_FOR_EVENTS_STATUSES
from airflow_provider_cfworkflows.validation import (
    validate_event_type,
    validate_instance_id,
    validate_workflow_name,
)
from airflow_provider_cfworkflows.workflow_graph import waited_event_types

try:
    from airflow.providers.standard.exceptions import HITLRejectException
    from airflow.providers.standard.operators.hitl import HITLOperator
    from airflow.sdk import SkipMixin
except ImportError as error:  # a worker with the Task SDK alone, or an Airflow without HITL
    raise ImportError(
        "CloudflareWorkflowApprovalOperator needs Airflow's Human-in-the-loop operators "
        "(airflow.providers.standard.operators.hitl): install apache-airflow-providers-standard "
        f"(apache-airflow-core installs it). The import failed with: {error}"
    ) from error

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = ["CloudflareWorkflowApprovalOperator"]


class CloudflareWorkflowApprovalOperator(
    RemembersSideEffects, CloudflareWorkflowsMixin, HITLOperator, SkipMixin
):
    """
    Ask a person in Airflow (Human-in-the-loop), then send the answer to a Workflow instance as the
    event its ``step.waitForEvent`` waits for.

    Before asking, the task reads the instance: one that does not exist, or has ended, fails the task at
    once and nobody is asked; a version graph without a ``waitForEvent`` for ``event_type``, or an event
    of that type already received, is logged as a warning. The question (``body``, Markdown) shows the
    workflow, the instance, its dashboard link and the steps so far with their small outputs, unless the
    task gives its own ``body``. On Airflow 3.3 the task then waits in ``awaiting_input`` (no worker
    slot, no triggerer); people answer under Browse → Required Actions or through the REST API.

    The answer is sent once, as the event ``event_type`` with the payload ``{"chosen_options",
    "params_input", "responded_by_user", "responded_at", "timed_out"}`` (``timed_out``: nobody answered
    within ``response_timeout`` and the ``defaults`` were chosen; ``responded_by_user`` is then None).
    A reject is sent too: the Workflow decides what it means. Then, as Airflow's ``ApprovalOperator``
    does, a ``Reject`` skips the downstream tasks, or fails the task with ``fail_on_reject``. If the
    instance ended while the person was deciding, nothing is sent and the task fails, saying so. With no
    answer, no ``defaults`` and ``response_timeout`` passed, nothing is sent and the task fails.

    With Airflow's task state store (``durable``), the answer and the event are remembered: a retry
    neither asks again nor sends twice (after a lost answer to the event it looks at the instance, see
    :mod:`airflow_provider_cfworkflows.side_effects`). The task returns Airflow's Human-in-the-loop
    result (``chosen_options``, ``params_input``, ``responded_at``, ``responded_by_user``).

    :param workflow_name: the Workflow.
    :param instance_id: the instance that waits.
    :param event_type: the ``type`` of its ``step.waitForEvent`` (letters, digits, ``_``, ``-``; <= 100).
    :param subject: the question's headline; default: the workflow, instance and event type.
    :param options: what a person may choose; default ``["Approve", "Reject"]``.
    :param body: Markdown shown with the question; default: the instance and its steps so far.
    :param fail_on_reject: fail the task (after sending the event) when ``Reject`` is chosen, as
        Airflow's ``ApprovalOperator``; needs ``Reject`` among the options. Default False: downstream
        tasks are skipped instead.
    :param ignore_downstream_trigger_rules: on ``Reject``, skip every downstream task, not only the
        direct ones (as Airflow's ``ApprovalOperator``).
    :param durable: remember the answer and the event in the task state store across retries (default
        True).
    :param account_id: Cloudflare account id; defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.

    ``defaults``, ``multiple``, ``params`` (a form), ``notifiers``, ``assigned_users`` and
    ``response_timeout`` are those of Airflow's ``HITLOperator``.
    """

    inherits_from_skipmixin = True
    template_fields: Sequence[str] = (
        "subject",
        "body",
        "workflow_name",
        "instance_id",
        "event_type",
        "account_id",
        "cloudflare_conn_id",
    )

    # Every argument of this class is named here: Airflow applies default_args and .partial() only to
    # the parameters of an __init__ its metaclass built (see the note in base.py).
    def __init__(
        self,
        *,
        workflow_name: str,
        instance_id: str,
        event_type: str,
        subject: str | None = None,
        options: list[str] | None = None,
        body: str | None = None,
        fail_on_reject: bool = False,
        ignore_downstream_trigger_rules: bool = False,
        durable: bool = True,
        account_id: str | None = None,
        cloudflare_conn_id: str = DEFAULT_CONN_ID,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            subject=subject or "",
            options=list(DEFAULT_OPTIONS if options is None else options),
            body=body,
            account_id=account_id,
            cloudflare_conn_id=cloudflare_conn_id,
            **kwargs,
        )
        if fail_on_reject and REJECT not in self.options:
            raise CloudflareWorkflowsConfigurationError(
                f"fail_on_reject=True needs {REJECT!r} among the options, got {self.options!r}."
            )
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.event_type = event_type
        self.fail_on_reject = fail_on_reject
        self.ignore_downstream_trigger_rules = ignore_downstream_trigger_rules
        self.durable = durable
        self.hitl_summary_extra["fail_on_reject"] = fail_on_reject

    # --- before asking ------------------------------------------------------------------------------

    def execute(self, context: Context) -> Any:
        workflow_name, instance_id, event_type = self._target()
        account_id = self.persist_instance_link(context, workflow_name, instance_id)
        effects = self.side_effects(context)
        answer = self._recall_answer(effects)
        if answer is not None:
            self.log.info(
                "An earlier try of this task has the answer (%s), in the task state store: not asking again.",
                answer.describe(),
            )
            return self._deliver(context, effects, answer)
        details = get_instance_details(
            self.hook, workflow_name, instance_id, simple=False, account_id=account_id
        )
        self._fail_if_ended(details, "nobody is asked")
        for warning in event_type_warnings(
            details, event_type, self._waited_event_types(details, account_id)
        ):
            self.log.warning(warning)
        if not self.subject:
            self.subject = default_subject(workflow_name, instance_id, event_type)
        if not self.body:
            self.body = question_body(
                details,
                workflow_name=workflow_name,
                instance_id=instance_id,
                event_type=event_type,
                dashboard_url=instance_dashboard_url(account_id, workflow_name, instance_id),
            )
        self.hitl_summary_extra.update(
            {"workflow_name": workflow_name, "instance_id": instance_id, "event_type": event_type}
        )
        return super().execute(context)

    def _target(self) -> tuple[str, str, str]:
        return (
            validate_workflow_name(self.workflow_name),
            validate_instance_id(self.instance_id),
            validate_event_type(self.event_type),
        )

    def _waited_event_types(self, details: Mapping[str, Any], account_id: str) -> frozenset[str] | None:
        """The event types the instance's version waits for (its graph), or None when unknown."""
        version_id = details.get("versionId")
        if not isinstance(version_id, str) or not version_id:
            return None
        try:
            graph = self.hook.get_version_graph(self.workflow_name, version_id, account_id=account_id)
        except CloudflareWorkflowsError as error:
            self.log.info(
                "The version graph could not be read, so event_type is not checked against it: %s", error
            )
            return None
        return waited_event_types(graph)

    def _fail_if_ended(self, details: Mapping[str, Any], consequence: str) -> None:
        status = status_of(details)
        if status in ENDED_FOR_EVENTS_STATUSES:
            raise CloudflareWorkflowInstanceEndedError(
                f"Instance {self.instance_id!r} of workflow {self.workflow_name!r} is {status}: it can no "
                f"longer receive the event {self.event_type!r}, so {consequence}. "
                + instance_dashboard_url(self.resolve_account_id(), self.workflow_name, self.instance_id)
            )

    # --- the answer ---------------------------------------------------------------------------------

    def process_trigger_event_error(self, event: dict[str, Any]) -> None:
        if event.get("error_type") == "timeout":
            self.log.info(
                "Nobody answered within response_timeout and there are no defaults: nothing is sent to "
                "instance %r; its step.waitForEvent for %r ends by its own timeout.",
                self.instance_id,
                self.event_type,
            )
        super().process_trigger_event_error(event)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        response = super().execute_complete(context, event)
        answer = ApprovalAnswer.from_response(response, timed_out=bool(event.get("timedout")))
        self.log.info("The answer: %s.", answer.describe())
        effects = self.side_effects(context)
        self._remember_answer(effects, answer)
        return self._deliver(context, effects, answer)

    def _answer_key(self, effects: SideEffects) -> str:
        # Beside the event's record (side_effects.SentEvent), in the same series of tries.
        workflow_name, instance_id, event_type = self._target()
        return "/".join(
            [STORE_KEY_PREFIX, f"s{effects.series}", "answer", workflow_name, instance_id, event_type]
        )

    def _recall_answer(self, effects: SideEffects) -> ApprovalAnswer | None:
        if effects.store is None:
            return None
        return ApprovalAnswer.from_store(effects.store.get(self._answer_key(effects)))

    def _remember_answer(self, effects: SideEffects, answer: ApprovalAnswer) -> None:
        if effects.store is not None:
            effects.store.set(self._answer_key(effects), answer.payload())

    def _deliver(self, context: Context, effects: SideEffects, answer: ApprovalAnswer) -> Any:
        """Send the answer once (unless the instance ended), then act on a reject."""
        workflow_name, instance_id, event_type = self._target()
        account_id = self.resolve_account_id()
        effect = SentEvent(workflow_name, instance_id, account_id, event_type)
        details = None
        if effects.recall(effect) is None:  # no earlier try sent it: can the instance still receive it?
            details = self._details_before_sending(effect, answer)
        try:
            sent = effects.perform(
                effect,
                lambda: self.hook.send_event(
                    workflow_name, instance_id, event_type, answer.payload(), account_id=account_id
                ),
                details=details,
            )
        except CloudflareWorkflowsConflictError:
            # Refused (so not sent): the instance may have ended between the look and the event.
            self._details_before_sending(effect, answer)
            raise
        if sent.now:
            self.log.info(
                "Sent the answer to instance %r of %r as the event %r.",
                instance_id,
                workflow_name,
                event_type,
            )
        self.hitl_summary_extra.update({"event_sent_by_try": sent.by_try, "rejected": answer.rejected})
        if answer.rejected:
            self._act_on_reject(context, answer)
        return answer.hitl_result()

    def _details_before_sending(self, effect: SentEvent, answer: ApprovalAnswer) -> Mapping[str, Any]:
        """The instance's details; the task fails, sending nothing, if it is gone or has ended."""
        try:
            details = self.hook.get_instance(
                effect.workflow_name, effect.instance_id, account_id=effect.account_id
            )
        except CloudflareWorkflowsNotFoundError as error:
            raise CloudflareWorkflowInstanceEndedError(
                f"Instance {effect.instance_id!r} of workflow {effect.workflow_name!r} no longer exists: "
                f"the answer ({answer.describe()}) was not sent. {error}"
            ) from None
        self._fail_if_ended(details, f"the answer ({answer.describe()}) given meanwhile was not sent")
        return details

    def _act_on_reject(self, context: Context, answer: ApprovalAnswer) -> None:
        """As Airflow's ApprovalOperator: fail (``fail_on_reject``) or skip the downstream tasks."""
        if self.fail_on_reject:
            raise HITLRejectException(
                f"Rejected ({answer.describe()}); the event was sent to the instance, and fail_on_reject "
                "fails the task."
            )
        if not self.downstream_task_ids:
            return
        task = context["task"]
        relatives = (
            task.get_flat_relatives(upstream=False)
            if self.ignore_downstream_trigger_rules
            else task.get_direct_relatives(upstream=False)
        )
        self.log.info("Rejected: skipping the downstream tasks.")
        self.skip(ti=context["ti"], tasks=[relative for relative in relatives if not relative.is_teardown])
