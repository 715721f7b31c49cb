"""Operators for Cloudflare Workflows (every operator, importable from here).

They live by concept in :mod:`.step_output`, :mod:`.instances` and :mod:`.events`.
"""

from __future__ import annotations

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

__all__ = [
    "DEFAULT_MAX_XCOM_BYTES",
    "DEFAULT_WAIT_TIMEOUT_SECONDS",
    "ON_REDACTED_CHOICES",
    "XCOM_CONTENT_TYPE",
    "XCOM_SHA256",
    "XCOM_SIZE_BYTES",
    "XCOM_STEP_ERROR",
    "CloudflareWorkflowChangeInstanceStatusOperator",
    "CloudflareWorkflowCreateInstanceOperator",
    "CloudflareWorkflowCreateInstancesOperator",
    "CloudflareWorkflowDeleteInstancesOperator",
    "CloudflareWorkflowSendEventOperator",
    "CloudflareWorkflowStepOutputOperator",
    "annotate_outlet_events",
]
