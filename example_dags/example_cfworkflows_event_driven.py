"""
Cloudflare drives Airflow: a DAG that runs each time an instance of the demo Workflow completes.

``cloudflare_workflow_asset`` builds an asset whose watcher (``CloudflareWorkflowFinishedInstancesTrigger``,
in the triggerer) reports each instance of ``demo-pipeline`` that reaches ``complete``; the DAG is
scheduled on that asset and reads the instance id and output from the triggering asset events. No DAG
runs and polls while nothing happens.

Start an instance (and approve it) in Cloudflare or in the emulator; the DAG runs once it completes.
The watcher looks every 60 s (``CFWORKFLOWS_EXAMPLE_POLL_INTERVAL`` overrides it, for tests).
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_cfworkflows.assets import cloudflare_workflow_asset
from airflow_provider_cfworkflows.triggers.workflows import FinishedInstanceEvent

# [START howto_asset_cloudflare_workflow]
demo_pipeline_completed = cloudflare_workflow_asset(
    "demo-pipeline",
    statuses=["complete"],
    poll_interval=float(os.environ.get("CFWORKFLOWS_EXAMPLE_POLL_INTERVAL", "60")),
)
# [END howto_asset_cloudflare_workflow]

with DAG(
    dag_id="example_cfworkflows_event_driven",
    schedule=[demo_pipeline_completed],
    catchup=False,
    tags=["example", "cloudflare"],
) as dag:

    @task
    def read_completed_instances(triggering_asset_events: Any = None) -> list[dict[str, Any]]:
        """One summary per instance: several may have completed before the scheduler made this run."""
        summaries = []
        for asset_event in triggering_asset_events[demo_pipeline_completed]:
            finished = FinishedInstanceEvent.from_asset_event(asset_event)
            output = finished.output or {}
            print(f"Instance {finished.instance_id} completed at {finished.ended_on}: {output}")
            summaries.append({"instance_id": finished.instance_id, "rows": output.get("rows")})
        return summaries

    read_completed_instances()
