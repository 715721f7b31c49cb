"""The OpenLineage run facet of a Cloudflare Workflow instance.

Imports OpenLineage: only :mod:`airflow_provider_cfworkflows.lineage` imports this module, inside the
functions the OpenLineage listener calls, so the provider works without the ``openlineage`` extra.
"""

from __future__ import annotations

from attrs import define
from openlineage.client.facet_v2 import RunFacet

FACET_NAME = "cloudflareWorkflowInstance"


@define
class CloudflareWorkflowInstanceRunFacet(RunFacet):
    """
    The Cloudflare Workflow instance an Airflow task ran, waited for or read.

    :param workflowName: the Workflow.
    :param instanceId: the instance.
    :param versionId: the Workflow version the instance runs (None when it could not be read).
    :param accountId: the Cloudflare account.
    :param dashboardUrl: the instance's page in the Cloudflare dashboard.
    """

    workflowName: str
    instanceId: str
    versionId: str | None
    accountId: str
    dashboardUrl: str

    @staticmethod
    def _get_schema() -> str:
        return (
            "https://raw.githubusercontent.com/airflow-provider-cfworkflows/airflow-provider-cfworkflows/"
            "main/docs/openlineage/CloudflareWorkflowInstanceRunFacet.json"
        )
