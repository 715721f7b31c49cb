"""The send-event operator: let a ``step.waitForEvent`` of a Workflow instance go on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_cfworkflows.checks import instance_not_found_error
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsNotFoundError
from airflow_provider_cfworkflows.side_effects import CloudflareWorkflowsDurableOperator
from airflow_provider_cfworkflows.validation import (
    validate_event_payload,
    validate_event_type,
    validate_instance_id,
    validate_workflow_name,
)

if TYPE_CHECKING:
    from airflow.sdk import Context


class CloudflareWorkflowSendEventOperator(CloudflareWorkflowsDurableOperator):
    """
    Send an event to a Workflow instance, letting a ``step.waitForEvent`` with that type go on.

    The event type and payload are checked before any call: a typo in the type would otherwise leave
    the Workflow waiting until its timeout.

    An event is never sent twice. The hook repeats it only when the request provably never arrived
    (a failure to connect, a 429). When it may have arrived but no usable answer came back (a timeout
    or dropped connection after sending, a 5xx, an unreadable answer), a second event could pass a
    second ``waitForEvent`` gate, so it is not sent again: with Airflow's task state store
    (``durable``, Airflow 3.3) the task's retry looks at the instance and succeeds without sending if a
    ``waitForEvent`` step for the type has received an event since; otherwise (no store, no retries
    left, or the instance cannot tell) the task fails without retry
    (:class:`~airflow_provider_cfworkflows.exceptions.CloudflareWorkflowOutcomeUnknownError`), saying how
    to check whether the event arrived. A retry after a sent event never sends it again.

    :param workflow_name: the Workflow.
    :param instance_id: the instance to send to.
    :param event_type: the ``type`` of the ``step.waitForEvent`` (letters, digits, ``_``, ``-``; <= 100).
    :param payload: JSON-serializable value, at most 1 MiB encoded.
    :param durable: remember the event in the task state store across retries (default True); see
        :mod:`airflow_provider_cfworkflows.side_effects`.
    """

    template_fields: Sequence[str] = (
        "workflow_name",
        "instance_id",
        "event_type",
        "payload",
        "account_id",
        "cloudflare_conn_id",
    )
    template_fields_renderers = {"payload": "json"}

    def __init__(
        self, *, workflow_name: str, instance_id: str, event_type: str, payload: Any = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.workflow_name = workflow_name
        self.instance_id = instance_id
        self.event_type = event_type
        self.payload = payload

    def execute(self, context: Context) -> dict[str, str]:
        workflow_name = validate_workflow_name(self.workflow_name)
        instance_id = validate_instance_id(self.instance_id)
        event_type = validate_event_type(self.event_type)
        size = len(validate_event_payload(self.payload))
        account_id = self.persist_instance_link(context, workflow_name, instance_id)
        try:
            sent = self.side_effects(context).send_event(
                workflow_name, instance_id, event_type, self.payload, account_id=account_id
            )
        except CloudflareWorkflowsNotFoundError as error:
            raise instance_not_found_error(error, workflow_name, instance_id) from None
        if sent.now:
            self.log.info(
                "Sent event %r (%d bytes) to instance %r of %r.", event_type, size, instance_id, workflow_name
            )
        return {"workflow_name": workflow_name, "instance_id": instance_id, "event_type": event_type}
