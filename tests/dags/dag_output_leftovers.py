"""Step output to file:// where earlier tries of the output task left temporaries behind.

``plant`` stands in for a try that was killed mid-write: it leaves a temporary of the output task of
this very run next to the target, and one of another task, before the output task runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from airflow.sdk import dag, get_current_context, task

from airflow_provider_cfworkflows.operators.workflows import CloudflareWorkflowStepOutputOperator
from airflow_provider_cfworkflows.output_storage import PARTIAL_SUFFIX, owner_tag_for

OUTPUT_TASK_ID = "fetch_output"


@dag(dag_id="output_leftovers", schedule=None, catchup=False)
def output_leftovers() -> None:
    @task
    def plant() -> dict[str, str]:
        context = get_current_context()
        target = Path(context["dag_run"].conf["target"])
        target.parent.mkdir(parents=True, exist_ok=True)
        run_id = context["run_id"]
        own = owner_tag_for(dag_id="output_leftovers", run_id=run_id, task_id=OUTPUT_TASK_ID)
        other = owner_tag_for(dag_id="output_leftovers", run_id=run_id, task_id="another_task")
        paths = {}
        for name, tag in (("own", own), ("other", other)):
            path = target.with_name(f"{target.name}.{tag}.{uuid.uuid4().hex}{PARTIAL_SUFFIX}")
            path.write_bytes(b"half of an earlier try")
            paths[name] = str(path)
        return paths

    fetch = CloudflareWorkflowStepOutputOperator(
        task_id=OUTPUT_TASK_ID,
        workflow_name="{{ dag_run.conf['workflow_name'] }}",
        instance_id="{{ dag_run.conf['instance_id'] }}",
        step_name="{{ dag_run.conf['step_name'] }}",
        output_path="file://{{ dag_run.conf['target'] }}",
    )
    plant() >> fetch


output_leftovers()
