"""Assets Cloudflare Workflows update: in one line, a DAG scheduled on a Workflow's finished instances.

.. code-block:: python

    from airflow.sdk import DAG
    from airflow_provider_cfworkflows.assets import cloudflare_workflow_asset

    reports = cloudflare_workflow_asset("build-report")
    with DAG("publish_report", schedule=[reports]): ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlencode

from airflow.sdk import Asset, AssetWatcher

from airflow_provider_cfworkflows.connection import DEFAULT_CONN_ID
from airflow_provider_cfworkflows.triggers.finished_instances import (
    DEFAULT_FINISHED_STATUSES,
    DEFAULT_WATCH_POLL_INTERVAL,
    CloudflareWorkflowFinishedInstancesTrigger,
)

# The URI scheme of these assets: cfworkflows://<connection id>/<workflow>[?account_id=..&statuses=..].
ASSET_URI_SCHEME = "cfworkflows"


def finished_instances_uri(
    workflow_name: str,
    *,
    statuses: Sequence[str] = DEFAULT_FINISHED_STATUSES,
    cloudflare_conn_id: str = DEFAULT_CONN_ID,
    account_id: str | None = None,
) -> str:
    """
    ``cfworkflows://<connection id>/<workflow>``: the asset of a Workflow's finished instances. The
    account and the statuses are added as query parameters when they are not the defaults.
    """
    query = {}
    if account_id is not None:
        query["account_id"] = account_id
    if sorted(statuses) != sorted(DEFAULT_FINISHED_STATUSES):
        query["statuses"] = ",".join(sorted(statuses))
    suffix = f"?{urlencode(sorted(query.items()))}" if query else ""
    return (
        f"{ASSET_URI_SCHEME}://{quote(cloudflare_conn_id, safe='')}/{quote(workflow_name, safe='')}{suffix}"
    )


def cloudflare_workflow_asset(
    workflow_name: str,
    *,
    statuses: Sequence[str] = DEFAULT_FINISHED_STATUSES,
    cloudflare_conn_id: str = DEFAULT_CONN_ID,
    account_id: str | None = None,
    poll_interval: float = DEFAULT_WATCH_POLL_INTERVAL,
    name: str | None = None,
    **asset_kwargs: Any,
) -> Asset:
    """
    An :class:`~airflow.sdk.Asset` updated each time an instance of ``workflow_name`` reaches one of
    ``statuses``, watched by
    :class:`~.triggers.finished_instances.CloudflareWorkflowFinishedInstancesTrigger`.
    A DAG with ``schedule=[asset]`` runs once per instance; it reads the instance from
    ``triggering_asset_events`` (see :class:`~.triggers.finished_instances.FinishedInstanceEvent`).

    Define the asset once (a module both DAG files import) when several DAGs schedule on it: one
    watcher then serves them all.

    :param workflow_name: the Workflow.
    :param statuses: the final statuses that count: any of ``complete``, ``errored``, ``terminated``.
    :param cloudflare_conn_id: connection of type ``cloudflare_workflows``.
    :param account_id: defaults to the connection's login.
    :param poll_interval: seconds between two looks of the watcher.
    :param name: the asset's name; defaults to its URI (:func:`finished_instances_uri`).
    :param asset_kwargs: more :class:`~airflow.sdk.Asset` arguments (``group``, ``extra``).
    """
    trigger = CloudflareWorkflowFinishedInstancesTrigger(
        workflow_name=workflow_name,
        statuses=statuses,
        cloudflare_conn_id=cloudflare_conn_id,
        account_id=account_id,
        poll_interval=poll_interval,
    )
    uri = finished_instances_uri(
        workflow_name, statuses=statuses, cloudflare_conn_id=cloudflare_conn_id, account_id=account_id
    )
    watcher = AssetWatcher(name=f"{ASSET_URI_SCHEME}-{workflow_name}-finished", trigger=trigger)
    return Asset(uri=uri, name=name or uri, watchers=[watcher], **asset_kwargs)
