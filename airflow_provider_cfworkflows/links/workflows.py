"""Extra link from a task to its Workflow instance in the Cloudflare dashboard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.sdk import BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from airflow_provider_cfworkflows.protocol import encode_segment

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator, Context
    from airflow.sdk.types import TaskInstanceKey

DASHBOARD_URL = "https://dash.cloudflare.com"
INSTANCE_URL_XCOM_KEY = "cloudflare_instance_url"
# Operator attributes the link reads (set by CloudflareWorkflowsMixin): the URL pushed in this process,
# and whether this process resumed the task after a deferral.
INSTANCE_URL_ATTRIBUTE = "cloudflare_instance_url"
RESUMED_ATTRIBUTE = "cloudflare_resumed_after_deferral"


def instance_dashboard_url(account_id: str, workflow_name: str, instance_id: str) -> str:
    """
    The dashboard page of one instance.

    The path is what the dashboard shows for an instance (inferred from the dashboard, not from an API
    document); change it here if Cloudflare moves the page.
    """
    return (
        f"{DASHBOARD_URL}/{encode_segment(account_id)}/workers/workflows/"
        f"{encode_segment(workflow_name)}/instance/{encode_segment(instance_id)}"
    )


def persist_instance_link(context: Context, account_id: str, workflow_name: str, instance_id: str) -> str:
    """Push the instance's dashboard URL to XCom, so the link works even if the task later fails."""
    url = instance_dashboard_url(account_id, workflow_name, instance_id)
    context["ti"].xcom_push(key=INSTANCE_URL_XCOM_KEY, value=url)
    return url


class CloudflareWorkflowInstanceLink(BaseOperatorLink):
    """
    Link "Cloudflare Workflow instance" to the instance a task worked on.

    Airflow 3 asks for the link once, on the worker as the task ends, and stores it for the UI. The
    task keeps the URL it pushed (:func:`persist_instance_link`) on the operator; only a task resumed
    after a deferral (a new process) reads it back from XCom. A task that failed before it knew the
    instance has no link: the answer is then "" without an XCom read (which would log "XCom not
    found" at error level, as if the task had failed twice).
    """

    name = "Cloudflare Workflow instance"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        """The instance's dashboard URL, or an empty string when the task never got that far."""
        url = getattr(operator, INSTANCE_URL_ATTRIBUTE, None)
        if url is None and getattr(operator, RESUMED_ATTRIBUTE, False):
            url = XCom.get_value(key=INSTANCE_URL_XCOM_KEY, ti_key=ti_key)
        return url if isinstance(url, str) else ""
