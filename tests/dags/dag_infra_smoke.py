"""A one-task DAG that proves the test harness runs DAGs and reads their XComs."""

from __future__ import annotations

from airflow.sdk import dag, task


@dag(dag_id="infra_smoke", schedule=None, catchup=False)
def infra_smoke() -> None:
    @task
    def echo(**context: object) -> dict[str, object]:
        return {"conf": context["dag_run"].conf}  # type: ignore[attr-defined]

    echo()


infra_smoke()
