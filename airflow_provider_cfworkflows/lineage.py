"""OpenLineage for the operators and sensors: what Airflow's OpenLineage listener asks them for.

OpenLineage is an optional extra (``pip install airflow-provider-cfworkflows[openlineage]``): nothing
here imports it at module level; the functions the listener calls import it when called.

- :func:`operator_lineage`: ``OperatorLineage`` with the run facet ``cloudflareWorkflowInstance``
  (workflow, instance, version, dashboard link), the standard ``externalQuery`` run facet (the instance
  id, source ``cloudflare-workflows``), and output datasets for object-storage paths written.
- :func:`inject_parent_info`: the Airflow task's OpenLineage parent and root run in a Workflow's
  ``params["openlineage"]``, as ``TriggerDagRunOperator`` puts them in a DAG run's conf, so Workflow
  code can emit lineage events linked to the Airflow task.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow_provider_cfworkflows.links.workflows import instance_dashboard_url

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors.base import OperatorLineage

log = logging.getLogger(__name__)

EXTERNAL_QUERY_SOURCE = "cloudflare-workflows"
# The key of the injected parent information in the instance params (as in TriggerDagRunOperator's conf).
PARAMS_KEY = "openlineage"
_PARENT_KEYS = (
    "parentRunId",
    "parentJobName",
    "parentJobNamespace",
    "rootParentRunId",
    "rootParentJobName",
    "rootParentJobNamespace",
)


@dataclass(frozen=True)
class LineageRun:
    """
    The instance a task worked on, as its lineage names it.

    :param account_id: the Cloudflare account.
    :param workflow_name: the Workflow.
    :param instance_id: the instance.
    :param version_id: the Workflow version, when known.
    """

    account_id: str
    workflow_name: str
    instance_id: str
    version_id: str | None = None


def output_dataset_name(path: str) -> tuple[str, str]:
    """
    ``(namespace, name)`` of an object-storage path by OpenLineage's dataset naming
    (https://openlineage.io/docs/spec/naming/): ``s3://bucket`` + ``key``, ``gs://bucket`` + ``key``,
    ``file`` + ``/abs/path``. A connection id in the URL (``s3://conn@bucket/key``) is left out.
    """
    parts = urlsplit(path)
    if parts.scheme in ("", "file"):
        return "file", parts.path
    return f"{parts.scheme}://{parts.hostname or ''}", parts.path.lstrip("/")


def operator_lineage(run: LineageRun | None, output_paths: Sequence[str] = ()) -> OperatorLineage:
    """The lineage of a task that ran, waited for or read ``run`` and wrote ``output_paths``."""
    from airflow.providers.common.compat.openlineage.facet import Dataset, ExternalQueryRunFacet
    from airflow.providers.openlineage.extractors.base import OperatorLineage

    from airflow_provider_cfworkflows.instance_run_facet import FACET_NAME, CloudflareWorkflowInstanceRunFacet

    outputs = [Dataset(namespace=ns, name=name) for ns, name in map(output_dataset_name, output_paths)]
    if run is None:
        return OperatorLineage(outputs=outputs)
    facet = CloudflareWorkflowInstanceRunFacet(
        workflowName=run.workflow_name,
        instanceId=run.instance_id,
        versionId=run.version_id,
        accountId=run.account_id,
        dashboardUrl=instance_dashboard_url(run.account_id, run.workflow_name, run.instance_id),
    )
    external = ExternalQueryRunFacet(externalQueryId=run.instance_id, source=EXTERNAL_QUERY_SOURCE)
    return OperatorLineage(outputs=outputs, run_facets={FACET_NAME: facet, "externalQuery": external})


def parent_info(task_instance: Any) -> dict[str, str] | None:
    """The task's OpenLineage parent and root run, or None when OpenLineage is absent or disabled."""
    try:
        from airflow.providers.openlineage.conf import is_disabled
        from airflow.providers.openlineage.plugins import macros
    except ImportError:
        log.info("openlineage_inject_parent_info: the OpenLineage provider is not installed.")
        return None
    if is_disabled():
        log.info("openlineage_inject_parent_info: OpenLineage is disabled (no transport configured).")
        return None
    return {
        "parentRunId": macros.lineage_run_id(task_instance),
        "parentJobName": macros.lineage_job_name(task_instance),
        "parentJobNamespace": macros.lineage_job_namespace(),
        "rootParentRunId": macros.lineage_root_run_id(task_instance),
        "rootParentJobName": macros.lineage_root_job_name(task_instance),
        "rootParentJobNamespace": macros.lineage_root_job_namespace(task_instance),
    }


def inject_parent_info(params: Any, task_instance: Any) -> Any:
    """
    ``params`` with ``params["openlineage"]`` holding the task's parent and root run (see
    :func:`parent_info`). Left as they are, with a warning, when they are not a JSON object (or None),
    when ``"openlineage"`` already names a parent or root, or when OpenLineage is not available.
    """
    if params is not None and not isinstance(params, dict):
        log.warning(
            "openlineage_inject_parent_info: instance_params is a %s, not an object: nothing injected.",
            type(params).__name__,
        )
        return params
    existing = (params or {}).get(PARAMS_KEY) or {}
    if not isinstance(existing, dict) or any(key in existing for key in _PARENT_KEYS):
        log.warning(
            "openlineage_inject_parent_info: instance_params[%r] already names a parent run or is not an "
            "object: nothing injected.",
            PARAMS_KEY,
        )
        return params
    info = parent_info(task_instance)
    if info is None:
        return params
    log.info("Injecting the task's OpenLineage parent run into instance_params[%r].", PARAMS_KEY)
    return {**(params or {}), PARAMS_KEY: {**info, **existing}}
