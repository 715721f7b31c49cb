"""Operators for Cloudflare Workflows (every operator, importable from here).

They live by concept in :mod:`.step_output`, :mod:`.instances`, :mod:`.events` and :mod:`.approvals`.
The approval operator is imported on first use: it needs Airflow's Human-in-the-loop operators
(``apache-airflow-providers-standard``), which a worker with the Task SDK alone may lack, and every other
operator works without them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_cfworkflows.base import annotate_outlet_events
from airflow_provider_cfworkflows.operators.events import CloudflareWorkflowSendEventOperator
from airflow_provider_cfworkflows.operators.instances import (
    DEFAULT_WAIT_TIMEOUT_SECONDS,
    CloudflareWorkflowChangeInstanceStatusOperator,
    CloudflareWorkflowCreateInstanceOperator,
    CloudflareWorkflowCreateInstancesOperator,
    CloudflareWorkflowDeleteInstancesOperator,
)
from airflow_provider_cfworkflows.operators.step_output import (
    DEFAULT_MAX_XCOM_BYTES,
    ON_REDACTED_CHOICES,
    XCOM_CONTENT_TYPE,
    XCOM_SHA256,
    XCOM_SIZE_BYTES,
    XCOM_STEP_ERROR,
    CloudflareWorkflowStepOutputOperator,
)

if TYPE_CHECKING:
    from airflow_provider_cfworkflows.operators.approvals import CloudflareWorkflowApprovalOperator

__all__ = [
    "DEFAULT_MAX_XCOM_BYTES",
    "DEFAULT_WAIT_TIMEOUT_SECONDS",
    "ON_REDACTED_CHOICES",
    "XCOM_CONTENT_TYPE",
    "XCOM_SHA256",
    "XCOM_SIZE_BYTES",
    "XCOM_STEP_ERROR",
    "CloudflareWorkflowApprovalOperator",
    "CloudflareWorkflowChangeInstanceStatusOperator",
    "CloudflareWorkflowCreateInstanceOperator",
    "CloudflareWorkflowCreateInstancesOperator",
    "CloudflareWorkflowDeleteInstancesOperator",
    "CloudflareWorkflowSendEventOperator",
    "CloudflareWorkflowStepOutputOperator",
    "annotate_outlet_events",
]


def __getattr__(name: str) -> Any:
    """``CloudflareWorkflowApprovalOperator`` on first use (PEP 562): see the module docstring."""
    if name == "CloudflareWorkflowApprovalOperator":
        from airflow_provider_cfworkflows.operators.approvals import CloudflareWorkflowApprovalOperator

        return CloudflareWorkflowApprovalOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
