"""What every Cloudflare Workflows operator and sensor has: the connection, the account, the hook and
the dashboard link (in the spirit of the Amazon provider's ``AwsBaseOperator`` / ``AwsBaseSensor``)."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink, BaseSensorOperator

from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.exceptions import CloudflareWorkflowsError
from airflow_provider_cfworkflows.hooks.workflows import CloudflareWorkflowsHook
from airflow_provider_cfworkflows.lineage import LineageRun, operator_lineage
from airflow_provider_cfworkflows.links.workflows import (
    CloudflareWorkflowInstanceLink,
    persist_instance_link,
)

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors.base import OperatorLineage
    from airflow.sdk import Context

CLOUDFLARE_ORANGE = "#f6821f"
log = logging.getLogger(__name__)


class CloudflareWorkflowsMixin:
    """
    The shared plumbing: ``account_id``, ``cloudflare_conn_id``, the hook (built on first use, never in
    ``__init__``), the account id to use, and the instance's dashboard link.

    :param account_id: Cloudflare account id; defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    operator_extra_links: Collection[BaseOperatorLink] = (CloudflareWorkflowInstanceLink(),)
    ui_color = CLOUDFLARE_ORANGE

    def __init__(
        self, *, account_id: str | None = None, cloudflare_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.account_id = account_id
        self.cloudflare_conn_id = cloudflare_conn_id
        # For the link (links.workflows): the URL pushed in this process, and whether it resumed the task.
        self.cloudflare_instance_url: str | None = None
        self.cloudflare_resumed_after_deferral = False
        # For OpenLineage (lineage.py): the instance this task worked on, and the paths it wrote.
        self.cloudflare_lineage_run: LineageRun | None = None
        self.cloudflare_lineage_outputs: list[str] = []

    @cached_property
    def hook(self) -> CloudflareWorkflowsHook:
        """The Cloudflare Workflows hook."""
        return CloudflareWorkflowsHook(self.cloudflare_conn_id)

    def resolve_account_id(self) -> str:
        """The task's ``account_id``, else the connection's login."""
        return self.hook.settings.resolve_account_id(self.account_id)

    def persist_instance_link(self, context: Context, workflow_name: str, instance_id: str) -> str:
        """
        Push the instance's dashboard URL before any other call, so the link works even if the task
        fails; returns the account id it resolved.
        """
        account_id = self.resolve_account_id()
        self.cloudflare_instance_url = persist_instance_link(context, account_id, workflow_name, instance_id)
        self.cloudflare_lineage_run = LineageRun(account_id, workflow_name, instance_id)
        return account_id

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """
        For Airflow's OpenLineage listener (the ``openlineage`` extra): the instance's run facet and the
        object-storage paths written (see :mod:`airflow_provider_cfworkflows.lineage`). Reads the
        instance once when the task did not learn its Workflow version.
        """
        run = self.cloudflare_lineage_run
        workflow_name, instance_id = getattr(self, "workflow_name", None), getattr(self, "instance_id", None)
        if run is None and isinstance(workflow_name, str) and isinstance(instance_id, str):
            run = LineageRun(self.resolve_account_id(), workflow_name, instance_id)  # resumed after deferral
        if run is not None and run.version_id is None:
            try:
                details = self.hook.get_instance(
                    run.workflow_name, run.instance_id, simple=True, account_id=run.account_id
                )
                run = LineageRun(run.account_id, run.workflow_name, run.instance_id, details.get("versionId"))
            except CloudflareWorkflowsError as error:
                log.info("OpenLineage: the instance's Workflow version could not be read: %s", error)
        return operator_lineage(run, self.cloudflare_lineage_outputs)

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after a deferral; the link then comes from the XCom pushed before the deferral."""
        self.cloudflare_resumed_after_deferral = True
        # The mixin always comes before BaseOperator (or BaseSensorOperator), which defines it.
        return super().resume_execution(next_method, next_kwargs, context)  # type: ignore[misc]


# Airflow fills arguments from ``default_args``, and accepts them in ``.partial()`` / ``.expand()``, only
# for the ``__init__`` of a class its metaclass built (BaseOperatorMeta wraps it and records its
# parameter names); the mixin's ``__init__`` is not one. So each base class names the two arguments in
# an ``__init__`` of its own, as the Amazon provider's AwsBaseOperator and AwsBaseSensor do.


class CloudflareWorkflowsBaseOperator(CloudflareWorkflowsMixin, BaseOperator):
    """
    Base of the Cloudflare Workflows operators (see :class:`CloudflareWorkflowsMixin`).

    :param account_id: Cloudflare account id; defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    def __init__(
        self, *, account_id: str | None = None, cloudflare_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(account_id=account_id, cloudflare_conn_id=cloudflare_conn_id, **kwargs)


class CloudflareWorkflowsBaseSensor(CloudflareWorkflowsMixin, BaseSensorOperator):
    """
    Base of the Cloudflare Workflows sensors (see :class:`CloudflareWorkflowsMixin`).

    :param account_id: Cloudflare account id; defaults to the connection's login.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    """

    def __init__(
        self, *, account_id: str | None = None, cloudflare_conn_id: str = DEFAULT_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(account_id=account_id, cloudflare_conn_id=cloudflare_conn_id, **kwargs)


def annotate_outlet_events(context: Context, operator: BaseOperator, extra: Mapping[str, Any]) -> None:
    """Attach ``extra`` to the asset event of every ``Asset`` outlet, so downstream DAGs find the result."""
    from airflow.sdk import Asset

    outlet_events = context.get("outlet_events")
    if outlet_events is None:
        return
    for outlet in operator.outlets or ():
        if isinstance(outlet, Asset):
            outlet_events[outlet].extra.update(extra)
